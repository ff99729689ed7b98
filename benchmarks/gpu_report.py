"""What the first GPU run should tell us about issue 20's speed items (none was measured here yet).

- host synchronisations per predict, counted by torch's profiler (CUDA runtime calls that block the host);
- CUDA-graph coverage: which (steps, jobs, guided) buckets are captured, whether capture fell back;
- device memory per step count: what capturing one more step count costs (pool + buffers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from nitrogen import InferenceEngine, InferenceSession

# CUDA runtime calls that make the host wait for the device
BLOCKING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy ",
                  "cudaMemcpy2D ")


def host_syncs(predict: Callable[[], Any], n: int = 5) -> dict[str, Any]:
    """Blocking CUDA runtime calls per predict, by name (profiler's CPU-side view of the runtime API)."""
    from torch.profiler import ProfilerActivity, profile

    predict()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            predict()
    counts: Counter[str] = Counter()
    for event in prof.events():
        name = event.name + " "
        for call in BLOCKING_CALLS:
            if name.startswith(call):
                counts[call.strip()] += 1
    return {"per_predict": round(sum(counts.values()) / n, 2),
            "by_call": {k: round(v / n, 2) for k, v in sorted(counts.items())}}


def graph_coverage(engine: InferenceEngine) -> dict[str, Any]:
    g = engine.graphs
    return {"captured": len(g.captured), "broken": g.broken,
            "buckets": [{"steps": s, "jobs": j, "guided": e} for s, j, e in g.captured]}


def memory_per_steps(engine: InferenceEngine, frame: Any, steps: list[int]) -> dict[str, Any]:
    """Allocated device memory after the first predict at each step count (its graph captured)."""
    out = {}
    for n in steps:
        before = torch.cuda.memory_allocated(engine.device)
        InferenceSession(engine, steps=n).predict(frame, seed=0)
        torch.cuda.synchronize(engine.device)
        out[str(n)] = {"added_mb": round((torch.cuda.memory_allocated(engine.device) - before) / 2**20, 1),
                       "reserved_mb": round(torch.cuda.memory_reserved(engine.device) / 2**20, 1)}
    return out


def gpu_report(engine: InferenceEngine, frame: Any, steps: list[int]) -> dict[str, Any]:
    session = InferenceSession(engine)
    return {"host_syncs": host_syncs(lambda: session.predict(frame, seed=0)),
            "graphs_after_warmup": graph_coverage(engine),
            "memory_per_step_count": memory_per_steps(engine, frame, steps),
            "graphs_after_step_counts": graph_coverage(engine)}
