"""The inference engine: owns the weights and one worker thread that batches predicts across sessions.

Sessions hand the engine *jobs* (their frame history, noise, cfg scale, game). The worker takes whatever
jobs arrived within ``max_wait_ms`` (at most ``max_batch``), runs them as one forward pass and resolves
each job's future. Batching is exact: every row attends only to its own tokens, so a batched result
equals the unbatched one up to float rounding.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt_io
from .actions import decode_actions
from .cuda_graphs import GraphedDenoiser
from .errors import CheckpointError
from .forward import BatchedForward
from .modeling import CategorySpecificLinear, NitroGenModel, count_parameters
from .options import EngineOptions

logger = logging.getLogger(__name__)

GAME_NONE = 0  # row 0 of the game table is "unconditional"


@dataclass
class Frame:
    """One buffered frame; its vision features are computed once and reused while it stays buffered."""

    rgb: np.ndarray
    features: torch.Tensor | None = None


@dataclass
class Job:
    frames: list[Frame]            # oldest first; only real (non-dropped) frames
    noise: torch.Tensor            # (horizon, action_dim) float32, CPU
    cfg_scale: float
    game_id: int
    future: Future = field(default_factory=Future)


ONEDNN_MIN_WEIGHTS = 256 * 256  # below this the layout conversions cost more than oneDNN saves


class OneDNNLinear(torch.nn.Module):
    """``nn.Linear`` with its weight prepacked for oneDNN (float32, inference only).

    MKL's GEMM reaches ~40% of peak on the DiT's 18-row inputs; oneDNN about twice that. Results
    differ from MKL only in float32 rounding order (2e-7 on the golden vectors).
    """

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


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class InferenceEngine:
    """Weights + the batching worker. Create sessions with :meth:`new_session`."""

    def __init__(self, model: NitroGenModel | Callable[[], NitroGenModel], *, ckpt_path: str,
                 device: str | torch.device | None = None, options: EngineOptions | None = None,
                 old_layout: bool | None = None, game_names: dict[str, int] | None = None) -> None:
        """``model`` may be a factory: building it on the worker thread keeps all kernels there."""
        self.options = options or EngineOptions()
        self.device = pick_device(device)
        self.dtype = torch.bfloat16 if (self.device.type == "cuda" and self.options.dtype != "float32") else torch.float32
        self.ckpt_path = ckpt_path
        self.game_names = dict(game_names or {})
        self._old_layout = old_layout
        self._rng = torch.Generator("cpu")
        self._rng.seed()
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # how batching really behaved
        self._batch_listeners: list[Callable[[int, float], None]] = []
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._closed = False
        # All tensor work, set-up included, happens on the worker thread: kernels run from a second
        # long-lived thread bring a second OpenMP team, which slows the first by ~15% on 2 cores.
        self._setup_error: BaseException | None = None
        self._ready = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(model,), name="nitrogen-inference", daemon=True)
        self._worker.start()
        self._ready.wait()
        if self._setup_error is not None:
            self._closed = True
            raise self._setup_error

    def _setup(self, model: NitroGenModel | Callable[[], NitroGenModel]) -> None:
        """Build/place the model, derive every size from its config, fast paths, warm-up (worker)."""
        if not isinstance(model, NitroGenModel):
            model = model()
        cfg = model.cfg
        self.config = cfg
        self.old_layout = cfg.tokenizer_cfg.old_layout if self._old_layout is None else bool(self._old_layout)
        m = cfg.model_cfg
        self.horizon = m.action_horizon
        self.action_dim = m.action_dim
        self.num_steps = m.num_inference_timesteps
        self.image_size = model.vision_config.image_size
        self.seq_len = cfg.tokenizer_cfg.max_sequence_length
        self.tokens_per_frame = (model.vision_config.image_size // model.vision_config.patch_size) ** 2
        self.has_game_token = model.game_embedding is not None
        self.num_games = model.game_embedding.num_embeddings if model.game_embedding is not None else 0
        self.default_context_length = cfg.modality_cfg.frame_per_sample
        self._check_geometry()
        self.model = model.to(self.device, self.dtype)
        self.weight_bytes = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        self.num_parameters = count_parameters(self.model)
        self.forward = BatchedForward(
            self.model, self.model.step_constants(self.num_steps, m.num_timestep_buckets),
            seq_len=self.seq_len, tokens_per_frame=self.tokens_per_frame, has_game_token=self.has_game_token,
            device=self.device, dtype=self.dtype, gpu_preprocess=self.options.gpu_preprocess is not False)
        if self.options.fuse_qkv:
            self.model.fuse_projections()
        if self.device.type == "cpu" and self.options.cpu_onednn and torch.backends.mkldnn.is_available():
            logger.debug("oneDNN linear layers: %d", to_onednn_linears(self.model))
        self._denoiser = (GraphedDenoiser(self.forward.denoise, capacity=self.options.max_batch)
                          if self.options.cuda_graphs and self.device.type == "cuda" else None)
        if self.options.warmup:
            self._warmup()

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path_or_demo: str | Path, device: str | torch.device | None = None,
                        options: EngineOptions | None = None, old_layout: bool | None = None) -> InferenceEngine:
        """``"demo"`` builds the tiny in-memory model; anything else is a checkpoint path."""
        if str(path_or_demo) == "demo":
            from .demo import build_demo_model

            return cls(build_demo_model, ckpt_path="demo", device=device, options=options,
                       old_layout=old_layout)
        from .weights import ensure_checkpoint

        path = ensure_checkpoint(path_or_demo)
        loaded = ckpt_io.read_checkpoint(path)
        return cls(lambda: ckpt_io.build_model(loaded), ckpt_path=str(path), device=device, options=options,
                   old_layout=old_layout, game_names=loaded.game_names)

    def _check_geometry(self) -> None:
        m = self.config.model_cfg
        mixer_max = m.vl_self_attention_cfg.max_num_positional_embeddings
        dit_max = m.diffusion_model_cfg.max_num_positional_embeddings
        if self.tokens_per_frame != self.config.tokenizer_cfg.num_visual_tokens_per_frame:
            raise CheckpointError(
                f"vision tower makes {self.tokens_per_frame} tokens per frame but the tokenizer expects "
                f"{self.config.tokenizer_cfg.num_visual_tokens_per_frame}")
        if self.seq_len > mixer_max:
            raise CheckpointError(f"max_sequence_length {self.seq_len} exceeds the mixer's positional "
                                  f"table ({mixer_max})")
        if self.horizon > dit_max:
            raise CheckpointError(f"action_horizon {self.horizon} exceeds the DiT's positional table ({dit_max})")
        self.max_context_length = (self.seq_len - int(self.has_game_token)) // self.tokens_per_frame
        if self.max_context_length < 1:
            raise CheckpointError(f"max_sequence_length {self.seq_len} cannot hold one frame "
                                  f"({self.tokens_per_frame} tokens)")

    def new_session(self, context_length: int | None = None, cfg_scale: float = 1.0,
                    game: str | int | None = None):
        """A per-client session sharing these weights (cheap: it owns only its frame buffer)."""
        from .session import InferenceSession

        return InferenceSession(self, context_length=context_length, cfg_scale=cfg_scale, game=game)

    # ---- jobs ------------------------------------------------------------------------------------------
    def make_noise(self, seed: int | None = None, noise: Any = None) -> torch.Tensor:
        """x(0): explicit, from ``seed`` exactly as the original test harness draws it, or random."""
        shape = (self.horizon, self.action_dim)
        if noise is not None:
            t = torch.as_tensor(np.asarray(noise, dtype=np.float32))
            if t.shape == (1, *shape):
                t = t[0]
            if tuple(t.shape) != shape:
                raise ValueError(f"noise has shape {tuple(t.shape)}; expected {shape} (horizon, action_dim)")
            if not torch.isfinite(t).all():
                raise ValueError("noise contains NaN or infinite values")
            return t.contiguous()
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seed must be an integer; got {type(seed).__name__}")
            if not -(2**63) <= int(seed) < 2**64:
                raise ValueError(f"seed {seed} is out of range [-2**63, 2**64)")
            gen = torch.Generator("cpu").manual_seed(int(seed))
            return torch.randn((1, *shape), generator=gen, dtype=torch.float32)[0]
        return torch.randn(shape, generator=self._rng, dtype=torch.float32)

    def queue_depth(self) -> int:
        """Predicts waiting for the worker (not counting the batch running now)."""
        return self._queue.qsize()

    def add_batch_listener(self, listener: Callable[[int, float], None]) -> None:
        """``listener(batch_size, seconds)`` runs on the worker thread after every batch (metrics)."""
        self._batch_listeners.append(listener)

    def submit(self, job: Job) -> Future:
        if self._closed:
            raise RuntimeError("inference engine is closed")
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish queued jobs, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join(timeout=30)

    # ---- the worker ----------------------------------------------------------------------------------
    def _work(self, model: NitroGenModel | Callable[[], NitroGenModel]) -> None:
        try:
            self._setup(model)
        except BaseException as exc:  # noqa: BLE001 - re-raised by __init__ in the caller's thread
            self._setup_error = exc
            return
        finally:
            self._ready.set()
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            deadline = time.perf_counter() + self.options.max_wait_ms / 1000
            while len(batch) < self.options.max_batch:
                timeout = deadline - time.perf_counter()
                try:
                    job = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._run_safely(batch)
            if stop:
                return

    def _run_safely(self, batch: list[Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batch_sizes[len(live)] += 1
        start = time.perf_counter()
        try:
            results = self.run_batch(live)
        except Exception as exc:  # OOM and friends become per-request errors, never a dead worker
            logger.exception("inference failed for a batch of %d", len(live))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            for job in live:
                job.future.set_exception(RuntimeError(f"inference failed: {exc}"))
            return
        seconds = time.perf_counter() - start
        for listener in self._batch_listeners:
            listener(len(live), seconds)
        for job, result in zip(live, results):
            job.future.set_result(result)

    # ---- the computation -------------------------------------------------------------------------------
    @torch.inference_mode()
    def run_batch(self, jobs: list[Job]) -> list[dict[str, np.ndarray]]:
        """One batched predict (see :mod:`nitrogen.forward`); results carry the raw ``action_tensor``."""
        inputs = self.forward.prepare(jobs)
        x = self._denoiser(inputs) if self._denoiser is not None else self.forward.denoise(inputs)
        actions = x.cpu().numpy()
        return [decode_actions(a, self.old_layout) | {"action_tensor": a} for a in actions]

    def _warmup(self) -> None:
        """Load kernels (and on CUDA capture graphs for every batch bucket) before the first client."""
        frame = Frame(np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8))
        start = time.perf_counter()
        sizes = [1]
        if self._denoiser is not None:
            sizes = [1 << k for k in range(self.options.max_batch.bit_length())
                     if 1 << k <= self.options.max_batch]
        for n in sizes:
            for scale in (1.0, 2.0) if self._denoiser is not None else (1.0,):
                self.run_batch([Job([frame], self.make_noise(seed=0), scale, GAME_NONE) for _ in range(n)])
        logger.info("warm-up done in %.2f s (batch sizes %s)", time.perf_counter() - start, sizes)
