"""What a session hands the engine: frames, initial noise and settings; and what comes back."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

GAME_NONE = 0  # row 0 of the game table is "unconditional"


@dataclass
class Frame:
    """One buffered frame. ``rgb`` is dropped once ``features`` exist: history keeps features only."""

    rgb: np.ndarray | None
    features: torch.Tensor | None = None


@dataclass(frozen=True)
class Timing:
    """Where a predict's time went on the server: waiting for the worker, then the batch it ran in."""

    queue_ms: float
    infer_ms: float


def _raw(actions: np.ndarray, timing: Timing) -> Any:
    return actions


@dataclass
class Job:
    frames: list[Frame]            # oldest first; only real (non-dropped) frames
    noise: torch.Tensor            # (horizon, action_dim) float32, CPU
    cfg_scale: float
    game_id: int
    steps: int                     # denoising steps
    finish: Callable[[np.ndarray, Timing], Any] = _raw  # x(1) -> the future's result (the session decodes)
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)


def make_noise(shape: tuple[int, int], seed: int | None = None, noise: Any = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """x(0): explicit, from ``seed`` exactly as the original test harness draws it, or from ``generator``."""
    if noise is not None:
        t = torch.as_tensor(np.asarray(noise, dtype=np.float32))
        if t.shape == (1, *shape):
            t = t[0]
        if tuple(t.shape) != shape:
            raise ValueError(f"noise has shape {tuple(t.shape)}; expected {shape} (horizon, action_dim)")
        if not torch.isfinite(t).all():
            raise ValueError("noise contains NaN or infinite values")
        return t.contiguous()
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer; got {type(seed).__name__}")
        if not -(2**63) <= int(seed) < 2**64:
            raise ValueError(f"seed {seed} is out of range [-2**63, 2**64)")
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn((1, *shape), generator=generator, dtype=torch.float32)[0]
    return torch.randn(shape, generator=generator, dtype=torch.float32)
