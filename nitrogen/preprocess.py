"""Frame validation and SigLIP preprocessing (what SiglipImageProcessor does, without the hub)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

MAX_SIDE = 8192
MEAN = 0.5
STD = 0.5

ACCEPTED = "an RGB frame: numpy uint8 array of shape (H, W, 3) with 1 <= H, W <= 8192, or a PIL.Image"


def to_rgb_array(image: Any) -> np.ndarray:
    """Validate a client frame and return it as a contiguous uint8 (H, W, 3) array."""
    if isinstance(image, Image.Image):
        w, h = image.size
        _check_size(h, w, f"PIL image of size {w}x{h}")
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be {ACCEPTED}; got {type(image).__name__}")  # noqa: TRY004 - one type for callers
    if image.dtype != np.uint8:
        raise ValueError(f"image dtype is {image.dtype}; expected uint8 ({ACCEPTED})")
    if image.ndim != 3:
        raise ValueError(f"image has shape {image.shape} (rank {image.ndim}); expected (H, W, 3) ({ACCEPTED})")
    if image.shape[2] != 3:
        raise ValueError(f"image has {image.shape[2]} channels (shape {image.shape}); expected 3 (RGB)")
    _check_size(image.shape[0], image.shape[1], f"array of shape {image.shape}")
    return np.ascontiguousarray(image)


def _check_size(h: int, w: int, what: str) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"image is empty: {what}; {ACCEPTED}")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(f"image is too large: {what}; each side must be at most {MAX_SIDE} pixels")


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize with Pillow, as the SigLIP image processor does (identity at the right size)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), resample=Image.BICUBIC))


def pixel_values(image: Any, size: int) -> np.ndarray:
    """Frame -> (3, size, size) float32 SigLIP input: resize, rescale by 1/255, normalise (0.5, 0.5)."""
    rgb = resize_rgb(to_rgb_array(image), size)
    scaled = (rgb.astype(np.float64) * (1 / 255)).astype(np.float32)
    normed = (scaled - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(normed.transpose(2, 0, 1))
