"""One batched predict: frames -> vision features -> VL rows -> K/V once -> Euler loop over all rows.

Rows: ``[0, B)`` are the jobs' conditional inputs, guided jobs add an unconditional row after them.
Guidance is written without branches (``v = v_c + s * (v_c - v[uncond])`` with ``s = 0`` and
``uncond = self`` for unguided jobs), which is exact for both kinds and keeps shapes static, so the
loop can be captured as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .jobs import Frame, Job
from .modeling import NitroGenModel, StepConstants
from .precision import compute_context
from .preprocess import ExactResize, normalize

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

    def __init__(self, model: NitroGenModel, *, seq_len: int, tokens_per_frame: int, has_game_token: bool,
                 device: torch.device, bf16: bool, resize_on_device: bool) -> None:
        self.model = model
        self.seq_len = seq_len
        self.tokens_per_frame = tokens_per_frame
        self.has_game_token = has_game_token
        self.device = device
        self.bf16 = bf16
        self.image_size = model.vision_config.image_size
        self.vl_dim = model.cfg.model_cfg.vision_hidden_size
        self.buckets = model.cfg.model_cfg.num_timestep_buckets
        self.resize = ExactResize(self.image_size, device) if resize_on_device else None
        self._steps: dict[int, list[StepConstants]] = {}

    def autocast(self):
        return compute_context(self.device, self.bf16)

    def step_constants(self, num_steps: int) -> list[StepConstants]:
        """Per-step embeddings for ``num_steps`` steps, made once (under the same precision as the loop)."""
        if num_steps not in self._steps:
            with self.autocast():
                self._steps[num_steps] = self.model.step_constants(num_steps, self.buckets)
        return self._steps[num_steps]

    # ---- vision --------------------------------------------------------------------------------------
    def encode_missing_frames(self, jobs: list[Job]) -> None:
        """Run the tower on frames not seen before; their pixels are dropped once features exist."""
        todo: list[Frame] = list({id(f): f for j in jobs for f in j.frames if f.features is None}.values())
        if not todo:
            return
        if self.resize is not None:  # one resize per frame size, batched over its frames
            sizes: dict[tuple[int, ...], list[Frame]] = {}
            for f in todo:
                sizes.setdefault(f.rgb.shape, []).append(f)
            todo = [f for same in sizes.values() for f in same]
            frames = torch.cat([self.resize(self.upload(torch.from_numpy(np.stack([f.rgb for f in same]))))
                                for same in sizes.values()])
        else:  # resized by the session (Pillow), only normalised here
            frames = self.upload(torch.from_numpy(np.stack([f.rgb for f in todo])))
        with self.autocast():
            feats = self.model.encode_frames(normalize(frames))
        for f, feat in zip(todo, feats):
            # a copy: a view would keep the whole batch's (N, tokens, dim) tensor alive while this frame
            # stays in a session's history (up to max_batch times the memory per idle session)
            f.features, f.rgb = feat.clone(), None

    def upload(self, host: torch.Tensor) -> torch.Tensor:
        """Host tensor -> device. On CUDA through pinned memory, without waiting: a pageable copy
        synchronises the host with the GPU (once per input, N + 4 times a batch before this)."""
        if self.device.type != "cuda":
            return host.to(self.device)
        return host.pin_memory().to(self.device, non_blocking=True)

    # ---- conditioning ----------------------------------------------------------------------------------
    def _vl_row(self, frames: list[Frame], game_id: int | None) -> torch.Tensor:
        """[pad ...] [game] [tokens of each frame]: pad slots stay zero and are never masked."""
        vl = torch.zeros(self.seq_len, self.vl_dim, device=self.device, dtype=torch.float32)
        n = len(frames) * self.tokens_per_frame
        if n:
            vl[self.seq_len - n:] = torch.cat([f.features for f in frames])
        if self.has_game_token and game_id is not None:
            vl[self.seq_len - n - 1] = self.model.game_embedding.weight[game_id]
        return vl

    def prepare(self, jobs: list[Job]) -> BatchInputs:
        """Guided jobs follow the original: no game id in either input; unconditional = newest frame."""
        b = len(jobs)
        row_job, uncond, scale = list(range(b)), list(range(b)), [0.0] * b
        for i, job in enumerate(jobs):
            if job.cfg_scale != 1.0:
                uncond[i], scale[i] = len(row_job), job.cfg_scale
                row_job.append(i)
        # the small inputs go up first, before any GPU work they would otherwise wait behind
        x0 = self.upload(torch.stack([j.noise for j in jobs]))
        row_job_t, uncond_t = self.upload(torch.tensor(row_job)), self.upload(torch.tensor(uncond))
        scale_t = self.upload(torch.tensor(scale, dtype=torch.float32).view(b, 1, 1))
        self.encode_missing_frames(jobs)
        rows = [self._vl_row(j.frames, None if j.cfg_scale != 1.0 else j.game_id) for j in jobs]
        rows += [self._vl_row(jobs[i].frames[-1:], None) for i in row_job[b:]]
        with self.autocast():
            kv = self.model.condition(torch.stack(rows))
        return BatchInputs(x0=x0, kv=kv, row_job=row_job_t, uncond=uncond_t, scale=scale_t)

    # ---- the Euler loop --------------------------------------------------------------------------------
    def denoise(self, inp: BatchInputs, num_steps: int) -> torch.Tensor:
        """x(0) -> x(1); x stays float32 in either precision."""
        steps = self.step_constants(num_steps)
        x, dt, b = inp.x0, 1.0 / num_steps, inp.x0.shape[0]
        with self.autocast():
            for step in steps:
                v_rows = self.model.velocity(x[inp.row_job], step, inp.kv).float()
                v_c = v_rows[:b]
                x = x + dt * (v_c + inp.scale * (v_c - v_rows[inp.uncond]))
        return x
