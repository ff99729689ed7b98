"""Fixtures for nitrogen-eval: one golden tiny-a server for the module, and the CLI run as a user runs it
(a subprocess of the working tree's client, its own worker processes, real games)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "clients"))
from client_testkit import GOLDEN_DIR, ServerProcess

CLIENT_SRC = REPO / "clients" / "python" / "src"


def eval_env() -> dict[str, str]:
    """The environment for a nitrogen-eval subprocess: the working tree's client, no hub access."""
    path = os.pathsep.join(p for p in (str(CLIENT_SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def eval_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nitrogen_client.evaluate", *args]


def run_eval(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``nitrogen-eval ARGS`` to completion; its output is kept for the assertion messages."""
    return subprocess.run(eval_cmd(*args), env=eval_env(), capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=REPO)


def results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def predict_lines(out: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / row["log"]).read_text().splitlines()]


@pytest.fixture(scope="session")
def golden_server() -> Iterator[ServerProcess]:
    """nitrogen-server on the golden tiny-a checkpoint (horizon 16, repeat 1), ephemeral ports."""
    ckpt = GOLDEN_DIR / "tiny-a.pt"
    assert ckpt.is_file(), f"golden checkpoint missing: {ckpt} (set NITROGEN_GOLDEN)"
    server = ServerProcess(str(ckpt)).start()
    yield server
    server.stop()
