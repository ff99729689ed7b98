"""Replaying the whole Euler loop as one CUDA graph per (jobs, rows) bucket.

The loop is ~16 steps x (blocks x ~15 kernels): thousands of tiny launches whose overhead dominates a
GPU predict. Inputs are copied into static buffers padded to power-of-two buckets; padded jobs compute
garbage that is never read. Capturing is lazy per bucket (warm-up pre-captures every bucket of the
default step count) and any capture failure falls back to eager execution with a warning, never to a
failed request.

What each engine's denoisers share (`GraphShared`): the engine's device and its own capture stream
(torch's default capture stream and ``current_stream()`` belong to the thread's current device, so a
graph for cuda:1 captured from them would record nothing and replay the capture-time output forever),
one memory pool and one input arena for every step count (graphs of one engine never run at once), and
one "capture is broken here" flag. Captures run in ``thread_local`` error mode, one at a time per
process: another engine's allocations or copies on another thread cannot invalidate them, and they do
not empty every device's allocator cache as ``torch.cuda.graph`` does. A failed capture restores the
stream and ends the pool's allocation, which torch leaves undone when ``capture_end`` raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .forward import BatchInputs

logger = logging.getLogger(__name__)
# One capture at a time in the process; also held by anything that empties the allocator's cache
# (torch asserts no capture is under way on any device when it does).
CAPTURE_LOCK = threading.Lock()


@dataclass
class GraphShared:
    """What all step counts' denoisers of one engine share (see the module docstring)."""

    device: torch.device | None = None
    stream: torch.cuda.Stream | None = None
    pool: object = None
    arena: BatchInputs | None = None
    broken: bool = False
    captured: list[tuple[int, int, int]] = field(default_factory=list)  # (steps, jobs, extra rows)

    @classmethod
    def for_device(cls, device: torch.device) -> GraphShared:
        if device.type != "cuda":
            return cls(device)
        with torch.cuda.device(device):
            return cls(device, torch.cuda.Stream(device), torch.cuda.graph_pool_handle())


def bucket(n: int) -> int:
    """Smallest power of two >= n."""
    return 1 << max(0, (n - 1).bit_length())


def bucket_key(jobs: int, guided: int) -> tuple[int, int]:
    """The graph a batch of ``jobs`` jobs, ``guided`` of them with guidance (an extra row each), runs in."""
    return bucket(jobs), bucket(guided) if guided else 0


def warmup_shapes(max_batch: int) -> list[tuple[int, int]]:
    """(jobs, guided) batches that reach every bucket a batch of at most ``max_batch`` jobs can need."""
    sizes = [1 << k for k in range(bucket(max_batch).bit_length()) if 1 << k <= bucket(max_batch)]
    return [(n, guided) for n in sizes for guided in [0, *(g for g in sizes if g <= n)]]


@dataclass
class _Captured:
    inputs: BatchInputs
    output: torch.Tensor
    graph: torch.cuda.CUDAGraph | None


class GraphedDenoiser:
    """Pads a batch to its bucket, then replays (or on CPU, runs) the loop on static buffers."""

    def __init__(self, denoise: Callable[[BatchInputs], torch.Tensor], capture: bool = True,
                 capacity: int = 1, shared: GraphShared | None = None, steps: int = 0) -> None:
        self._denoise = denoise
        self._shared = shared if shared is not None else GraphShared()
        self._capture = capture and self._shared.stream is not None
        self._graphs: dict[tuple[int, int], _Captured] = {}
        self._capacity = bucket(capacity)
        self._steps = steps

    def __call__(self, inp: BatchInputs) -> torch.Tensor:
        b, r = inp.x0.shape[0], inp.row_job.shape[0]
        key = bucket_key(b, r - b)
        if self._shared.broken and key not in self._graphs:
            return self._denoise(inp)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._build(inp, *key)
        self._load(entry.inputs, inp)
        if entry.graph is None:
            return self._denoise(entry.inputs)[:b].clone()
        entry.graph.replay()
        return entry.output[:b].clone()

    def _static_like(self, inp: BatchInputs, jobs: int, extra_rows: int) -> BatchInputs:
        """Views into one shared arena: graphs never run at once, so every bucket can use it."""
        rows = jobs + extra_rows
        arena = self._shared.arena
        if arena is None or arena.x0.shape[0] < jobs or arena.row_job.shape[0] < rows:
            cap = max(self._capacity, jobs, extra_rows)
            dev = inp.x0.device
            arena = self._shared.arena = BatchInputs(
                x0=torch.zeros((cap, *inp.x0.shape[1:]), dtype=inp.x0.dtype, device=dev),
                kv=[None if p is None else tuple(
                    torch.zeros((2 * cap, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in p)
                    for p in inp.kv],
                row_job=torch.zeros(2 * cap, dtype=torch.long, device=dev),
                uncond=torch.zeros(cap, dtype=torch.long, device=dev),
                scale=torch.zeros((cap, 1, 1), dtype=torch.float32, device=dev),
            )
        return BatchInputs(
            x0=arena.x0[:jobs],
            kv=[None if p is None else tuple(t[:rows] for t in p) for p in arena.kv],
            row_job=arena.row_job[:rows],
            uncond=arena.uncond[:jobs],
            scale=arena.scale[:jobs],
        )

    @staticmethod
    def _load(static: BatchInputs, inp: BatchInputs) -> None:
        """Copy a batch into the bucket: conditional rows first, unconditional rows after ``jobs``."""
        b, r = inp.x0.shape[0], inp.row_job.shape[0]
        jobs = static.x0.shape[0]
        static.x0.zero_()
        static.x0[:b].copy_(inp.x0)
        for dst, src in zip(static.kv, inp.kv):
            if dst is not None:
                for d, s in zip(dst, src):
                    d[:b].copy_(s[:b])
                    d[jobs:jobs + r - b].copy_(s[b:r])
        row_job = torch.arange(static.row_job.shape[0], device=inp.row_job.device).clamp_(max=jobs - 1)
        row_job[jobs:jobs + r - b] = inp.row_job[b:r]
        static.row_job.copy_(row_job)
        uncond = torch.arange(jobs, device=inp.uncond.device)
        uncond[:b] = torch.where(inp.uncond >= b, inp.uncond - b + jobs, inp.uncond)
        static.uncond.copy_(uncond)
        static.scale.zero_()
        static.scale[:b].copy_(inp.scale)

    def _build(self, inp: BatchInputs, jobs: int, extra_rows: int) -> _Captured:
        static = self._static_like(inp, jobs, extra_rows)
        if not self._capture or self._shared.broken:
            return _Captured(static, static.x0, None)
        self._load(static, inp)
        sh = self._shared
        assert sh.stream is not None and sh.device is not None
        with CAPTURE_LOCK, torch.cuda.device(sh.device):
            before = torch.cuda.current_stream(sh.device)
            graph, out, capturing = torch.cuda.CUDAGraph(), None, False
            try:
                sh.stream.wait_stream(before)
                torch.cuda.set_stream(sh.stream)
                for _ in range(2):  # warm up on the capture stream: lazy inits happen outside the graph
                    self._denoise(static)
                sh.stream.synchronize()
                graph.capture_begin(pool=sh.pool, capture_error_mode="thread_local")
                capturing = True
                try:
                    out = self._denoise(static)
                finally:
                    graph.capture_end()
                    capturing = False
            except Exception:  # a driver/library that can't capture: stay correct, just slower
                if capturing:  # capture_end raised before undoing what capture_begin did
                    self._undo_capture_begin()
                logger.warning("CUDA graph capture failed on %s; this engine runs the denoising loop eagerly "
                               "from now on", sh.device, exc_info=True)
                sh.broken = True
                return _Captured(static, static.x0, None)
            finally:
                torch.cuda.set_stream(before)  # torch leaves the capture stream current when capture_end raises
            before.wait_stream(sh.stream)
        sh.captured.append((self._steps, jobs, extra_rows))
        logger.info("captured the denoising loop (%d steps) as a CUDA graph on %s for %d jobs + %d guided rows",
                    self._steps, sh.device, jobs, extra_rows)
        return _Captured(static, out, graph)

    def _undo_capture_begin(self) -> None:
        """After capture_end raised: allocations must stop going to the graph pool, and the pool's use
        count taken by capture_begin must be given back (or the pool outlives the engine)."""
        sh = self._shared
        assert sh.device is not None and sh.device.index is not None
        for undo in (torch._C._cuda_endAllocateToPool, torch._C._cuda_releasePool):
            try:
                undo(sh.device.index, sh.pool)
            except Exception as exc:  # noqa: BLE001 - capture_end got that far itself: nothing to undo
                logger.debug("%s after a failed capture: %s", undo.__name__, exc)
