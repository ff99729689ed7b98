"""Fixtures for the Python client tests: a real nitrogen-server subprocess on ephemeral ports."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from client_testkit import GOLDEN_DIR, REPO, ServerProcess

# Test the working tree's client, not whatever copy pip installed earlier.
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))


@pytest.fixture(scope="session")
def tiny_a() -> dict[str, np.ndarray]:
    """tiny-a.npz: frames and expected decoded actions for calls i = 0..n-1 with seed 100 + i."""
    path = GOLDEN_DIR / "tiny-a.npz"
    if not path.exists():
        pytest.fail(f"golden vectors missing: {path} (set NITROGEN_GOLDEN)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def server() -> ServerProcess:
    """One server on the golden tiny-a checkpoint for the whole client suite (it loads quickly)."""
    ckpt = GOLDEN_DIR / "tiny-a.pt"
    if not ckpt.exists():
        pytest.fail(f"golden checkpoint missing: {ckpt} (set NITROGEN_GOLDEN)")
    proc = ServerProcess(str(ckpt)).start()
    yield proc
    proc.stop()
