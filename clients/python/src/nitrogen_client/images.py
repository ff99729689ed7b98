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


def _area_rows(arr: np.ndarray, size: int) -> np.ndarray:
    """Mean of each of ``size`` equal spans of the rows of a 2-D array, rows cut by a span edge counted
    pro rata: span [b, e) sums whole rows floor(b)..floor(e) - 1, minus the part of row floor(b) before
    b, plus the part of row floor(e) before e. Row slabs summed one by one: numpy's reduceat is slower."""
    n = arr.shape[0]
    edges = np.arange(size + 1) * n / size
    start = np.minimum(np.floor(edges).astype(np.intp), n)
    frac = (edges - start).astype(np.float32)[:, None]
    acc = np.uint16 if arr.dtype == np.uint8 and n < 256 * size else np.float32  # 257 x 255 fits uint16
    out = np.empty((size, arr.shape[1]), np.float32)
    for j in range(size):
        out[j] = arr[start[j] : start[j + 1]].sum(axis=0, dtype=acc)
    out -= frac[:-1] * arr[start[:-1]]
    out += np.where(start[1:, None] < n, frac[1:], 0) * arr[np.minimum(start[1:], n - 1)]
    out *= np.float32(size / n)
    return out


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
    rows = _area_rows(arr.reshape(h, w * 3), size).reshape(size, w, 3)  # shrink the height, then the width
    cols = _area_rows(np.ascontiguousarray(rows.transpose(1, 0, 2)).reshape(w, size * 3), size)
    out = np.clip(np.rint(cols.reshape(size, size, 3).transpose(1, 0, 2)), 0, 255)
    return np.ascontiguousarray(out, dtype=np.uint8)


def encode_png(image: Any, compress_level: int = 1) -> bytes:
    """PNG bytes of an RGB frame; low compression because latency matters more than bytes on a LAN."""
    buf = io.BytesIO()
    Image.fromarray(to_rgb_array(image)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
