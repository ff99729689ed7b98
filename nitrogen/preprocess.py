"""Frame -> SigLIP input, as SiglipImageProcessor computes it: bicubic resize, x/255, (x - 0.5) / 0.5.

The resize is Pillow's (what the processor calls). It runs either in Pillow on the CPU (the caller's
thread) or, for ``gpu_preprocess``, as the same fixed-point arithmetic in torch on the model's device:
Pillow resamples one axis, rounds and clips to uint8, then the other, with 22-bit integer
coefficients (libImaging/Resample.c of Pillow 13, the version pinned in pyproject.toml). Reproducing those integers makes the two paths equal, not close;
a float resize (``F.interpolate``) is 10-23 grey levels off on noisy frames. Written here because no
library offers Pillow's resample on a GPU.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from PIL import Image

from .frames import to_rgb_array

MEAN = 0.5
STD = 0.5
PRECISION_BITS = 32 - 8 - 2  # Pillow's: 8-bit pixels, 2 bits of headroom for negative lobes
BICUBIC_A = -0.5
BICUBIC_SUPPORT = 2.0


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize with Pillow, as the SigLIP image processor does (identity at the right size)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), resample=Image.BICUBIC))


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, H, W)``: rescale in float64 as the processor does.

    Contiguous NCHW like the processor's tensor: a channels-last view sends the patch convolution to
    another kernel, which under bf16 rounds differently on some CPUs (AVX2: up to 3e-2 in the features).
    """
    scaled = (frames.permute(0, 3, 1, 2).double() * (1 / 255)).float()
    return ((scaled - MEAN) / STD).contiguous()


def pixel_values(image: Any, size: int) -> np.ndarray:
    """Frame -> (3, size, size) float32 SigLIP input, entirely on the CPU (the reference path)."""
    rgb = resize_rgb(to_rgb_array(image), size)
    return normalize(torch.tensor(rgb)[None])[0].numpy()


def _bicubic(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * BICUBIC_A
    return 0.0


@functools.lru_cache(maxsize=64)
def resample_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for one axis, operation for operation.

    Returns (first source index, int64 weights) with shapes (out,) and (out, taps); unused taps are 0.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = BICUBIC_SUPPORT * filterscale
    taps = int(np.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, taps), np.int64)
    inv = 1.0 / filterscale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C's cast
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_bicubic((x + xmin - center + 0.5) * inv) for x in range(xmax)]
        total = 0.0
        for w in k:  # sequential, as in C: the sum's rounding decides the last bit
            total += w
        if total != 0.0:
            k = [w / total for w in k]
        one = 1 << PRECISION_BITS
        weights[xx, :xmax] = [int(-0.5 + w * one) if w < 0 else int(0.5 + w * one) for w in k]
        first[xx] = xmin
    return first, weights


class ExactResize:
    """Pillow's 8-bit bicubic resize in torch arithmetic, on whatever device the frames are.

    Each pass is one float64 matmul with the (out, in) matrix of Pillow's integer weights, batched over
    frames. Exact, not close: every product (|w| < 2**23 times a pixel <= 255) and every partial sum
    (< 2**31) is an integer far below 2**53, so float64 holds them whatever order the GEMM adds in.
    (Before: a Python loop of up to 65 taps x 2 passes of int64 kernels per frame.)
    """

    MAX_TABLES = 64  # weight matrices kept (one per frame side): a client cycling sides stays bounded
    CHUNK_BYTES = 64 << 20  # float64 pixels resized at once: one 1080p frame, or several smaller ones

    def __init__(self, size: int, device: torch.device) -> None:
        self.size = size
        self.device = device
        self._tables: dict[int, torch.Tensor] = {}

    def _matrix(self, in_size: int) -> torch.Tensor:
        """(size, in_size) float64: Pillow's integer weight of each source pixel for each output pixel."""
        if in_size in self._tables:
            self._tables[in_size] = self._tables.pop(in_size)  # most recently used last
        else:
            if len(self._tables) >= self.MAX_TABLES:
                del self._tables[next(iter(self._tables))]
            first, weights = resample_coefficients(in_size, self.size)
            cols = first[:, None] + np.arange(weights.shape[1])
            used = cols < in_size  # taps past the edge carry weight 0
            dense = np.zeros((self.size, in_size), np.float64)
            dense[np.nonzero(used)[0], cols[used]] = weights[used]
            self._tables[in_size] = torch.from_numpy(dense).to(self.device)
        return self._tables[in_size]

    def _pass(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """One axis of (N, H, W, 3) float64 pixels (dim 1 or 2): weighted sum, Pillow's rounding shift,
        clip to 0..255."""
        m = self._matrix(x.shape[dim])
        acc = torch.einsum("oh,nhwc->nowc", m, x) if dim == 1 else torch.einsum("ow,nhwc->nhoc", m, x)
        acc = (acc + (1 << (PRECISION_BITS - 1))).to(torch.int64)  # exact integers: no rounding here
        return (acc >> PRECISION_BITS).clamp_(0, 255).to(torch.float64)

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` -> uint8 at ``size x size``, the passes in Pillow's order."""
        batch = rgb if rgb.dim() == 4 else rgb[None]
        h, w = batch.shape[1:3]
        if h == self.size and w == self.size:
            return rgb
        # Pillow: "if height is being scaled down more than twice the amount the width is, run the
        # vertical pass first"; the order changes the intermediate rounding, so it must match.
        vertical_first = 0 < h - self.size and h - self.size > (w - self.size) * 2
        per_chunk = max(1, self.CHUNK_BYTES // (h * w * 3 * 8))  # bounds the float64 copies in memory
        out = []
        for chunk in batch.split(per_chunk):
            x = chunk.to(torch.float64)
            for dim in ((1, 2) if vertical_first else (2, 1)):
                if x.shape[dim] != self.size:
                    x = self._pass(x, dim)
            out.append(x.to(torch.uint8))
        resized = torch.cat(out)
        return resized if rgb.dim() == 4 else resized[0]
