"""The one dispatcher: typed requests in, typed responses out, for both ports.

Frontends call `PolicyService.handle(client_key, request)`. Decoding and `session.submit` run on a
small thread pool and inference on the library's worker thread, so the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from .config import ServerSettings
from .images import EncodedFrame, ImageError, apply_resize_mode, array_to_rgb, decode_frame, pil_to_rgb
from .protocol import (
    ErrorResult,
    InfoRequest,
    InfoResult,
    PredictRequest,
    PredictResult,
    Request,
    RequestError,
    ResetRequest,
    ResetResult,
    Response,
)
from .safe_pickle import PickledImage
from .sessions import SessionRegistry

log = logging.getLogger("nitrogen_server.service")
PRED_KEYS = ("j_left", "j_right", "buttons")
RAW_256 = 256 * 256 * 3


def frame_to_rgb(image: Any, max_side: int) -> np.ndarray:
    """Any frame a frontend hands over -> H x W x 3 uint8 RGB, or ImageError saying what is expected."""
    if isinstance(image, EncodedFrame):
        return decode_frame(image, max_side)
    if isinstance(image, np.ndarray):
        return array_to_rgb(image, max_side)
    if isinstance(image, PickledImage):
        return pil_to_rgb(image.to_pil(max_side), max_side)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image, max_side)
    raise ImageError(
        f"'image' is a {type(image).__name__}; expected a numpy uint8 H x W x 3 array or a PIL image"
    )


class PolicyService:
    """predict / reset / info endpoints over per-client sessions of one InferenceEngine."""

    def __init__(self, engine: Any, settings: ServerSettings, workers: int = 4) -> None:
        self.engine = engine
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nitrogen-decode")
        self.sessions = SessionRegistry(self._new_session, settings.session_idle_s, settings.max_sessions)
        self._default_info = self._new_session().info()  # also validates --cfg/--ctx/--game at startup
        self._endpoints: dict[type, Callable[[str, Any], Awaitable[Response]]] = {
            PredictRequest: self.predict,
            ResetRequest: self.reset,
            InfoRequest: self.info,
        }
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # called as on_request(client_key, kind, response, seconds) after every request (server/metrics.py)
        self.on_request: Callable[[str, str, Response, float], None] | None = None
        # with --record, app.py sets this: it queues each predict for writing after the reply (server/recorder.py)
        self.recorder: Any = None

    def _new_session(self, cfg_scale: float | None = None, context_length: int | None = None,
                     game: str | int | None = None) -> Any:
        s = self.settings
        return self.engine.new_session(
            context_length=context_length if context_length is not None else s.ctx,
            cfg_scale=cfg_scale if cfg_scale is not None else s.cfg,
            game=game if game is not None else s.game_arg,
        )

    @property
    def default_info(self) -> dict[str, Any]:
        """info() of a session with the server's default settings (answers clients without a session)."""
        return dict(self._default_info)

    @staticmethod
    def session_key(client_key: str, request: Request) -> str:
        """A request naming a session shares it across connections; otherwise the client's own."""
        return f"named:{request.session}" if request.session else client_key

    async def handle(self, client_key: str, request: Request) -> Response:
        """Run one request; every failure becomes an ErrorResult (never an exception)."""
        key = self.session_key(client_key, request)
        kind = type(request).__name__.removesuffix("Request").lower()
        self._inflight += 1
        self._idle.clear()
        start = time.perf_counter()
        log.debug("%s %s started", key, kind)
        try:
            response = await self._endpoints[type(request)](key, request)
        except (RequestError, ImageError) as exc:
            response = ErrorResult(str(exc))
        except ValueError as exc:  # the library's "bad argument / bad image" errors
            response = ErrorResult(f"{kind} refused: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # inference errors (e.g. out of memory) must not kill the server
            log.exception("%s %s failed", key, kind)
            response = ErrorResult(f"{kind} failed: {type(exc).__name__}: {exc}")
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
        ms = (time.perf_counter() - start) * 1000
        if isinstance(response, ErrorResult):
            log.warning("%s %s -> error (%.1f ms): %s", key, kind, ms, response.message)
        else:
            log.debug("%s %s -> ok (%.1f ms)", key, kind, ms)
        if self.on_request is not None:
            self.on_request(client_key, kind, response, ms / 1000)
        if self.recorder is not None and isinstance(request, PredictRequest):
            self.recorder.submit(client_key, key, request, response, ms / 1000)
        return response

    @staticmethod
    def _cheap_to_prepare(image: Any) -> bool:
        """Arrays and the default raw 256x256 payload need no decoding: skip the thread hop (~0.2 ms)."""
        if isinstance(image, np.ndarray):
            return image.nbytes <= RAW_256
        return isinstance(image, EncodedFrame) and len(image.data) == RAW_256 and image.data[:2] != b"BM"

    def _prepare_and_submit(self, session: Any, request: PredictRequest) -> Future:
        rgb = frame_to_rgb(request.image, self.settings.max_image_side)
        rgb = np.ascontiguousarray(apply_resize_mode(rgb, request.resize_mode))
        return session.submit(rgb, seed=request.seed)

    async def predict(self, key: str, request: PredictRequest) -> Response:
        entry = self.sessions.get_or_create(key)
        async with entry.lock:
            entry = self.sessions.get(key) or entry  # a reset may have replaced it while we waited
            entry.touch()
            if self._cheap_to_prepare(request.image):
                fut = self._prepare_and_submit(entry.session, request)
            else:
                loop = asyncio.get_running_loop()
                fut = await loop.run_in_executor(self._pool, self._prepare_and_submit, entry.session, request)
            pred = await asyncio.wrap_future(fut)
            entry.touch()
        out = {}
        for name in PRED_KEYS:
            arr = np.asarray(pred[name], dtype=np.float32)
            if not np.isfinite(arr).all():
                return ErrorResult(f"the model produced non-finite values in {name}; try reset")
            out[name] = arr
        return PredictResult(out, entry.repeat)

    async def reset(self, key: str, request: ResetRequest) -> Response:
        entry = self.sessions.get(key)
        if request.reconfigures:
            lock = entry.lock if entry is not None else asyncio.Lock()
            async with lock:
                self.sessions.create(key, cfg_scale=request.cfg_scale,
                                     context_length=request.context_length, game=request.game)
            return ResetResult()
        if entry is not None:
            async with entry.lock:
                entry.session.reset()
                entry.touch()
        return ResetResult()

    async def info(self, key: str, request: InfoRequest) -> Response:
        entry = self.sessions.get(key)
        if entry is None:
            return InfoResult(dict(self._default_info))
        entry.touch()
        return InfoResult(entry.session.info())

    def client_closed(self, client_key: str) -> None:
        """A TCP connection ended: its own session goes with it (named sessions stay until idle)."""
        self.sessions.drop(client_key)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is running; False if some still were after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
