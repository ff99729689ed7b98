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


def _area_axis(arr: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Mean of each of ``size`` equal spans along ``axis``, pixels cut by a span edge counted pro rata.

    A span [b, b + s) sums whole pixels floor(b)..floor(b + s) - 1 (one reduceat), minus the part of the
    first pixel before b, plus the part of the last pixel before b + s: exact area weights.
    """
    n = arr.shape[axis]
    scale = n / size
    edges = np.arange(size + 1) * scale
    start = np.minimum(np.floor(edges).astype(np.intp), n)
    frac = (edges - start).astype(np.float32)
    frac_end = np.where(start[1:] < n, frac[1:], 0).astype(np.float32)
    # uint8 sums of up to 257 pixels fit uint16, which numpy adds about twice as fast as int32
    acc = (np.uint16 if scale < 256 else np.uint32) if arr.dtype == np.uint8 else np.float32
    sums = np.add.reduceat(arr, start[:-1], axis=axis, dtype=acc)
    shape = [1] * arr.ndim
    shape[axis] = -1
    head = np.take(arr, start[:-1], axis) * frac[:-1].reshape(shape)
    tail = np.take(arr, np.minimum(start[1:], n - 1), axis) * frac_end.reshape(shape)
    return (sums - head + tail) * np.float32(1 / scale)


def resize_area(image: Any, size: int = FRAME_SIDE) -> np.ndarray:
    """Shrink to size x size the way the original player did (OpenCV's INTER_AREA: each output pixel
    is the area-weighted mean of the source pixels it covers), in numpy, so the client needs no OpenCV.

    Pillow's BOX filter is faster but weighs whole pixels, not areas: on pixel-art frames it ends 2
    grey levels (mean) away from INTER_AREA, this stays within 1 level of it (tests/clients/
    test_client_resize.py). A frame smaller than ``size`` on a side (rare for a game window) is
    resized bilinearly instead; one already at size x size is returned unchanged.
    """
    arr = to_rgb_array(image)
    h, w = arr.shape[:2]
    if h == size and w == size:
        return arr
    if h < size or w < size:
        return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR))
    out = _area_axis(_area_axis(arr, size, 1), size, 0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def encode_png(image: Any, compress_level: int = 1) -> bytes:
    """PNG bytes of an RGB frame; low compression because latency matters more than bytes on a LAN."""
    buf = io.BytesIO()
    Image.fromarray(to_rgb_array(image)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
