"""Engine options: batching, precision and fast-path switches (torch-free, so a CLI can embed it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DType = Literal["float32", "bfloat16"]


class EngineOptions(BaseModel):
    """How the engine runs; every fast path can be turned off for comparison."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(32, ge=1, le=1024, description="most predicts run as one forward pass")
    max_wait_ms: float = Field(2.0, ge=0, le=1000, description="how long the worker waits to fill a batch")
    dtype: DType | None = Field(
        None, description="float32, or bfloat16 (the original's mixed precision: bf16 matmuls under autocast, "
        "float32 norms, softmax and residual stream); default: bfloat16 on CUDA, float32 elsewhere")
    steps: int | None = Field(None, ge=1, le=1024,
                              description="denoising steps of new sessions (default: the checkpoint's own)")
    cuda_graphs: bool = Field(True, description="replay the denoising loop as a CUDA graph per batch size")
    gpu_preprocess: bool | None = Field(
        None, description="resize and normalise frames on the model's device (exact Pillow numerics); "
        "default: on for CUDA, off elsewhere")
    warmup: bool = Field(True, description="run dummy predicts at start so the first request is not slow")
    fuse_qkv: bool = Field(True, description="one GEMM for q/k/v (self-attention) and k/v (cross-attention)")
    cpu_onednn: bool = Field(True, description="oneDNN-prepacked linear layers on CPU (float32 ~1.8x faster at "
                             "18 rows; bf16 mode ~2x faster than autocast's)")
