"""Shared fixtures: the golden files, and no hub access anywhere in the suite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("NITROGEN_GOLDEN", REPO.parent / "shared" / "golden"))
SEEDS = {"tiny-a": 100, "tiny-b": 200}  # seed of call i is SEEDS[name] + i (golden/README.md)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    assert (GOLDEN / "tiny-a.pt").is_file(), f"golden files not found in {GOLDEN} (set NITROGEN_GOLDEN)"
    return GOLDEN


@pytest.fixture(scope="session")
def golden(golden_dir) -> Callable[[str], dict[str, np.ndarray]]:
    """``golden("tiny-a")`` -> the npz arrays, plus ``seed`` (the base seed of call 0)."""

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(golden_dir / f"{name}.npz") as z:
            data = {k: z[k] for k in z.files}
        data["seed"] = np.int64(SEEDS[name])
        return data

    return load
