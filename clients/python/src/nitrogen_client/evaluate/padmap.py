"""From one predicted action to the buttons a game gets: the pad inputs the model pressed, then a map.

The rules are the Lua clients' (``core.action_to_pad`` in clients/lua/nitrogen_core.lua), so a console
plays the same in BizHawk, mGBA and stable-retro: a button counts above 0.5; a stick past the dead-zone
is an input of its own (``LS_UP``, ``RS_LEFT``, ...), which the maps add to the d-pad; START/BACK/GUIDE
count only with ``allow_menu``; a game button is pressed when any of its inputs is; a pair of opposite
game buttons pressed together cancels out. Opposites are resolved on the game's buttons, after the
stick is merged (so d-pad Up + stick Down presses neither), which is why this does not start from
``gamepad.action_state``: that one cancels d-pad pairs before any stick is considered.

The console maps are the Lua table itself, exported to ``console_maps.json`` (a test keeps the two
equal); the Atari and Doom maps live beside their backends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from ..gamepad import MENU_BUTTONS, PRESS_THRESHOLD
from ..wire import BUTTON_NAMES

STICK_INPUTS: tuple[str, ...] = tuple(f"{s}_{d}" for s in ("LS", "RS") for d in ("UP", "DOWN", "LEFT", "RIGHT"))
PAD_INPUTS: tuple[str, ...] = BUTTON_NAMES + STICK_INPUTS


@lru_cache(maxsize=1)
def console_data() -> dict[str, Any]:
    """The Lua core's maps, aliases and stick dead-zone, as exported to console_maps.json."""
    text = resources.files(__package__).joinpath("console_maps.json").read_text(encoding="utf-8")
    return json.loads(text)


STICK_DEADZONE: float = float(console_data()["stick_deadzone"])


@dataclass(frozen=True)
class PadMap:
    """Game button -> the pad inputs (any of them presses it); pairs of game buttons that cancel."""

    buttons: Mapping[str, tuple[str, ...]]
    opposites: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted({i for inputs in self.buttons.values() for i in inputs} - set(PAD_INPUTS))
        if unknown:
            raise ValueError(f"pad map names unknown pad inputs {unknown}; known: {', '.join(PAD_INPUTS)}")

    def press(self, inputs: frozenset[str]) -> frozenset[str]:
        """The game buttons ``inputs`` press, opposite pairs pressed together cancelled."""
        on = {name for name, wanted in self.buttons.items() if not inputs.isdisjoint(wanted)}
        for a, b in self.opposites:
            if a in on and b in on:
                on -= {a, b}
        return frozenset(on)


def pad_inputs(
    j_left: Any, j_right: Any, buttons: Any, *, allow_menu: bool = False, deadzone: float = STICK_DEADZONE
) -> frozenset[str]:
    """The pad inputs one action holds: model buttons above 0.5 and sticks past ``deadzone``.

    Model stick y points down (screen coordinates), so ``LS_UP`` is y < -deadzone.
    """
    values = np.asarray(buttons, dtype=np.float64).reshape(-1).tolist()
    if len(values) != len(BUTTON_NAMES):
        raise ValueError(f"an action has {len(BUTTON_NAMES)} button values, got {len(values)}")
    on = {name for name, v in zip(BUTTON_NAMES, values) if v > PRESS_THRESHOLD}
    if not allow_menu:
        on -= MENU_BUTTONS
    for prefix, stick in (("LS", j_left), ("RS", j_right)):
        x, y = (float(v) for v in np.asarray(stick, dtype=np.float64).reshape(-1)[:2])
        on.update(name for name, past in ((f"{prefix}_LEFT", x < -deadzone), (f"{prefix}_RIGHT", x > deadzone),
                                          (f"{prefix}_UP", y < -deadzone), (f"{prefix}_DOWN", y > deadzone))
                  if past)
    return frozenset(on)


def console_map(console: str) -> PadMap:
    """The Lua core's map for a console id ("GEN", "NES", "SNES", "GB", "GBA", ... or an alias)."""
    data = console_data()
    name = console if console in data["maps"] else data["aliases"].get(console)
    if name is None:
        known = " ".join(sorted([*data["maps"], *data["aliases"]]))
        raise KeyError(f"console {console!r} has no button map; supported: {known}")
    spec = data["maps"][name]
    return PadMap(
        buttons={short: tuple(inputs) for short, inputs in spec["buttons"].items()},
        opposites=tuple((a, b) for a, b in spec.get("opposites", [])),
    )
