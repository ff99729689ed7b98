"""The model's 25-dim action vector -> gamepad state (CHECKPOINT.md step 9)."""

from __future__ import annotations

import numpy as np

BUTTON_NAMES: tuple[str, ...] = (
    "BACK", "DPAD_DOWN", "DPAD_LEFT", "DPAD_RIGHT", "DPAD_UP", "EAST", "GUIDE", "LEFT_SHOULDER",
    "LEFT_THUMB", "LEFT_TRIGGER", "NORTH", "RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT", "RIGHT_SHOULDER",
    "RIGHT_THUMB", "RIGHT_TRIGGER", "RIGHT_UP", "SOUTH", "START", "WEST",
)
NUM_BUTTONS = len(BUTTON_NAMES)


def decode_actions(x: np.ndarray, old_layout: bool = False) -> dict[str, np.ndarray]:
    """Split x(1) (horizon, 25) into sticks in [-1, 1] and 0/1 buttons, float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] < NUM_BUTTONS + 4:
        raise ValueError(f"action tensor has shape {x.shape}; expected (horizon, >= {NUM_BUTTONS + 4})")
    if old_layout:
        sticks, buttons = x[:, 0:4], x[:, 4:4 + NUM_BUTTONS]
    else:
        buttons, sticks = x[:, :NUM_BUTTONS], x[:, NUM_BUTTONS:NUM_BUTTONS + 4]
    sticks = np.clip(sticks * 2 - 1, -1, 1).astype(np.float32)
    return {
        "j_left": np.ascontiguousarray(sticks[:, 0:2]),
        "j_right": np.ascontiguousarray(sticks[:, 2:4]),
        "buttons": (buttons > 0.5).astype(np.float32),
    }
