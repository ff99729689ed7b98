"""Pad presses before the first frame (``--start-presses``, ``--no-wake-up``).

Some games take a new virtual pad only after a button press on it: the original player pressed SOUTH,
then EAST five times, for The Binding of Isaac (``isaac-ng.exe``) and Cuphead (``Cuphead.exe``).
It also pressed L3 once before playing (its "wake-up") and gave the game a second to notice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from .gamepad import PAD_BUTTONS, Pad, PadState

log = logging.getLogger(__name__)

PRESETS: dict[str, tuple[str, ...]] = {
    "isaac-ng.exe": ("SOUTH",) + ("EAST",) * 5,
    "cuphead.exe": ("SOUTH",) + ("EAST",) * 5,
}
PRESS_S = 0.05  # how long each press is held (the original's 50 ms)
GAP_S = 0.3  # pause after each press (the original's, after each EAST)
WAKE_UP_BUTTON = "LEFT_THUMB"  # L3
WAKE_UP_S = 0.1
WAKE_UP_SETTLE_S = 1.0


def parse_presses(text: str) -> tuple[str, ...]:
    """``"SOUTH,EAST*5"`` -> ("SOUTH", "EAST", "EAST", "EAST", "EAST", "EAST"); names as in BUTTON_NAMES."""
    presses: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, count = item.partition("*")
        name = name.strip().upper()
        if name not in PAD_BUTTONS:
            raise ValueError(
                f"--start-presses: {name!r} is not a pad button; expected names from {sorted(PAD_BUTTONS)}"
            )
        if count and not (count.strip().isdigit() and int(count) >= 1):
            raise ValueError(f"--start-presses: {item!r}: the count after '*' must be a whole number >= 1")
        presses += [name] * (int(count) if count else 1)
    return tuple(presses)


def presses_for(process: str | None, setting: str) -> tuple[str, ...]:
    """``--start-presses``: ``auto`` (the preset for the game, if there is one), ``none``, or a list."""
    key = setting.strip().lower()
    if key == "none":
        return ()
    if key == "auto":
        return PRESETS.get((process or "").lower(), ())
    return parse_presses(setting)


def press_all(pad: Pad, presses: Sequence[str], sleep: Callable[[float], None]) -> None:
    """Press and release each button in turn."""
    for name in presses:
        pad.apply(PadState(buttons=frozenset({name})))
        sleep(PRESS_S)
        pad.reset()
        sleep(GAP_S)


def wake_up(pad: Pad, sleep: Callable[[float], None]) -> None:
    """The original's reset: L3 for 0.1 s, release, then a second for the game to notice the pad."""
    pad.apply(PadState(buttons=frozenset({WAKE_UP_BUTTON})))
    sleep(WAKE_UP_S)
    pad.reset()
    sleep(WAKE_UP_S + WAKE_UP_SETTLE_S)
