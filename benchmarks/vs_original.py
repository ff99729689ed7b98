"""Seconds per predict, ours against NVIDIA's own code, on this machine, interleaved.

    python -m benchmarks.vs_original --original ~/NitroGen --original-python /tmp/orig/bin/python --rounds 3
    python -m benchmarks.vs_original ... --dtype bfloat16 --iters 2 --rounds 1    # the original's autocast

Both run an ng.pt-shaped random model (benchmarks/ng_shape.json) on the same 256x256 frames, one predict
at a time as a client would. The original runs in its own environment (benchmarks/original_reference.py
says how to make one) and a process of its own. Shared VMs drift by 10-20% over minutes, so the runs
alternate ours, original, ours..., and the speed-up is taken from adjacent runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench import cpu_name, timed
from benchmarks.shapes import build_ng_shaped_model
from nitrogen import EngineOptions, InferenceEngine, InferenceSession

log = logging.getLogger("vs_original")
HARNESS = Path(__file__).with_name("original_reference.py")


def original_seconds(python: str, checkout: Path, iters: int, dtype: str, threads: int | None) -> dict[str, Any]:
    """One run of the original (a fresh process): its JSON summary line."""
    cmd = [python, str(HARNESS), "time", "--original", str(checkout), "--iters", str(iters), "--dtype", dtype]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # ours must not shadow the original
    run = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if run.returncode != 0:
        raise RuntimeError(f"the original's run failed (exit {run.returncode}): {run.stderr.strip()[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def our_seconds(session: InferenceSession, iters: int) -> list[float]:
    """Per-predict seconds on fresh random frames, as the original's `time` (first one not counted)."""
    rng = np.random.default_rng(0)
    return timed(lambda: session.predict(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)), iters)


def compare(session: InferenceSession, python: str, checkout: Path, iters: int, rounds: int,
            dtype: str, threads: int | None = None) -> dict[str, Any]:
    """ours, (original, ours) x rounds; each original run against the mean of the ours around it."""
    ours = [statistics.median(our_seconds(session, iters))]
    originals, ratios = [], []
    for r in range(rounds):
        log.info("round %d/%d: the original (%d predicts after its load and a warm-up)...", r + 1, rounds, iters)
        orig = original_seconds(python, checkout, iters, dtype, threads)
        originals.append(orig["original_predict_s"]["p50"])
        ours.append(statistics.median(our_seconds(session, iters)))
        ratios.append(originals[-1] / ((ours[-2] + ours[-1]) / 2))
        log.info("round %d: original p50 %.3f s, ours %.3f / %.3f s: %.2fx", r + 1, originals[-1], ours[-2],
                 ours[-1], ratios[-1])
    return {"ours_p50_s": [round(v, 3) for v in ours], "original_p50_s": [round(v, 3) for v in originals],
            "speedup": [round(v, 2) for v in ratios], "speedup_median": round(statistics.median(ratios), 2),
            "iters_per_run": iters, "dtype": dtype, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", type=Path, required=True, help="a checkout of NVIDIA's NitroGen")
    ap.add_argument("--original-python", required=True,
                    help="the Python of an environment with the original's dependencies (not this one)")
    ap.add_argument("--iters", type=int, default=5, help="predicts per run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None,
                    help="default: benchmarks/results/vs-original-cpu.json (-bf16.json for bfloat16)")
    args = ap.parse_args()
    suffix = "-bf16" if args.dtype == "bfloat16" else ""
    args.out = args.out or Path(f"benchmarks/results/vs-original-cpu{suffix}.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = InferenceEngine(build_ng_shaped_model, ckpt_path="ng-shaped-random", device="cpu",
                             options=EngineOptions(dtype=args.dtype))
    try:
        result = compare(InferenceSession(engine), args.original_python, args.original, args.iters, args.rounds,
                         args.dtype, args.threads)
    finally:
        engine.close()
    result["cpu"] = cpu_name()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
