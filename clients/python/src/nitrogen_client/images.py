"""Frame conversions used by the TCP client, the player and the recorder (one place, Pillow only)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from .wire import FRAME_SIDE


def to_rgb_array(image: Any) -> np.ndarray:
    """Return an H x W x 3 uint8 RGB array; accepts such an array or any PIL image."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"image must be an H x W x 3 uint8 RGB array or a PIL image, got {arr.dtype} {arr.shape}"
        )
    return arr


def resize_square(image: Any, size: int = FRAME_SIDE) -> np.ndarray:
    """Resize to size x size with bicubic filtering (what the model's preprocessing does anyway).

    A frame already at that size is returned unchanged, so no resampling touches it twice.
    """
    arr = to_rgb_array(image)
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BICUBIC))


def encode_png(image: Any, compress_level: int = 1) -> bytes:
    """PNG bytes of an RGB frame; low compression because latency matters more than bytes on a LAN."""
    buf = io.BytesIO()
    Image.fromarray(to_rgb_array(image)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
