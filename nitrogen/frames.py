"""The one rule for what a frame may be, shared by the library and the server (torch-free).

A frame is an RGB picture: a numpy ``uint8`` array ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped), or
a PIL image of any mode (converted to RGB). Each side is 1 to ``max_side`` pixels (default
:data:`MAX_SIDE`; the server passes its ``--max-image-side``). The model's own resize to its square
input happens later, in :mod:`nitrogen.preprocess`. Every refusal is a :class:`FrameError` that says
what was received and what is accepted, so a server can hand the message to its client as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

MAX_SIDE = 4096
CHANNELS = (3, 4)  # RGB, or RGBA whose alpha is dropped
ACCEPTED = "a uint8 array of shape (H, W, 3) RGB or (H, W, 4) RGBA, or a PIL image"


class FrameError(ValueError):
    """A frame that cannot be used; the message says what was received and what is accepted."""


def check_size(width: int, height: int, max_side: int = MAX_SIDE) -> None:
    """Refuse empty frames and frames over the side limit (callers check before decoding any pixel)."""
    if width < 1 or height < 1:
        raise FrameError(f"image is {width}x{height} (empty); expected at least 1x1 pixels")
    if width > max_side or height > max_side:
        raise FrameError(f"image is {width}x{height}, too large: the limit is {max_side}x{max_side}")


def to_rgb_array(image: Any, max_side: int = MAX_SIDE) -> np.ndarray:
    """Validate a frame and return it as a C-contiguous uint8 ``(H, W, 3)`` array."""
    if isinstance(image, Image.Image):
        check_size(image.width, image.height, max_side)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    if not isinstance(image, np.ndarray):
        raise FrameError(f"image: got {type(image).__name__}; expected {ACCEPTED}")
    if image.dtype != np.uint8:
        raise FrameError(f"image dtype is {image.dtype}; expected uint8: {ACCEPTED}")
    if image.ndim != 3:
        raise FrameError(f"image has shape {image.shape} (rank {image.ndim}); expected {ACCEPTED}")
    if image.shape[2] not in CHANNELS:
        raise FrameError(f"image has shape {image.shape} ({image.shape[2]} channels); expected {ACCEPTED}")
    check_size(image.shape[1], image.shape[0], max_side)
    return np.ascontiguousarray(image[:, :, :3])
