"""The original's GPU numerics: float32 weights under ``torch.autocast(dtype=torch.bfloat16)``.

Under autocast, matmuls, convolutions and attention run in bf16 while layer norms, softmax statistics,
positional tables, biases added outside a GEMM and the residual stream stay float32. Casting the weights
(not the biases) of ``nn.Linear``/``nn.Conv2d`` to bf16 once at load gives the same numbers, because
autocast would cast them identically on every call; it only halves the weight traffic.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch
from torch import nn

BF16 = torch.bfloat16
# How far bf16 mode may sit from the original's bf16 vectors. Against vectors the original made on the
# same kind of machine it sits at 0.0 (measured on AVX512-BF16 and on AVX2 CPUs). Against another kind's
# (a GPU against CPU vectors, say) the GEMMs round differently: the original's own AVX2 and AVX512-BF16
# vectors are up to 8.4e-4 apart; 5e-3 is still a fifth of an all-bf16 model's distance (2.5e-2 to 3.6e-2).
BF16_ATOL_NATIVE = 1e-4
BF16_ATOL_OTHER = 5e-3


def native_bf16(device: torch.device) -> bool:
    """True where bf16 GEMMs accumulate like the golden vectors' (AVX512-BF16 or AMX CPUs)."""
    cpu = torch.cpu
    return device.type == "cpu" and (cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def slow_bf16_reason(device: torch.device) -> str | None:
    """Why bf16 mode would be slow on ``device`` (a CPU without bf16 dot products), else None."""
    if device.type != "cpu" or native_bf16(device):
        return None
    return (f"this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX512-BF16 or AMX) emulates bf16 matmuls: "
            "bf16 mode runs ~6.5x slower than float32 here (16.0-16.7 s against 2.3-2.7 s per ng.pt-sized predict "
            "on an AVX2-only EPYC)")


def cast_matmul_weights(model: nn.Module) -> int:
    """bf16 copies of every Linear/Conv2d weight (biases stay float32); returns how many."""
    cast = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight.dtype == torch.float32:
            module.weight = nn.Parameter(module.weight.detach().to(BF16), requires_grad=False)
            cast += 1
    return cast


def compute_context(device: torch.device, bf16: bool) -> AbstractContextManager:
    """Autocast for bf16 mode (no cast cache: weights are already bf16, and CUDA graphs need none)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=BF16, cache_enabled=False)
