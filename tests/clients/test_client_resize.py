"""The player's resize against OpenCV's: the original player shrank each screenshot with
``cv2.resize(..., (256, 256), interpolation=cv2.INTER_AREA)``, after a Pillow (bicubic) resize to
2560x1440. ``resize_area`` does INTER_AREA's arithmetic in numpy, so the client needs no OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from nitrogen_client.images import resize_area
from PIL import Image, ImageDraw

SIZES = {"1080p": (1920, 1080), "1440p": (2560, 1440)}


def game_like(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A rendered-looking frame: sky gradient, outlined shapes, 1-pixel lines, HUD text, a noisy texture."""
    rng = np.random.default_rng(seed)
    y, x = np.linspace(0, 1, h)[:, None], np.linspace(0, 1, w)[None, :]
    sky = np.stack([60 + 120 * y + 20 * np.sin(7 * x), 120 + 80 * x * y, 220 - 100 * y + 0 * x], axis=-1)
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x0, y0, s = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(10, w // 6))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse([x0, y0, x0 + s, y0 + s], fill=color, outline=(0, 0, 0), width=3)
    for _ in range(40):
        draw.line([tuple(int(v) for v in rng.integers(0, w, 2)), tuple(int(v) for v in rng.integers(0, h, 2))],
                  fill=(255, 255, 255), width=1)
    for _ in range(30):
        draw.text((int(rng.integers(0, w - 200)), int(rng.integers(0, h - 40))), "SCORE 001234 HP", fill=(255, 255, 0))
    arr = np.asarray(img).astype(np.int16)
    arr[h // 2 :, : w // 3] += rng.integers(-40, 40, (h - h // 2, w // 3, 3), dtype=np.int16)
    return np.clip(arr, 0, 255).astype(np.uint8)


def pixel_art(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A 320x180 tile map with single-pixel sprites, blown up with hard edges (6x to 1080p, 8x to 1440p)."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    low = palette[np.kron(rng.integers(0, 16, (45, 80)), np.ones((4, 4), int))]
    sprites = rng.random((180, 320)) < 0.15
    low[sprites] = palette[rng.integers(0, 16, int(sprites.sum()))]
    return np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.NEAREST))


def original_resize(frame: np.ndarray) -> np.ndarray:
    """The original player: Pillow to 2560x1440 (its default filter), then OpenCV INTER_AREA."""
    big = np.asarray(Image.fromarray(frame).resize((2560, 1440)))
    return cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA)


def diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape == (256, 256, 3) and a.dtype == b.dtype == np.uint8
    return np.abs(a.astype(int) - b.astype(int))


@pytest.mark.parametrize("kind", ["game", "pixel-art"])
@pytest.mark.parametrize("size", list(SIZES))
def test_resize_matches_opencv_inter_area(kind, size):
    frame = (game_like if kind == "game" else pixel_art)(*SIZES[size])
    ours = resize_area(frame)
    d = diff(ours, cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA))
    assert d.max() <= 1 and d.mean() <= 0.01, (d.max(), d.mean())  # float rounding only
    assert diff(ours, original_resize(frame)).mean() <= 0.5  # the original's whole path, upscale included


def test_other_shapes():
    rng = np.random.default_rng(1)
    for w, h in ((1280, 720), (3840, 2160), (2560, 1080), (1000, 999), (257, 4000)):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = resize_area(frame)
        d = diff(ours, cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA))
        assert d.max() <= 1 and ours.flags.c_contiguous, (w, h, d.max())  # sent as it is over ZeroMQ
    square = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert resize_area(square) is square  # already the model's size: untouched
    small = resize_area(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))  # enlarged, not area-averaged
    assert small.shape == (256, 256, 3)
