"""ViZDoom scenarios through its Gymnasium wrapper: the variants whose buttons are independent
(``Vizdoom<Scenario>-MultiBinary-v1`` and the ``VizdoomDoom...``/``VizdoomFreedoom...`` maps).

A twin-stick shooter layout: left stick (and d-pad) moves and strafes, right stick turns and looks, RT or
SOUTH attacks, EAST uses. Only the buttons the scenario declares are sent; a declared button this table
does not list (SELECT_WEAPON3, ZOOM, ...) is never pressed. Scenarios with delta buttons (Deathmatch)
get them from the sticks, scaled as in DOOM_DELTAS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend, EnvAction, EnvIdError, gym_spec, require
from .padmap import PadMap

DOOM_MAP = PadMap(
    buttons={
        "MOVE_FORWARD": ("LS_UP", "DPAD_UP"),
        "MOVE_BACKWARD": ("LS_DOWN", "DPAD_DOWN"),
        "MOVE_LEFT": ("LS_LEFT", "DPAD_LEFT"),
        "MOVE_RIGHT": ("LS_RIGHT", "DPAD_RIGHT"),
        "TURN_LEFT": ("RS_LEFT",),
        "TURN_RIGHT": ("RS_RIGHT",),
        "LOOK_UP": ("RS_UP",),
        "LOOK_DOWN": ("RS_DOWN",),
        "ATTACK": ("RIGHT_TRIGGER", "SOUTH"),
        "ALTATTACK": ("LEFT_TRIGGER",),
        "USE": ("EAST",),
        "JUMP": ("NORTH",),
        "RELOAD": ("WEST",),
        "SPEED": ("LEFT_THUMB",),
        "CROUCH": ("RIGHT_THUMB",),
        "SELECT_NEXT_WEAPON": ("RIGHT_SHOULDER",),
        "SELECT_PREV_WEAPON": ("LEFT_SHOULDER",),
    },
    opposites=(("MOVE_FORWARD", "MOVE_BACKWARD"), ("MOVE_LEFT", "MOVE_RIGHT"), ("TURN_LEFT", "TURN_RIGHT"),
               ("LOOK_UP", "LOOK_DOWN")),
)
# Delta button -> (stick, axis, scale): the value sent is stick[axis] * scale (model y points down).
DOOM_DELTAS: dict[str, tuple[str, int, float]] = {
    "TURN_LEFT_RIGHT_DELTA": ("j_right", 0, 10.0),
    "LOOK_UP_DOWN_DELTA": ("j_right", 1, 5.0),
    "MOVE_LEFT_RIGHT_DELTA": ("j_left", 0, 25.0),
    "MOVE_FORWARD_BACKWARD_DELTA": ("j_left", 1, -25.0),
}


class DoomBackend(Backend):
    name = "ViZDoom"
    ids = "'Vizdoom<Scenario>-MultiBinary-v1' and the 'VizdoomDoom...'/'VizdoomFreedoom...' maps (vizdoom)"

    def __init__(self, env_id: str, *, allow_menu: bool = False) -> None:
        super().__init__(env_id, allow_menu=allow_menu)
        self.binary: list[str] = []
        self.deltas: list[str] = []

    @classmethod
    def claims(cls, env_id: str) -> bool:
        return env_id.startswith("Vizdoom")

    def check(self) -> None:
        require("vizdoom.gymnasium_wrapper", "vizdoom")
        spec = gym_spec(self.env_id)
        if spec.kwargs.get("max_buttons_pressed", 1) != 0:
            raise EnvIdError(f"env id {self.env_id!r} takes one action index, not buttons; use its "
                             f"MultiBinary variant, e.g. {self.env_id.rsplit('-v', 1)[0]}-MultiBinary-v1")

    def make(self) -> Any:
        gym = require("gymnasium", "gymnasium")
        require("vizdoom.gymnasium_wrapper", "vizdoom")
        env = gym.make(self.env_id)
        game, inner = env.unwrapped.game, env.unwrapped
        names = [b.name for b in game.get_available_buttons()]  # the wrapper puts delta buttons first
        self.deltas, self.binary = names[: inner.num_delta_buttons], names[inner.num_delta_buttons:]
        self.fps = float(env.metadata.get("render_fps", 35))
        return env

    @property
    def pad_map(self) -> PadMap:
        return DOOM_MAP

    def labels(self) -> list[str]:
        return self.deltas + self.binary

    def frame(self, obs: Any) -> np.ndarray:
        return np.asarray(obs["screen"])

    def env_action(self, pressed: frozenset[str], j_left: Any, j_right: Any) -> EnvAction:
        bits = [int(name in pressed) for name in self.binary]
        sticks = {"j_left": np.asarray(j_left, np.float64), "j_right": np.asarray(j_right, np.float64)}
        deltas = [float(sticks[DOOM_DELTAS[n][0]][DOOM_DELTAS[n][1]]) * DOOM_DELTAS[n][2]
                  if n in DOOM_DELTAS else 0.0 for n in self.deltas]
        text = "+".join(n for n, on in zip(self.binary, bits) if on) or "-"
        if not self.deltas:
            return EnvAction(value=np.asarray(bits, dtype=np.int8), logged=bits, text=text)
        if not self.binary:
            return EnvAction(value=np.asarray(deltas, np.float32), logged=deltas, text=text)
        value = {"binary": np.asarray(bits, dtype=np.int8), "continuous": np.asarray(deltas, np.float32)}
        return EnvAction(value=value, logged={"binary": bits, "continuous": deltas}, text=text)
