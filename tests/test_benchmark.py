"""The benchmark script runs end to end and writes what the README's performance section quotes.

Numbers are not asserted (they belong to the machine); only that each measurement is there and sane.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_writes_json_and_plot(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "benchmarks.bench", "--model", "demo", "--iters", "2", "--rounds", "1",
           "--concurrency", "1,2", "--overhead-rounds", "5", "--steps", "4,2", "--out", str(tmp_path)]
    done = subprocess.run(cmd, check=False, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "bench-cpu.json").read_text())
    assert (tmp_path / "bench-cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    overhead = results["protocol_overhead_demo"]
    for port in ("zmq", "tcp_raw", "tcp_png", "floor_zmq", "floor_tcp_raw"):
        assert overhead[port]["n"] == 5 and overhead[port]["p50_ms"] > 0, port
        assert "overhead_p50_ms" in overhead[port], port
    assert results["single"]["optimised"]["n"] == 2
    assert results["single"]["naive"]["p50_ms"] > 0 and results["single"]["speedup_vs_naive"] > 0
    assert set(results["end_to_end"]) == {"zmq", "tcp_raw", "tcp_png"}
    assert [c["clients"] for c in results["concurrency"]] == [1, 2]
    assert all(c["predicts_per_s"] > 0 for c in results["concurrency"])
    assert results["memory"]["host_peak_rss_mb"] > 0 and results["memory"]["model_weights_mb"] > 0
    assert results["model"]["kind"] == "demo" and results["model"]["dtype"] == "float32"
    prec = results["precision_and_steps"]
    assert prec["float32"]["n"] == 2 and prec["bfloat16"]["p50_ms"] > 0
    assert 0 < prec["bfloat16"]["max_abs_dx_vs_float32"] < 0.5
    assert set(prec["steps"]) == {"4", "2"} and prec["steps"]["4"]["max_abs_dx_vs_checkpoint_steps"] == 0
    assert prec["steps"]["2"]["max_abs_dx_vs_checkpoint_steps"] > 0
