"""Atari 2600 through ale-py (``ALE/<Game>-v5``), always with the full 18-action space.

The pad becomes a joystick direction and one fire button; the action played is the one of the 18 that
has that direction and fire, named as ALE names them (``UPRIGHTFIRE``: vertical, horizontal, FIRE).
"""

from __future__ import annotations

from typing import Any

from .backend import Backend, EnvAction, gym_spec, require
from .padmap import PadMap

ATARI_MAP = PadMap(
    buttons={
        "UP": ("DPAD_UP", "LS_UP"),
        "DOWN": ("DPAD_DOWN", "LS_DOWN"),
        "LEFT": ("DPAD_LEFT", "LS_LEFT"),
        "RIGHT": ("DPAD_RIGHT", "LS_RIGHT"),
        "FIRE": ("SOUTH", "EAST", "WEST", "NORTH"),
    },
    opposites=(("UP", "DOWN"), ("LEFT", "RIGHT")),
)
ATARI_FRAME_RATE = 60.0


def action_name(pressed: frozenset[str]) -> str:
    """ALE's name for a direction + fire: NOOP, FIRE, UP, UPRIGHT, DOWNLEFTFIRE, ..."""
    name = "".join(part for part in ("UP", "DOWN", "RIGHT", "LEFT", "FIRE") if part in pressed)
    return name or "NOOP"


class AtariBackend(Backend):
    name = "ALE"
    ids = "'ALE/<Game>-v5' (ale-py; played with full_action_space=True)"

    def __init__(self, env_id: str, *, allow_menu: bool = False) -> None:
        super().__init__(env_id, allow_menu=allow_menu)
        self.meanings: list[str] = []

    @classmethod
    def claims(cls, env_id: str) -> bool:
        return env_id.startswith("ALE/")

    def check(self) -> None:
        require("gymnasium", "gymnasium").register_envs(require("ale_py", "ale-py"))
        gym_spec(self.env_id)

    def make(self) -> Any:
        gym = require("gymnasium", "gymnasium")
        gym.register_envs(require("ale_py", "ale-py"))
        env = gym.make(self.env_id, full_action_space=True)
        self.meanings = list(env.unwrapped.get_action_meanings())
        skip = env.spec.kwargs.get("frameskip", 4) if env.spec is not None else 4
        self.fps = ATARI_FRAME_RATE / skip if isinstance(skip, int) and skip > 0 else ATARI_FRAME_RATE / 4
        return env

    @property
    def pad_map(self) -> PadMap:
        return ATARI_MAP

    def labels(self) -> list[str]:
        return list(self.meanings)

    def env_action(self, pressed: frozenset[str], j_left: Any, j_right: Any) -> EnvAction:
        name = action_name(pressed)
        index = self.meanings.index(name)
        return EnvAction(value=index, logged=index, text=name)
