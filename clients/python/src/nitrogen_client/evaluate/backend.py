"""What every game backend provides to the runner, and which backend an env id belongs to.

A backend makes the Gymnasium env, hands back the RGB frame of an observation, and turns one predicted
action into the env's action through its pad map. The heavy packages (ale-py, stable-retro, vizdoom)
are imported only when their env is made, so one missing backend never blocks the others.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .padmap import PadMap, pad_inputs


class EnvIdError(ValueError):
    """An env id no backend can play, or one whose backend is not installed; the message says why."""


def gym_spec(env_id: str) -> Any:
    """The registered spec of a Gymnasium id, or EnvIdError with Gymnasium's own suggestion."""
    gym = require("gymnasium", "gymnasium")
    try:
        return gym.spec(env_id)
    except gym.error.Error as exc:
        raise EnvIdError(f"env id {env_id!r}: {exc}") from exc


@dataclass(frozen=True)
class EnvAction:
    """One action as the env takes it (``value``), as the log records it (``logged``), and in words."""

    value: Any
    logged: Any
    text: str


def require(module: str, package: str) -> Any:
    """Import a backend's package or say which pip package provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EnvIdError(
            f"{module} is not installed: pip install {package} (or the eval extra: "
            f"pip install 'nitrogen-client[eval]'): {exc}"
        ) from exc


class Backend(ABC):
    """One env id's game: how to make it, read its frames and drive it."""

    name: ClassVar[str]
    ids: ClassVar[str]  # which env ids it plays, for the error listing the backends

    def __init__(self, env_id: str, *, allow_menu: bool = False) -> None:
        self.env_id = env_id
        self.allow_menu = allow_menu
        self.fps: float = 60.0  # env steps per second of game time (the video's frame rate)

    @classmethod
    @abstractmethod
    def claims(cls, env_id: str) -> bool:
        """Whether ``env_id`` is this backend's (raise EnvIdError for one it knows but cannot play)."""

    @abstractmethod
    def check(self) -> None:
        """Raise EnvIdError if the env cannot be made here (unknown game, no ROM, package missing)."""

    @abstractmethod
    def make(self) -> Any:
        """A fresh Gymnasium env (one per worker process; stable-retro allows one emulator per process)."""

    @property
    @abstractmethod
    def pad_map(self) -> PadMap:
        """The map from pad inputs to this game's buttons (known once the env is made)."""

    @abstractmethod
    def env_action(self, pressed: frozenset[str], j_left: Any, j_right: Any) -> EnvAction:
        """The env action for the game buttons ``pressed`` (and the sticks, for analog controls)."""

    def labels(self) -> list[str]:
        """The names of the env's action values, for results.json."""
        return list(self.pad_map.buttons)

    def frame(self, obs: Any) -> np.ndarray:
        """The RGB frame (H, W, 3) uint8 of an observation."""
        return np.asarray(obs)

    def act(self, j_left: Any, j_right: Any, buttons: Any) -> EnvAction:
        """One predicted action (sticks + 21 buttons) -> the env action, by the documented rules."""
        inputs = pad_inputs(j_left, j_right, buttons, allow_menu=self.allow_menu)
        return self.env_action(self.pad_map.press(inputs), j_left, j_right)
