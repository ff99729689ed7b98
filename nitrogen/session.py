"""A per-client inference session: frame history, cfg scale, game and step count over a shared engine."""

from __future__ import annotations

import math
import threading
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .actions import BUTTON_NAMES, decode_actions
from .engine import InferenceEngine
from .frames import to_rgb_array
from .jobs import GAME_NONE, Frame, Job, Timing
from .options import EngineOptions
from .preprocess import resize_rgb


class InferenceSession:
    """One client's state. Cheap to create: the weights live in the shared :class:`InferenceEngine`."""

    def __init__(self, engine: InferenceEngine, context_length: int | None = None, cfg_scale: float = 1.0,
                 game: str | int | None = None, steps: int | None = None) -> None:
        self.engine = engine
        ctx = engine.default_context_length if context_length is None else context_length
        if isinstance(ctx, bool) or not isinstance(ctx, int) or not 1 <= ctx <= engine.max_context_length:
            raise ValueError(f"context_length must be an integer in [1, {engine.max_context_length}] "
                             f"(max_sequence_length {engine.seq_len} / {engine.tokens_per_frame} tokens "
                             f"per frame); got {context_length!r}")
        try:
            scale = float(cfg_scale)
        except (TypeError, ValueError):
            raise ValueError(f"cfg_scale must be a number; got {cfg_scale!r}") from None
        if not math.isfinite(scale):
            raise ValueError(f"cfg_scale must be finite; got {cfg_scale!r}")
        n = engine.default_steps if steps is None else steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= engine.num_steps:
            raise ValueError(f"steps must be an integer in [1, {engine.num_steps}] (the checkpoint's "
                             f"num_inference_timesteps); got {steps!r}")
        self.context_length = ctx
        self.cfg_scale = scale
        self.steps = n
        self.game_id, self.selected_game = self._resolve_game(game)
        self._frames: deque[Frame] = deque(maxlen=ctx)
        self._lock = threading.Lock()
        self._rng = torch.Generator("cpu")
        self._rng.seed()

    @classmethod
    def from_checkpoint(cls, path_or_demo: str | Path = "models/ng.pt", device: str | None = None,
                        context_length: int | None = None, cfg_scale: float = 1.0,
                        game: str | int | None = None, options: EngineOptions | None = None,
                        old_layout: bool | None = None, steps: int | None = None,
                        dtype: str | None = None, adapters: tuple[str | Path, ...] = ()) -> InferenceSession:
        """Load a checkpoint (or ``"demo"``) into a private engine and open one session on it."""
        engine = InferenceEngine.from_checkpoint(path_or_demo, device=device, options=options,
                                                 old_layout=old_layout, adapters=adapters, dtype=dtype)
        return cls(engine, context_length=context_length, cfg_scale=cfg_scale, game=game, steps=steps)

    def _resolve_game(self, game: str | int | None) -> tuple[int, str | None]:
        if game is None:
            return GAME_NONE, None
        engine = self.engine
        if not engine.has_game_token:
            raise ValueError(f"game {game!r} requested, but this checkpoint has no game conditioning "
                             "(no game mapping); leave the game unset")
        names = engine.game_names
        if isinstance(game, str) and game in names:
            return names[game], game
        if isinstance(game, str) and game.strip().isdigit():
            game = int(game)
        if isinstance(game, int) and not isinstance(game, bool) and 0 <= game < engine.num_games:
            by_id = {v: k for k, v in names.items()}
            return game, by_id.get(game, str(game))
        known = ", ".join(f"{n} ({i})" for n, i in sorted(names.items(), key=lambda kv: kv[1]))
        raise ValueError(f"unknown game {game!r}; known games: {known or 'none by name'}; "
                         f"ids 0..{engine.num_games - 1} (0 = unconditional)")

    # ---- the API ---------------------------------------------------------------------------------------
    def _decode(self, x1: np.ndarray, timing: Timing) -> dict[str, np.ndarray]:
        return decode_actions(x1, self.engine.old_layout)

    def _decode_timed(self, x1: np.ndarray, timing: Timing) -> tuple[dict[str, np.ndarray], Timing]:
        return decode_actions(x1, self.engine.old_layout), timing

    def _enqueue(self, image: Any, seed: int | None, noise: Any, finish: Any) -> Future:
        """The frame joins the history now (validated first), so call order is buffer order.

        Unless the engine resizes on its device, Pillow resizes here, on the caller's thread (a server's
        decode pool), and only the model-size frame is kept.
        """
        rgb = to_rgb_array(image)
        if not self.engine.resize_on_device:
            rgb = np.ascontiguousarray(resize_rgb(rgb, self.engine.image_size))
        x0 = self.engine.make_noise(seed=seed, noise=noise, generator=self._rng)
        with self._lock:
            self._frames.append(Frame(rgb))
            job = Job(list(self._frames), x0, self.cfg_scale, self.game_id, self.steps, finish)
        return self.engine.submit(job)

    def submit(self, image: Any, seed: int | None = None, noise: Any = None) -> Future:
        """Queue a predict; the future resolves to the same dict :meth:`predict` returns."""
        return self._enqueue(image, seed, noise, self._decode)

    def submit_timed(self, image: Any, seed: int | None = None, noise: Any = None) -> Future:
        """Like :meth:`submit`, resolving to ``(pred, Timing)``: how long it queued and ran."""
        return self._enqueue(image, seed, noise, self._decode_timed)

    def submit_raw(self, image: Any, seed: int | None = None, noise: Any = None) -> Future:
        """Like :meth:`submit`, resolving to x(1) before decoding (parity checks)."""
        return self._enqueue(image, seed, noise, lambda x1, _timing: x1)

    def predict(self, image: Any, seed: int | None = None, noise: Any = None) -> dict[str, np.ndarray]:
        """Blocking predict: ``{"j_left": (H, 2), "j_right": (H, 2), "buttons": (H, 21)}`` float32."""
        return self.submit(image, seed=seed, noise=noise).result()

    def predict_raw(self, image: Any, seed: int | None = None, noise: Any = None) -> np.ndarray:
        """x(1) before decoding, (horizon, action_dim): for parity checks against the original."""
        return self.submit_raw(image, seed, noise).result()

    def reset(self) -> None:
        """Forget the frame history (a new episode)."""
        with self._lock:
            self._frames.clear()

    def info(self) -> dict[str, Any]:
        e = self.engine
        return {
            "ckpt_path": e.ckpt_path,
            "selected_game": self.selected_game,
            "old_layout": e.old_layout,
            "cfg_scale": self.cfg_scale,
            "context_length": self.context_length,
            "action_interleaving": e.config.modality_cfg.action_interleaving,
            "is_flowmatching": True,
            "action_downsample_ratio": 1,
            "action_horizon": e.horizon,
            "action_dim": e.action_dim,
            "buttons": list(BUTTON_NAMES),
            "device": str(e.device),
            "engine": e.index,
            "dtype": e.dtype_name,
            "num_inference_timesteps": self.steps,
            "checkpoint_timesteps": e.num_steps,
            "image_size": e.image_size,
            "adapters": list(e.adapters),
        }
