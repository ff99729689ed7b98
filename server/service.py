"""The one dispatcher: requests in, typed responses out, for both ports.

Frontends call `PolicyService.handle(client_key, decode)` with a function that turns what they read
into a typed request; everything from decoding to the reply happens under one `try`, and any
exception becomes an error reply through `errors.log_failure` (the only place that words them).
Decoding runs on a small thread pool, images whose decode is heavy on a one-thread lane of their own
(so they cannot hold up other clients' frames), inference on the library's worker thread: the event
loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .config import ServerSettings
from .errors import log_failure
from .images import (
    RAW_FRAME_BYTES,
    EncodedFrame,
    PendingDecode,
    apply_resize_mode,
    is_encoded,
    prepare_frame,
)
from .protocol import (
    ErrorResult,
    InfoRequest,
    InfoResult,
    PredictRequest,
    PredictResult,
    Request,
    ResetRequest,
    ResetResult,
    Response,
)
from .sessions import SessionRegistry

__all__ = ["PolicyService"]
log = logging.getLogger("nitrogen_server.service")
PRED_KEYS = ("j_left", "j_right", "buttons")
KINDS = {PredictRequest: "predict", ResetRequest: "reset", InfoRequest: "info"}
Decoder = Callable[[], Request]


class PolicyService:
    """predict / reset / info endpoints over per-client sessions of one InferenceEngine."""

    def __init__(self, engine: Any, settings: ServerSettings, workers: int = 4) -> None:
        self.engine = engine
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nitrogen-decode")
        # heavy image decodes (images.LIGHT_WORK) wait for this one thread, in arrival order
        self._heavy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nitrogen-decode-heavy")
        self.sessions = SessionRegistry(self._new_session, settings.session_idle_s, settings.max_sessions)
        self._default_info = self._new_session().info()  # also validates --cfg/--ctx/--game at startup
        self._endpoints: dict[type, Callable[[str, Any], Awaitable[Response]]] = {
            PredictRequest: self.predict,
            ResetRequest: self.reset,
            InfoRequest: self.info,
        }
        # called as on_request(client_key, kind, response, seconds) after every request (server/metrics.py)
        self.on_request: Callable[[str, str, Response, float], None] | None = None
        # app.py sets this: None while every part of the server can answer, else why not (server/supervisor.py)
        self.health: Callable[[], str | None] | None = None
        # with --record, app.py sets this: it queues each predict for writing after the reply (server/recorder.py)
        self.recorder: Any = None
        # with --http-port, app.py sets this: the live view's last frame and reply per session (server/live.py)
        self.live: Any = None

    def _new_session(self, cfg_scale: float | None = None, context_length: int | None = None,
                     game: str | int | None = None, steps: int | None = None) -> Any:
        s = self.settings
        return self.engine.new_session(
            context_length=context_length if context_length is not None else s.ctx,
            cfg_scale=cfg_scale if cfg_scale is not None else s.cfg,
            game=game if game is not None else s.game_arg,
            steps=steps,  # None: the engine's default (--steps, else the checkpoint's)
        )

    @property
    def default_info(self) -> dict[str, Any]:
        """info() of a session with the server's default settings (answers clients without a session)."""
        return dict(self._default_info)

    @staticmethod
    def session_key(client_key: str, request: Request) -> str:
        """A request naming a session shares it across connections; otherwise the client's own."""
        return f"named:{request.session}" if request.session else client_key

    async def handle(self, client_key: str, decode: Decoder | Request, in_pool: bool = False) -> Response:
        """Decode (in the pool if `in_pool`) and run one request; every failure, from a malformed
        message to an inference error, becomes an ErrorResult: this never raises."""
        key, kind, request = client_key, "request", None
        start = time.perf_counter()
        try:
            if not callable(decode):
                request = decode
            elif in_pool:
                request = await asyncio.get_running_loop().run_in_executor(self._pool, decode)
            else:
                request = decode()
            key, kind = self.session_key(client_key, request), KINDS[type(request)]
            log.debug("%s %s started", key, kind)
            response = await self._endpoints[type(request)](key, request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every request gets a reply; log_failure sorts out whose fault
            response = ErrorResult(log_failure(log, key, kind, exc))
        ms = (time.perf_counter() - start) * 1000
        if isinstance(response, PredictResult) and response.server_timing is not None:
            response = dataclasses.replace(response, server_timing={**response.server_timing, "total_ms": ms})
        if not isinstance(response, ErrorResult):
            log.debug("%s %s -> ok (%.1f ms)", key, kind, ms)
        if self.on_request is not None:
            self.on_request(client_key, kind, response, ms / 1000)
        if self.recorder is not None and isinstance(request, PredictRequest):
            self.recorder.submit(client_key, key, request, response, ms / 1000)
        if self.live is not None and isinstance(request, PredictRequest):
            self.live.submit(key, request, response)
        return response

    @staticmethod
    def _cheap_to_prepare(image: Any) -> bool:
        """Arrays and the default raw 256x256 payload need no decoding: skip the thread hop (~0.2 ms)."""
        if isinstance(image, np.ndarray):
            return image.nbytes <= RAW_FRAME_BYTES
        return isinstance(image, EncodedFrame) and len(image.data) == RAW_FRAME_BYTES and not is_encoded(image.data)

    def _prepare_and_submit(self, session: Any, request: PredictRequest) -> Future | PendingDecode:
        """Frame -> RGB -> square -> session.submit; a heavy image comes back undecoded instead."""
        prepared = prepare_frame(request.image, self.settings.max_image_side)
        if isinstance(prepared, PendingDecode):
            return prepared
        return self._submit(session, prepared, request)

    def _decode_and_submit(self, session: Any, pending: PendingDecode, request: PredictRequest) -> Future:
        return self._submit(session, pending.decode(), request)

    @staticmethod
    def _submit(session: Any, rgb: np.ndarray, request: PredictRequest) -> Future:
        return session.submit_timed(np.ascontiguousarray(apply_resize_mode(rgb, request.resize_mode)),
                                    seed=request.seed)

    async def predict(self, key: str, request: PredictRequest) -> Response:
        entry = self.sessions.get_or_create(key)
        loop = asyncio.get_running_loop()
        async with entry.lock:
            entry = self.sessions.get(key) or entry  # a reset may have replaced it while we waited
            entry.touch()
            if self._cheap_to_prepare(request.image):
                fut = self._prepare_and_submit(entry.session, request)
            else:
                fut = await loop.run_in_executor(self._pool, self._prepare_and_submit, entry.session, request)
            if isinstance(fut, PendingDecode):
                fut = await loop.run_in_executor(self._heavy, self._decode_and_submit, entry.session, fut, request)
            pred, timing = await asyncio.wrap_future(fut)
            entry.touch()
        out = {}
        for name in PRED_KEYS:
            arr = np.asarray(pred[name], dtype=np.float32)
            if not np.isfinite(arr).all():
                return ErrorResult(f"the model produced non-finite values in {name}; try reset")
            out[name] = arr
        return PredictResult(out, server_timing={"queue_ms": timing.queue_ms, "infer_ms": timing.infer_ms})

    async def reset(self, key: str, request: ResetRequest) -> Response:
        entry = self.sessions.get(key)
        if request.reconfigures:
            lock = entry.lock if entry is not None else asyncio.Lock()
            async with lock:
                self.sessions.create(key, cfg_scale=request.cfg_scale, context_length=request.context_length,
                                     game=request.game, steps=request.steps)
            return ResetResult()
        if entry is not None:
            async with entry.lock:
                entry.session.reset()
                entry.touch()
        return ResetResult()

    async def info(self, key: str, request: InfoRequest) -> Response:
        problem = self.health() if self.health is not None else None
        if problem:  # what the health check asks: never "ok" while a part cannot answer a predict
            return ErrorResult(f"server unhealthy: {problem}")
        entry = self.sessions.get(key)
        if entry is None:
            return InfoResult(dict(self._default_info))
        entry.touch()
        return InfoResult(entry.session.info())

    def client_closed(self, client_key: str) -> None:
        """A connection ended: its own session goes with it (named sessions stay until idle)."""
        self.sessions.drop(client_key)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._heavy.shutdown(wait=False, cancel_futures=True)
