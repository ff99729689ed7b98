"""Consoles through stable-retro (``<Game>-<System>-v0``), with the Lua clients' console maps.

stable-retro names each system's buttons in upper case (``B A MODE START UP ...``; ``None`` for unused
slots); the Lua map's short names (``Mode``, ``Start``, ``Up``) match them case-insensitively. A game
only plays once its ROM is imported (``python -m stable_retro.import DIR``); stable-retro ships one,
``Airstriker-Genesis-v0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import Backend, EnvAction, EnvIdError, require
from .padmap import PadMap, console_map

# stable-retro system -> the Lua core's console id (its SYSTEM_ALIASES resolve 32X and GBC).
RETRO_CONSOLES: dict[str, str] = {
    "Genesis": "GEN", "32x": "32X", "Nes": "NES", "Snes": "SNES", "GameBoy": "GB", "GbColor": "GBC",
    "GbAdvance": "GBA",
}


def retro_system(game: str) -> str:
    """``Airstriker-Genesis-v0`` -> ``Genesis`` (stable-retro's naming: Name-System-vN)."""
    parts = game.split("-")
    return parts[-2] if len(parts) >= 3 else ""


class RetroBackend(Backend):
    name = "stable-retro"
    ids = (f"a stable-retro game of {', '.join(RETRO_CONSOLES)} with its ROM imported, "
           "e.g. 'Airstriker-Genesis-v0'")

    def __init__(self, env_id: str, *, allow_menu: bool = False) -> None:
        super().__init__(env_id, allow_menu=allow_menu)
        self.console = RETRO_CONSOLES[retro_system(env_id)]
        self._map = console_map(self.console)
        self.env_buttons: list[str | None] = []

    @classmethod
    def claims(cls, env_id: str) -> bool:
        system = retro_system(env_id)
        if "/" in env_id or not env_id.endswith("-v0") or not system:
            return False
        retro = require("stable_retro", "stable-retro")
        if env_id not in retro.data.list_games(retro.data.Integrations.ALL):
            return False
        if system not in RETRO_CONSOLES:
            raise EnvIdError(f"env id {env_id!r}: stable-retro system {system!r} has no console map; "
                             f"supported systems: {', '.join(RETRO_CONSOLES)}")
        return True

    def check(self) -> None:
        retro = require("stable_retro", "stable-retro")
        try:
            retro.data.get_romfile_path(self.env_id, retro.data.Integrations.ALL)
        except FileNotFoundError as exc:
            raise EnvIdError(f"env id {self.env_id!r}: stable-retro has no ROM for it ({exc}); import "
                             "yours with: python -m stable_retro.import DIR") from exc

    def make(self) -> Any:
        retro = require("stable_retro", "stable-retro")
        env = retro.make(self.env_id, inttype=retro.data.Integrations.ALL, render_mode="rgb_array")
        self.env_buttons = list(env.unwrapped.buttons)
        rate = env.metadata.get("video.frames_per_second") or env.metadata.get("render_fps")
        self.fps = float(rate) if rate else 60.0
        return env

    @property
    def pad_map(self) -> PadMap:
        return self._map

    def labels(self) -> list[str]:
        return [b or "" for b in self.env_buttons]

    def env_action(self, pressed: frozenset[str], j_left: Any, j_right: Any) -> EnvAction:
        upper = {name.upper() for name in pressed}
        bits = [int(b is not None and b.upper() in upper) for b in self.env_buttons]
        text = "+".join(b for b, on in zip(self.env_buttons, bits) if on and b) or "-"
        return EnvAction(value=np.asarray(bits, dtype=np.int8), logged=bits, text=text)
