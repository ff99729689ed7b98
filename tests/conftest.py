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


ORIGINAL_BF16_AVX2 = REPO / "tests" / "data" / "original-bf16-avx2"


@pytest.fixture(scope="session")
def bf16_reference(golden_dir) -> Callable[[str], tuple[dict[str, np.ndarray], float, str]]:
    """``bf16_reference("tiny-b")`` -> (the original's autocast vectors for THIS kind of CPU, atol, which).

    bf16 GEMMs round differently by CPU kind, and so does the original itself (its AVX2 vectors are up to
    8.4e-4 from its AVX512-BF16 ones). Where vectors made by the original on this kind of CPU exist, bf16
    mode is held to them at 1e-4 (measured 0.0 on both kinds); elsewhere (AVX-512 without BF16, other
    architectures) to the AVX512-BF16 vectors at nitrogen.precision's 5e-3.
    """
    import torch

    from nitrogen.onednn import bf16_supported
    from nitrogen.precision import BF16_ATOL_NATIVE, BF16_ATOL_OTHER, native_bf16

    def load(name: str) -> tuple[dict[str, np.ndarray], float, str]:
        if native_bf16(torch.device("cpu")):
            path, atol = golden_dir / f"{name}.bf16.npz", BF16_ATOL_NATIVE
        elif torch.backends.cpu.get_cpu_capability() == "AVX2" and not bf16_supported():
            # (an AVX2 CPU with oneDNN bf16 kernels, AVX-NE-CONVERT say, runs other GEMMs than these)
            path, atol = ORIGINAL_BF16_AVX2 / f"{name}.bf16.npz", BF16_ATOL_NATIVE
        else:
            path, atol = golden_dir / f"{name}.bf16.npz", BF16_ATOL_OTHER
        with np.load(path) as z:
            return {k: z[k] for k in z.files}, atol, str(path)

    return load
