"""The inference engine: owns the weights on one device and a worker thread that batches predicts.

Sessions hand the engine *jobs* (their frame history, noise, cfg scale, game, step count). The worker
takes whatever jobs arrived within ``max_wait_ms`` (at most ``max_batch``), runs them as one forward
pass per step count and resolves each job's future with ``job.finish(x1, timing)``: the engine returns
the raw x(1); decoding belongs to the session. Batching is exact: every row attends only to its own
tokens, so a batched result equals the unbatched one up to float rounding.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cuda_graphs import CAPTURE_LOCK, GraphedDenoiser, GraphShared, warmup_shapes
from .devices import pick_device
from .errors import CheckpointError, EngineFailedError
from .forward import BatchedForward
from .jobs import GAME_NONE, Frame, Job, Timing, make_noise
from .modeling import NitroGenModel, count_parameters
from .onednn import bf16_supported, to_onednn_linears
from .options import EngineOptions
from .precision import cast_matmul_weights, slow_bf16_reason
from .sources import ModelSourceSpec, load_source

logger = logging.getLogger(__name__)

ModelSource = NitroGenModel | Callable[[], NitroGenModel]


class InferenceEngine:
    """Weights + the batching worker on one device. Open sessions with ``InferenceSession(engine)``."""

    def __init__(self, model: ModelSource, *, ckpt_path: str, device: str | torch.device | None = None,
                 options: EngineOptions | None = None, old_layout: bool | None = None,
                 game_names: dict[str, int] | None = None, adapters: Sequence[dict[str, Any]] = ()) -> None:
        """``model`` may be a factory: building it on the worker thread keeps all kernels there."""
        self.options = options or EngineOptions()
        self.device = pick_device(device)
        self.bf16 = (self.options.dtype or ("bfloat16" if self.device.type == "cuda" else "float32")) == "bfloat16"
        self.dtype_name = "bfloat16" if self.bf16 else "float32"
        gpu_pre = self.options.gpu_preprocess
        self.resize_on_device = self.device.type == "cuda" if gpu_pre is None else gpu_pre
        if self.resize_on_device and self.device.type == "mps":
            raise ValueError("gpu_preprocess needs float64 and int64 tensors, which mps lacks; turn it off on mps")
        self.ckpt_path = ckpt_path
        self.index = 0  # this engine's place in an EnginePool
        self.game_names = dict(game_names or {})
        self.adapters = list(adapters)
        self._old_layout = old_layout
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # how batching really behaved
        self._batch_listeners: list[Callable[[int, float], None]] = []
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._closed = False
        self.failure: str | None = None  # why the engine is out of service for good (see _fail)
        self._held: list[Job] = []  # the batch being run, failed too if the worker itself breaks
        self._failure_listeners: list[Callable[[str], None]] = []
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

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path_or_demo: str | Path, device: str | torch.device | None = None,
                        options: EngineOptions | None = None, old_layout: bool | None = None,
                        adapters: Sequence[str | Path] = (), dtype: str | None = None) -> InferenceEngine:
        """``"demo"`` builds the tiny in-memory model; anything else is a checkpoint path.

        ``adapters`` are PEFT LoRA directories merged into the weights once, before any fast path;
        ``dtype`` ("float32" or "bfloat16") overrides ``options.dtype``.
        """
        if dtype is not None:
            options = (options or EngineOptions()).model_copy(update={"dtype": EngineOptions(dtype=dtype).dtype})
        return cls.from_loaded(load_source(path_or_demo, adapters), device, options, old_layout)

    @classmethod
    def from_loaded(cls, source: ModelSourceSpec, device: str | torch.device | None = None,
                    options: EngineOptions | None = None, old_layout: bool | None = None) -> InferenceEngine:
        """An engine from an already read checkpoint (several engines share one read)."""
        return cls(source.factory, ckpt_path=source.path, device=device, options=options,
                   old_layout=old_layout, game_names=source.game_names, adapters=source.adapters)

    def _setup(self, model: ModelSource) -> None:
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
        self.default_steps = self.options.steps or self.num_steps
        if not 1 <= self.default_steps <= self.num_steps:
            raise ValueError(f"steps option {self.default_steps} is outside 1..{self.num_steps} (the checkpoint's "
                             "num_inference_timesteps): fewer steps than the checkpoint's are possible, not more")
        self.image_size = model.vision_config.image_size
        self.seq_len = cfg.tokenizer_cfg.max_sequence_length
        self.tokens_per_frame = (model.vision_config.image_size // model.vision_config.patch_size) ** 2
        self.has_game_token = model.game_embedding is not None
        self.num_games = model.game_embedding.num_embeddings if model.game_embedding is not None else 0
        self.default_context_length = cfg.modality_cfg.frame_per_sample
        self._check_geometry()
        if self.device.type == "cuda" and not self.bf16:
            # float32 means float32: cuDNN would run the patch convolution in TF32 by default
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model.to(self.device, torch.float32)
        self.num_parameters = count_parameters(self.model)
        if self.options.fuse_qkv:
            self.model.fuse_projections()
        if self.bf16:
            logger.debug("bf16 matmul weights: %d layers", cast_matmul_weights(self.model))
            if slow := slow_bf16_reason(self.device):
                logger.warning("bf16 mode on %s: %s; it is here to check the original's GPU numerics, "
                               "use float32 for speed", self.device, slow)
        self.weight_bytes = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        onednn = torch.backends.mkldnn.is_available() and (not self.bf16 or bf16_supported())
        if self.device.type == "cpu" and self.options.cpu_onednn and onednn:  # same weights, repacked
            logger.debug("oneDNN linear layers: %d",
                         to_onednn_linears(self.model, bf16=self.bf16, rows=self._rows_per_call()))
        self.forward = BatchedForward(
            self.model, seq_len=self.seq_len, tokens_per_frame=self.tokens_per_frame,
            has_game_token=self.has_game_token, device=self.device, bf16=self.bf16,
            resize_on_device=self.resize_on_device)
        self._denoisers: dict[int, Callable[[Any], torch.Tensor]] = {}
        self.graphs = GraphShared.for_device(self.device)  # capture stream, pool, arena of this engine
        if self.options.warmup:
            self._warmup()

    def _rows_per_call(self) -> Callable[[str], int]:
        """Rows a layer multiplies per call for one job: the tower a frame's tokens, the mixer and the
        DiT's cross-attention keys/values (fused or not) a VL row, the rest (every Euler step) the horizon."""
        key_values = {f"model.transformer_blocks.{i}.attn1.{name}"
                      for i, blk in enumerate(self.model.model.transformer_blocks) if blk.is_cross
                      for name in ("to_k", "to_v", "to_kv")}

        def rows(layer: str) -> int:
            if layer.startswith("vision_encoder."):
                return self.tokens_per_frame
            if layer.startswith("vl_self_attention_model.") or layer in key_values:
                return self.seq_len
            return self.horizon

        return rows

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

    # ---- jobs ------------------------------------------------------------------------------------------
    def make_noise(self, seed: int | None = None, noise: Any = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """x(0) of this model's shape (see :func:`nitrogen.jobs.make_noise`)."""
        return make_noise((self.horizon, self.action_dim), seed=seed, noise=noise, generator=generator)

    def submit(self, job: Job) -> Any:
        """Queue a job; its future resolves to ``job.finish(x1, timing)``."""
        if self.failure is not None:
            raise EngineFailedError(self.failure)
        if self._closed:
            raise RuntimeError("inference engine is closed")
        self._queue.put(job)
        if self.failure is not None:  # failed meanwhile: the worker may be gone, fail what it left
            self._fail_queued()
        return job.future

    def queue_depth(self) -> int:
        """Predicts waiting for the worker (not counting the batch running now)."""
        return self._queue.qsize()

    def add_batch_listener(self, listener: Callable[[int, float], None]) -> None:
        """``listener(batch_size, seconds)`` runs on the worker thread after every batch (metrics)."""
        self._batch_listeners.append(listener)

    def add_failure_listener(self, listener: Callable[[str], None]) -> None:
        """``listener(reason)`` runs once, on the worker thread, when the engine goes out of service."""
        self._failure_listeners.append(listener)

    @property
    def healthy(self) -> bool:
        """False once the device failed for good or the worker has ended (closed engines included)."""
        return self.failure is None and self._worker.is_alive()

    def close(self) -> None:
        """Finish queued jobs, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._worker.join(timeout=30)

    # ---- the worker ----------------------------------------------------------------------------------
    def _work(self, model: ModelSource) -> None:
        try:
            if self.device.type == "cuda":  # current device of this thread: streams, pools, handles
                torch.cuda.set_device(self.device)
            self._setup(model)
        except BaseException as exc:  # noqa: BLE001 - re-raised by __init__ in the caller's thread
            self._setup_error = exc
            return
        finally:
            self._ready.set()
        try:
            self._serve_queue()
        except BaseException as exc:  # noqa: BLE001 - a bug: never a silent dead worker
            self._fail(f"the inference worker stopped: {type(exc).__name__}: {exc}", self._held)

    def _serve_queue(self) -> None:
        while self.failure is None:
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
            self._held = batch
            self._run_safely(batch)
            self._held = []
            del batch, first  # an idle worker must not keep the last jobs' sessions (and features) alive
            job = None
            if stop:
                self._fail_queued()  # submitted behind close(): never left waiting
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
            lost = self._device_lost(exc)
            if lost:
                self._fail(f"device {self.device} failed: {type(exc).__name__}: {exc} ({lost})", live)
                return
            for job in live:
                job.future.set_exception(RuntimeError(f"inference failed: {exc}"))
            return
        end = time.perf_counter()
        for listener in self._batch_listeners:
            try:
                listener(len(live), end - start)
            except Exception:  # a metrics hook must never stop the worker
                logger.exception("batch listener %r failed", listener)
        for job, x1 in zip(live, results):
            timing = Timing(queue_ms=(start - job.submitted) * 1000, infer_ms=(end - start) * 1000)
            try:
                job.future.set_result(job.finish(x1, timing))
            except Exception as exc:  # noqa: BLE001 - a failing finish is that job's error alone
                job.future.set_exception(exc)

    def _device_lost(self, exc: Exception) -> str | None:
        """Why the device cannot run another batch after ``exc``, or None when it can.

        A CUDA error such as an illegal address or a device-side assert poisons the context: every later
        call fails the same way, ``empty_cache`` included, so retrying would hang or fail every request.
        """
        if isinstance(exc, torch.AcceleratorError):
            return "an accelerator error leaves the device context unusable"
        if self.device.type != "cuda":
            return None
        try:
            torch.cuda.synchronize(self.device)
            with CAPTURE_LOCK:  # empty_cache asserts that no engine is capturing a graph right now
                torch.cuda.empty_cache()
        except Exception as probe:  # noqa: BLE001 - any failure here means the context is gone
            return f"the device no longer responds: {type(probe).__name__}: {probe}"
        return None

    def _fail(self, reason: str, held: Sequence[Job] = ()) -> None:
        """Out of service for good: fail the jobs held and queued, refuse new ones, tell the listeners."""
        if self.failure is None:
            self.failure = f"engine {self.index} ({self.device}) is out of service: {reason}; restart the server"
            logger.error("%s", self.failure)
        for job in held:
            if not job.future.done():
                job.future.set_exception(EngineFailedError(self.failure))
        self._fail_queued()
        for listener in self._failure_listeners:
            try:
                listener(self.failure)
            except Exception:
                logger.exception("failure listener %r failed", listener)

    def _fail_queued(self) -> None:
        """Resolve every job still queued with an error: the worker will not run them."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(EngineFailedError(self.failure) if self.failure is not None
                                         else RuntimeError("inference engine is closed"))

    # ---- the computation -------------------------------------------------------------------------------
    def _denoiser(self, num_steps: int) -> Callable[[Any], torch.Tensor]:
        """The Euler loop for ``num_steps`` steps: a CUDA-graph replayer on CUDA, else eager."""
        if num_steps not in self._denoisers:
            eager = functools.partial(self.forward.denoise, num_steps=num_steps)
            self.forward.step_constants(num_steps)  # made before any capture
            use_graphs = self.options.cuda_graphs and self.device.type == "cuda"
            self._denoisers[num_steps] = (GraphedDenoiser(eager, capacity=self.options.max_batch,
                                                          shared=self.graphs, steps=num_steps)
                                          if use_graphs else eager)
        return self._denoisers[num_steps]

    @torch.inference_mode()
    def run_batch(self, jobs: list[Job]) -> list[np.ndarray]:
        """x(1) (horizon, action_dim) float32 per job; one forward pass per distinct step count."""
        out: list[np.ndarray | None] = [None] * len(jobs)
        by_steps: dict[int, list[int]] = collections.defaultdict(list)
        for i, job in enumerate(jobs):
            by_steps[job.steps].append(i)
        for steps, idx in by_steps.items():
            group = [jobs[i] for i in idx]
            x = self._denoiser(steps)(self.forward.prepare(group)).cpu().numpy()
            for i, row in zip(idx, x):
                out[i] = row
        return out  # type: ignore[return-value]

    def warmup_batches(self) -> list[tuple[int, int]]:
        """(jobs, guided jobs) of the warm-up batches: on CUDA one per graph bucket of the default step
        count, so that nothing is captured while serving it; elsewhere one batch loads the kernels."""
        if not (self.options.cuda_graphs and self.device.type == "cuda"):
            return [(1, 0)]
        return warmup_shapes(self.options.max_batch)

    def _warmup(self) -> None:
        """Load kernels (and on CUDA capture graphs for every batch bucket) before the first client."""
        start = time.perf_counter()
        image = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        batches = self.warmup_batches()
        for n, guided in batches:
            frame = Frame(image)  # one frame for the whole batch: the tower runs once
            self.run_batch([Job([frame], self.make_noise(seed=0), 2.0 if i < guided else 1.0, GAME_NONE,
                                self.default_steps) for i in range(n)])
        logger.info("warm-up done in %.2f s (%d batches, %d CUDA graphs)", time.perf_counter() - start,
                    len(batches), len(self.graphs.captured))
