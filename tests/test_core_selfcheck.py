"""`nitrogen-server selfcheck`: the table a GPU owner pastes into a bug report, run here on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_selfcheck_passes_on_this_machine_and_prints_one_table():
    run = subprocess.run(["nitrogen-server", "selfcheck", "--no-timing"], capture_output=True, text=True,
                         timeout=600, env=ENV, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for row in ("float32 parity tiny-a", "float32 parity tiny-c", "bf16 parity tiny-b",
                "4 sessions batched vs alone", "device resize vs Pillow", "torch"):
        assert row in out
    assert "FAIL" not in out and out.strip().endswith("checks passed")
    assert "CUDA graphs" in out
    if not torch.cuda.is_available():
        assert "not applicable (no CUDA device)" in out


def test_selfcheck_fails_loudly_when_a_mode_cannot_run():
    """Asked for a GPU this machine lacks, every model check fails and the exit status says so."""
    run = subprocess.run([sys.executable, "-m", "nitrogen.selfcheck", "--device", "cuda:99", "--no-timing"],
                         capture_output=True, text=True, timeout=600, env=ENV, check=False)
    assert run.returncode == 1
    assert "FAIL" in run.stdout and "failed" in run.stdout.splitlines()[-1]
