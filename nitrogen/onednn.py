"""oneDNN-prepacked linear layers for inference on the CPU, in float32 and in bf16 mode.

float32: MKL's GEMM reaches ~40% of peak on the DiT's 18-row inputs; oneDNN about twice that. Results
differ from MKL only in float32 rounding order (2e-7 on the golden vectors).
bf16 mode: autocast's ``linear`` re-lays out the bf16 weight on every call (~2x slower than a weight
prepacked once for oneDNN's bf16 kernels); the prepacked GEMM gives the same bits as autocast's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .modeling import CategorySpecificLinear

ONEDNN_MIN_WEIGHTS = 256 * 256  # below this the layout conversions cost more than oneDNN saves


class OneDNNLinear(torch.nn.Module):
    """``nn.Linear`` with its weight prepacked for oneDNN (float32, inference only).

    Dense tensors in and out: the opaque-tensor form (``to_mkldnn`` ... ``to_dense``) cost two layout
    conversions per call, ~5% of a predict, and ran the 18-row GEMMs at ~70 GFLOP/s against ~95 this
    way on an AVX2 EPYC (same bits).
    """

    def __init__(self, linear: torch.nn.Linear, rows: int = 256) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # the layout is tuned for, not limited to, `rows` rows per call: packed for 18 rows, the DiT's
        # 18-row GEMMs ran at 94 GFLOP/s against 81 packed for 256 (AVX2 EPYC, weights out of cache)
        packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)
        self.register_buffer("weight", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


class OneDNNLinearBF16(torch.nn.Module):
    """A bf16-weight ``nn.Linear`` as autocast runs it (input and bias cast to bf16, bf16 out),
    with the weight prepacked once for oneDNN."""

    ROWS = 256  # the tower's tokens per frame; this packing was measured bit-exact with autocast's GEMM

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to(torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, self.ROWS)
        self.register_buffer("weight", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.weight, self.bias, "none", [], "")


def bf16_supported() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def to_onednn_linears(model: torch.nn.Module, bf16: bool = False,
                      rows: Callable[[str], int] = lambda name: 256) -> int:
    """Swap ``nn.Linear`` layers for their oneDNN-prepacked form in place; returns how many.

    ``rows(qualified_name)``: how many rows that float32 layer usually multiplies, which its packing is
    tuned for (bf16 layers keep the packing whose bits were checked against autocast's).

    In bf16 mode the per-embodiment action layers stay as they are: the original adds their bias in
    float32 outside the GEMM, which a fused bf16 layer would not.
    """
    swapped = 0
    for prefix, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, CategorySpecificLinear) and child.W.shape[0] == 1 and not bf16:
                child = child.as_linear()
            if type(child) is not torch.nn.Linear or child.weight.numel() < ONEDNN_MIN_WEIGHTS:
                continue
            if bf16 and child.weight.dtype == torch.bfloat16:
                setattr(parent, name, OneDNNLinearBF16(child))  # another packing might round otherwise
            elif not bf16 and child.weight.dtype == torch.float32:
                setattr(parent, name, OneDNNLinear(child, rows(f"{prefix}.{name}".lstrip("."))))
            else:
                continue
            swapped += 1
    return swapped
