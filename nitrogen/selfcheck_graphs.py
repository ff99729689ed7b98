"""The self-check's CUDA-graph rows: what would catch a graph that replays nothing.

A graph captured on the wrong device or stream records no kernels; replaying it leaves the static
output as the capture left it. Replayed on the inputs it was captured with, that output is right, so
the check captures on one batch and replays a *different* batch of the same bucket, against the eager
loop on that batch. It does so for every step count, on every device given, while another engine keeps
working (a capture must not break, or be broken by, its neighbours). It runs on the calling thread,
whose current CUDA device is cuda:0: the situation in which graphs for other devices used to be empty.
The graph runs the batch padded to its bucket, the eager loop unpadded, so GEMM shapes differ and the
comparison allows rounding (1e-4 float32, 2e-2 bf16); a replay that does nothing is off by far more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from .cuda_graphs import GraphedDenoiser
from .engine import InferenceEngine
from .forward import BatchInputs
from .jobs import Frame, Job
from .options import EngineOptions
from .preprocess import resize_rgb
from .session import InferenceSession

Denoiser = Callable[[BatchInputs], torch.Tensor]


TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


@dataclass
class ReplayResult:
    same: bool  # the replays equal the eager loop on the second batch, within the tolerance
    max_dx: float
    batches_differ: bool  # the batches' outputs differ by more than that (else the check sees nothing)


def replay_matches_eager(graphed: Denoiser, eager: Denoiser, capture_on: BatchInputs,
                         replay_on: BatchInputs, tol: float) -> ReplayResult:
    """Build ``graphed`` on one batch, replay it twice on another; compare with ``eager`` there."""
    with torch.inference_mode():
        first = graphed(capture_on).cpu()
        want = eager(replay_on).cpu()
        got = [graphed(replay_on).cpu() for _ in range(2)]
    dx = max(float((g - want).abs().max()) for g in got)
    return ReplayResult(dx <= tol, dx, float((first - want).abs().max()) > 10 * tol)


def _frames(engine: InferenceEngine, g: dict[str, Any], i: int) -> Frame:
    frame = Frame(g[f"image_{i}"])
    if not engine.resize_on_device:
        frame.rgb = resize_rgb(frame.rgb, engine.image_size)
    return frame


def _batches(engine: InferenceEngine, g: dict[str, Any], steps: int) -> tuple[list[Job], list[Job]]:
    """Two mixed batches (one guided job, one not) of the same bucket, with different frames and noise."""
    f0, f1, f2 = (_frames(engine, g, i) for i in range(3))
    a = [Job([f0, f1], engine.make_noise(seed=201), 2.0, 0, steps), Job([f1], engine.make_noise(seed=7), 1.0, 0, steps)]
    b = [Job([f1, f2], engine.make_noise(seed=301), 2.0, 0, steps), Job([f2], engine.make_noise(seed=8), 1.0, 0, steps)]
    return a, b


class _Busy:
    """Another engine predicting in a loop on its own thread while captures run."""

    def __init__(self, engine: InferenceEngine, image: np.ndarray) -> None:
        self.session, self.image, self.done = InferenceSession(engine), image, 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.session.predict(self.image, seed=self.done)
                self.done += 1
        except BaseException as exc:  # noqa: BLE001 - reported in the row
            self.error = exc

    def __enter__(self) -> _Busy:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def check_device(engine: InferenceEngine, busy: InferenceEngine, g: dict[str, Any], tol: float) -> tuple[bool, str]:
    """Every step count captured (while ``busy`` works) and replayed on other inputs, on one engine."""
    worst, blind, failed = 0.0, [], []
    with _Busy(busy, g["image_0"]) as load:
        for steps in range(1, engine.num_steps + 1):
            eager = partial(engine.forward.denoise, num_steps=steps)
            engine.forward.step_constants(steps)
            graphed = GraphedDenoiser(eager, capacity=4, shared=engine.graphs, steps=steps)
            with torch.inference_mode():
                a, b = (engine.forward.prepare(jobs) for jobs in _batches(engine, g, steps))
            r = replay_matches_eager(graphed, eager, a, b, tol)
            worst = max(worst, r.max_dx)
            if not r.same:
                failed.append(steps)
            if not r.batches_differ:
                blind.append(steps)
    ok = not failed and not blind and not engine.graphs.broken and load.error is None and load.done > 0
    detail = (f"steps 1..{engine.num_steps} replayed on other inputs: max |dx| {worst:.1e}"
              f"{f' (differ at steps {failed})' if failed else ''}; {len(engine.graphs.captured)} graphs"
              f"{' (capture FAILED: eager fallback)' if engine.graphs.broken else ''}; "
              f"meanwhile engine on {busy.device} ran {load.done} predicts"
              f"{f' then failed: {load.error!r}' if load.error else ''}"
              f"{f'; batches alike at steps {blind}' if blind else ''}")
    return ok, detail


def check_graphs(devices: Sequence[torch.device], dtype: str, case: dict[str, Any],
                 engine_for: Callable[[torch.device, EngineOptions], InferenceEngine]) -> list[tuple[str, bool | None, str]]:
    """(check, ok, detail) per CUDA device; the busy neighbour is the next device's engine (or a second
    engine on the same device when there is one GPU)."""
    cuda = [d for d in devices if d.type == "cuda"]
    if not cuda:
        return [("CUDA graphs", None, "not applicable (no CUDA device)")]
    options = EngineOptions(dtype=dtype, warmup=False, max_batch=4)
    engines = [engine_for(d, options) for d in cuda]
    neighbours = engines[1:] + engines[:1] if len(engines) > 1 else [engine_for(cuda[0], options)]
    rows = []
    try:
        for engine, busy in zip(engines, neighbours):
            ok, detail = check_device(engine, busy, case, TOLERANCE[dtype])
            rows.append((f"CUDA graphs on {engine.device}", ok, detail))
    finally:
        for engine in {id(e): e for e in engines + neighbours}.values():
            engine.close()
    return rows
