"""One batched predict: frames -> vision features -> VL rows -> K/V once -> Euler loop over all rows.

Rows: ``[0, B)`` are the jobs' conditional inputs, guided jobs add an unconditional row after them.
Guidance is written without branches (``v = v_c + s * (v_c - v[uncond])`` with ``s = 0`` and
``uncond = self`` for unguided jobs), which is exact for both kinds and keeps shapes static, so the
loop can be captured as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .modeling import NitroGenModel, StepConstants
from .preprocess import MEAN, STD, pixel_values

if TYPE_CHECKING:
    from .engine import Frame, Job

KV = list[tuple[torch.Tensor, torch.Tensor] | None]


@dataclass
class BatchInputs:
    """Everything the Euler loop reads, already on the device."""

    x0: torch.Tensor        # (B, H, A) float32
    kv: KV                  # per DiT block: cross-attention keys/values (R, heads, T, hd), else None
    row_job: torch.Tensor   # (R,) which job's actions each row denoises
    uncond: torch.Tensor    # (B,) each job's unconditional row (itself when unguided)
    scale: torch.Tensor     # (B, 1, 1) float32 guidance scale (0 when unguided)


class BatchedForward:
    """The numerics of the original, batched and with the step-invariant work hoisted."""

    def __init__(self, model: NitroGenModel, steps: list[StepConstants], *, seq_len: int,
                 tokens_per_frame: int, has_game_token: bool, device: torch.device, dtype: torch.dtype,
                 gpu_preprocess: bool) -> None:
        self.model = model
        self.steps = steps
        self.seq_len = seq_len
        self.tokens_per_frame = tokens_per_frame
        self.has_game_token = has_game_token
        self.device = device
        self.dtype = dtype
        self.image_size = model.vision_config.image_size
        self.vl_dim = model.cfg.model_cfg.vision_hidden_size
        self.gpu_preprocess = gpu_preprocess and device.type == "cuda"

    # ---- vision --------------------------------------------------------------------------------------
    def encode_missing_frames(self, jobs: list[Job]) -> None:
        """Run the tower on frames not seen before (history frames keep their features)."""
        todo = list({id(f): f for j in jobs for f in j.frames if f.features is None}.values())
        if not todo:
            return
        pix = self._pixels_gpu(todo) if self.gpu_preprocess else torch.from_numpy(
            np.stack([pixel_values(f.rgb, self.image_size) for f in todo])).to(self.device)
        feats = self.model.encode_frames(pix.to(self.dtype))
        for f, feat in zip(todo, feats):
            f.features = feat

    def _pixels_gpu(self, frames: list[Frame]) -> torch.Tensor:
        """uint8 upload, bicubic resize on the GPU where needed, rescale and normalise there."""
        size, out = self.image_size, []
        for f in frames:
            t = torch.tensor(f.rgb).to(self.device).permute(2, 0, 1)[None].float()  # frames may be read-only
            if t.shape[-2:] != (size, size):
                t = F.interpolate(t, size=(size, size), mode="bicubic", antialias=True,
                                  align_corners=False).round_().clamp_(0, 255)
            out.append(t)
        scaled = (torch.cat(out).double() * (1 / 255)).float()  # the same roundings as the CPU path
        return (scaled - MEAN) / STD

    # ---- conditioning ----------------------------------------------------------------------------------
    def _vl_row(self, frames: list[Frame], game_id: int | None) -> torch.Tensor:
        """[pad ...] [game] [tokens of each frame]: pad slots stay zero and are never masked."""
        vl = torch.zeros(self.seq_len, self.vl_dim, device=self.device, dtype=self.dtype)
        n = len(frames) * self.tokens_per_frame
        if n:
            vl[self.seq_len - n:] = torch.cat([f.features for f in frames])
        if self.has_game_token and game_id is not None:
            vl[self.seq_len - n - 1] = self.model.game_embedding.weight[game_id]
        return vl

    def prepare(self, jobs: list[Job]) -> BatchInputs:
        """Guided jobs follow the original: no game id in either input; unconditional = newest frame."""
        self.encode_missing_frames(jobs)
        b = len(jobs)
        rows = [self._vl_row(j.frames, None if j.cfg_scale != 1.0 else j.game_id) for j in jobs]
        row_job, uncond, scale = list(range(b)), list(range(b)), [0.0] * b
        for i, job in enumerate(jobs):
            if job.cfg_scale != 1.0:
                uncond[i], scale[i] = len(rows), job.cfg_scale
                rows.append(self._vl_row(job.frames[-1:], None))
                row_job.append(i)
        dev = self.device
        return BatchInputs(
            x0=torch.stack([j.noise for j in jobs]).to(dev),
            kv=self.model.condition(torch.stack(rows)),
            row_job=torch.tensor(row_job, device=dev),
            uncond=torch.tensor(uncond, device=dev),
            scale=torch.tensor(scale, dtype=torch.float32, device=dev).view(b, 1, 1),
        )

    # ---- the Euler loop --------------------------------------------------------------------------------
    def denoise(self, inp: BatchInputs) -> torch.Tensor:
        """x(0) -> x(1); x stays float32 whatever the weights' dtype."""
        x, dt, b = inp.x0, 1.0 / len(self.steps), inp.x0.shape[0]
        for step in self.steps:
            v_rows = self.model.velocity(x[inp.row_job].to(self.dtype), step, inp.kv).float()
            v_c = v_rows[:b]
            x = x + dt * (v_c + inp.scale * (v_c - v_rows[inp.uncond]))
        return x
