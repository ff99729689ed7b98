"""From predicted actions to pad states, and the Pad interface with its vgamepad backend.

The conversion is a pure function so that the scaling, the y inversion and the menu guard are tested
on any OS; only ``VGamepadPad`` touches Windows (vgamepad is imported when one is created).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .base import Prediction
from .wire import BUTTON_NAMES

log = logging.getLogger(__name__)

INT16_MIN, INT16_MAX = -32768, 32767
STICK_SCALE = 32767
TRIGGER_MAX = 255
PRESS_THRESHOLD = 0.5

MENU_BUTTONS = frozenset({"START", "BACK", "GUIDE"})
TRIGGERS = ("LEFT_TRIGGER", "RIGHT_TRIGGER")
# Digital buttons a real pad has. RIGHT_BOTTOM/LEFT/RIGHT/UP are model outputs with no pad control
# (the original player drops them too); they are kept in recordings but never pressed.
PAD_BUTTONS = frozenset(
    {
        "DPAD_UP",
        "DPAD_DOWN",
        "DPAD_LEFT",
        "DPAD_RIGHT",
        "SOUTH",
        "EAST",
        "WEST",
        "NORTH",
        "LEFT_SHOULDER",
        "RIGHT_SHOULDER",
        "LEFT_THUMB",
        "RIGHT_THUMB",
        "START",
        "BACK",
        "GUIDE",
    }
)

Controller = Literal["xbox", "ps4"]


@dataclass(frozen=True)
class PadState:
    """One frame of pad input in XInput units: sticks int16 with y up-positive, triggers 0..255."""

    left_x: int = 0
    left_y: int = 0
    right_x: int = 0
    right_y: int = 0
    left_trigger: int = 0
    right_trigger: int = 0
    buttons: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form for recordings (buttons sorted, so lines diff cleanly)."""
        return {
            "left": [self.left_x, self.left_y],
            "right": [self.right_x, self.right_y],
            "left_trigger": self.left_trigger,
            "right_trigger": self.right_trigger,
            "buttons": sorted(self.buttons),
        }


NEUTRAL = PadState()


def _clamp16(value: int) -> int:
    return max(INT16_MIN, min(INT16_MAX, value))


def stick_axis(value: float) -> int:
    """Model stick value in [-1, 1] -> int16, truncating like the original player (x * 32767)."""
    return _clamp16(int(float(value) * STICK_SCALE))


def stick_axis_y(value: float) -> int:
    """Model y is screen-down positive; a Windows (XInput) pad is up-positive: v -> -v - 1 in int16."""
    return _clamp16(-stick_axis(value) - 1)


OPPOSITES = (("DPAD_UP", "DPAD_DOWN"), ("DPAD_LEFT", "DPAD_RIGHT"))


def action_state(j_left: Any, j_right: Any, buttons: Any, allow_menu: bool = False) -> PadState:
    """Pad state for one action step (one row of each prediction array).

    Opposite d-pad directions pressed together cancel out (neither is held): the model often presses
    Up+Down, games disagree on what that means, and the Lua scripts use the same rule.
    """
    pressed = {name for name, v in zip(BUTTON_NAMES, np.asarray(buttons).tolist()) if v > PRESS_THRESHOLD}
    for a, b in OPPOSITES:
        if a in pressed and b in pressed:
            pressed -= {a, b}
    held = frozenset(b for b in pressed if b in PAD_BUTTONS and (allow_menu or b not in MENU_BUTTONS))
    return PadState(
        left_x=stick_axis(j_left[0]),
        left_y=stick_axis_y(j_left[1]),
        right_x=stick_axis(j_right[0]),
        right_y=stick_axis_y(j_right[1]),
        left_trigger=TRIGGER_MAX if "LEFT_TRIGGER" in pressed else 0,
        right_trigger=TRIGGER_MAX if "RIGHT_TRIGGER" in pressed else 0,
        buttons=held,
    )


def pad_states(pred: Prediction, allow_menu: bool = False) -> list[PadState]:
    """One PadState per predicted step; START/BACK/GUIDE dropped unless allow_menu."""
    return [
        action_state(jl, jr, b, allow_menu)
        for jl, jr, b in zip(pred["j_left"], pred["j_right"], pred["buttons"])
    ]


class Pad(ABC):
    """A virtual controller the player drives; backends: vgamepad on Windows, anything in tests."""

    @abstractmethod
    def apply(self, state: PadState) -> None:
        """Set the whole pad to ``state`` (not a delta) and send it."""

    @abstractmethod
    def reset(self) -> None:
        """Release every button, trigger and stick, and send that."""

    def close(self) -> None:
        """Release everything and free the device."""
        self.reset()


_XBOX_BUTTONS = {
    "DPAD_UP": "XUSB_GAMEPAD_DPAD_UP",
    "DPAD_DOWN": "XUSB_GAMEPAD_DPAD_DOWN",
    "DPAD_LEFT": "XUSB_GAMEPAD_DPAD_LEFT",
    "DPAD_RIGHT": "XUSB_GAMEPAD_DPAD_RIGHT",
    "START": "XUSB_GAMEPAD_START",
    "BACK": "XUSB_GAMEPAD_BACK",
    "GUIDE": "XUSB_GAMEPAD_GUIDE",
    "LEFT_THUMB": "XUSB_GAMEPAD_LEFT_THUMB",
    "RIGHT_THUMB": "XUSB_GAMEPAD_RIGHT_THUMB",
    "LEFT_SHOULDER": "XUSB_GAMEPAD_LEFT_SHOULDER",
    "RIGHT_SHOULDER": "XUSB_GAMEPAD_RIGHT_SHOULDER",
    "SOUTH": "XUSB_GAMEPAD_A",
    "EAST": "XUSB_GAMEPAD_B",
    "WEST": "XUSB_GAMEPAD_X",
    "NORTH": "XUSB_GAMEPAD_Y",
}
_DS4_BUTTONS = {
    "START": "DS4_BUTTON_OPTIONS",
    "BACK": "DS4_BUTTON_SHARE",
    "LEFT_THUMB": "DS4_BUTTON_THUMB_LEFT",
    "RIGHT_THUMB": "DS4_BUTTON_THUMB_RIGHT",
    "LEFT_SHOULDER": "DS4_BUTTON_SHOULDER_LEFT",
    "RIGHT_SHOULDER": "DS4_BUTTON_SHOULDER_RIGHT",
    "SOUTH": "DS4_BUTTON_CROSS",
    "EAST": "DS4_BUTTON_CIRCLE",
    "WEST": "DS4_BUTTON_SQUARE",
    "NORTH": "DS4_BUTTON_TRIANGLE",
}
# The DS4 d-pad is a hat: (up, down, left, right) -> direction name.
_DS4_HAT = {
    (1, 0, 0, 0): "NORTH",
    (1, 0, 0, 1): "NORTHEAST",
    (0, 0, 0, 1): "EAST",
    (0, 1, 0, 1): "SOUTHEAST",
    (0, 1, 0, 0): "SOUTH",
    (0, 1, 1, 0): "SOUTHWEST",
    (0, 0, 1, 0): "WEST",
    (1, 0, 1, 0): "NORTHWEST",
}


def ds4_axis(value: int, flip: bool = False) -> int:
    """XInput int16 -> DS4 byte (128 centre). DS4's y is down-positive, so y undoes the XInput flip."""
    unit = (-(value + 1) if flip else value) / STICK_SCALE
    return max(0, min(255, 128 + round(max(-1.0, min(1.0, unit)) * 127)))


def ds4_hat(buttons: frozenset[str]) -> str:
    """D-pad buttons -> DS4 hat direction (opposites never arrive together: see action_state)."""
    up, down = "DPAD_UP" in buttons, "DPAD_DOWN" in buttons
    left, right = "DPAD_LEFT" in buttons, "DPAD_RIGHT" in buttons
    return _DS4_HAT.get((int(up), int(down), int(left), int(right)), "NONE")


class VGamepadPad(Pad):
    """ViGEm virtual Xbox 360 or DualShock 4 pad (Windows; needs the ViGEmBus driver)."""

    def __init__(self, controller: Controller = "xbox") -> None:
        if controller not in ("xbox", "ps4"):
            raise ValueError(f"controller must be 'xbox' or 'ps4', got {controller!r}")
        try:
            import vgamepad as vg  # Windows-only: imported here so the package loads anywhere
        except Exception as exc:  # ImportError, or the driver missing at import time
            raise RuntimeError(
                f"the {controller} pad needs vgamepad and the ViGEmBus driver (Windows): {exc}"
            ) from exc
        self._vg = vg
        self.controller = controller
        self._pad = vg.VX360Gamepad() if controller == "xbox" else vg.VDS4Gamepad()
        self._closed = False
        log.info("virtual %s pad connected", controller)

    def apply(self, state: PadState) -> None:
        vg, pad = self._vg, self._pad
        pad.reset()
        if self.controller == "xbox":
            for name in state.buttons:
                pad.press_button(button=getattr(vg.XUSB_BUTTON, _XBOX_BUTTONS[name]))
            pad.left_joystick(x_value=state.left_x, y_value=state.left_y)
            pad.right_joystick(x_value=state.right_x, y_value=state.right_y)
        else:
            for name in state.buttons:
                if name in _DS4_BUTTONS:
                    pad.press_button(button=getattr(vg.DS4_BUTTONS, _DS4_BUTTONS[name]))
            if "GUIDE" in state.buttons:
                pad.press_special_button(special_button=vg.DS4_SPECIAL_BUTTONS.DS4_SPECIAL_BUTTON_PS)
            pad.directional_pad(
                direction=getattr(vg.DS4_DPAD_DIRECTIONS, f"DS4_BUTTON_DPAD_{ds4_hat(state.buttons)}")
            )
            pad.left_joystick(x_value=ds4_axis(state.left_x), y_value=ds4_axis(state.left_y, flip=True))
            pad.right_joystick(x_value=ds4_axis(state.right_x), y_value=ds4_axis(state.right_y, flip=True))
        pad.left_trigger(value=state.left_trigger)
        pad.right_trigger(value=state.right_trigger)
        pad.update()

    def reset(self) -> None:
        if not self._closed:
            self._pad.reset()
            self._pad.update()

    def close(self) -> None:
        """Release everything, then unplug the pad. vgamepad (0.2.0 included) has no close(): a pad
        is unplugged by its ``__del__`` (vigem_target_remove), so the last reference is dropped here."""
        if self._closed:
            return
        try:
            self.reset()
        finally:
            self._closed = True
            pad, self._pad = self._pad, None
            closer = getattr(pad, "close", None)  # in case a later vgamepad adds one
            if callable(closer):
                closer()
            del pad  # CPython runs __del__ now: the game sees the pad unplugged
            log.info("virtual %s pad unplugged", self.controller)


class NullPad(Pad):
    """``--pad none``: presses nothing, anywhere; the player still paces, records and reports.

    ``state`` is the last state the player applied, so what it would have sent stays inspectable.
    """

    def __init__(self) -> None:
        self.state = NEUTRAL

    def apply(self, state: PadState) -> None:
        self.state = state

    def reset(self) -> None:
        self.state = NEUTRAL
