"""oneDNN-prepacked linear layers for float32 inference on the CPU.

MKL's GEMM reaches ~40% of peak on the DiT's 18-row inputs; oneDNN about twice that. Results differ
from MKL only in float32 rounding order (2e-7 on the golden vectors).
"""

from __future__ import annotations

import torch

from .modeling import CategorySpecificLinear

ONEDNN_MIN_WEIGHTS = 256 * 256  # below this the layout conversions cost more than oneDNN saves


class OneDNNLinear(torch.nn.Module):
    """``nn.Linear`` with its weight prepacked for oneDNN (float32, inference only)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("weight", linear.weight.detach().to_mkldnn(), persistent=False)
        self.register_buffer("bias", bias.detach().to_mkldnn(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._C._nn.mkldnn_linear(x.to_mkldnn(), self.weight, self.bias).to_dense()


def to_onednn_linears(model: torch.nn.Module) -> int:
    """Swap float32 ``nn.Linear`` layers for :class:`OneDNNLinear` in place; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, CategorySpecificLinear) and child.W.shape[0] == 1:
                child = child.as_linear()
            if (type(child) is torch.nn.Linear and child.weight.dtype == torch.float32
                    and child.weight.numel() >= ONEDNN_MIN_WEIGHTS):
                setattr(parent, name, OneDNNLinear(child))
                swapped += 1
    return swapped
