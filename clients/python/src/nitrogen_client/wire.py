"""What the wire says, in one place: button order, ports, resize modes, reply keys, the pickle allowlist.

Both clients and the player read these; nothing here imports the server or the model (a gaming PC has
neither). A test keeps BUTTON_NAMES equal to the model's own order (``nitrogen.actions``).
"""

from __future__ import annotations

from typing import Literal, get_args

# Index -> name of the 21 button outputs, as the model emits them (server info()["buttons"] agrees).
BUTTON_NAMES: tuple[str, ...] = (
    "BACK", "DPAD_DOWN", "DPAD_LEFT", "DPAD_RIGHT", "DPAD_UP", "EAST", "GUIDE", "LEFT_SHOULDER",
    "LEFT_THUMB", "LEFT_TRIGGER", "NORTH", "RIGHT_BOTTOM", "RIGHT_LEFT", "RIGHT_RIGHT", "RIGHT_SHOULDER",
    "RIGHT_THUMB", "RIGHT_TRIGGER", "RIGHT_UP", "SOUTH", "START", "WEST",
)

ZMQ_PORT = 5555  # ZeroMQ REQ + pickle (the original NitroGen ModelClient's port)
TCP_PORT = 5556  # newline-JSON header + raw bytes
FRAME_SIDE = 256  # the policy's input side; a raw TCP payload without width/height is 256 x 256 x 3

# How the server makes a frame square; "stretch" is what the model saw in training (the original's
# processor resizes straight to 256 x 256), so the TCP client asks for it unless told otherwise.
ResizeMode = Literal["pad", "crop", "stretch"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)
DEFAULT_RESIZE_MODE: ResizeMode = "stretch"

# The predict reply: `pred` holds these arrays, (H, width) each.
PRED_WIDTHS: dict[str, int] = {"j_left": 2, "j_right": 2, "buttons": len(BUTTON_NAMES)}
# Optional key of a predict reply (servers since timings were added): the server's own time split, ms.
SERVER_TIMING = "server_timing"
SERVER_TIMING_KEYS: tuple[str, ...] = ("queue_ms", "infer_ms", "total_ms")
