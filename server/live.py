"""What the live view shows: per session, the last frame a predict carried and the reply it got.

`LiveSessions.submit` runs on the event loop after every predict (PolicyService.handle) and only
keeps references: no decoding, no copying, no rendering. The HTTP thread (server/http_view.py) reads
from here. Memory stays bounded: one frame and one reply per session, sessions only while the
registry holds them, and at most `max_frame_bytes` of frames in all (the oldest sessions' frames go
first; their row stays, without a picture).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .images import EncodedFrame, frame_to_rgb, model_view
from .protocol import PredictRequest, PredictResult
from .sessions import SessionRegistry

MAX_FRAME_BYTES = 64 << 20


@dataclass(slots=True)
class LastPredict:
    """One session's latest predict, as the request and the reply left it (nothing decoded); replaced,
    never changed, once stored (not frozen: that costs the event loop a few µs more per predict)."""

    id: int  # the session's number in URLs: a key is client-chosen text, never put in a path
    key: str
    seq: int  # predicts answered on this session so far
    shown: int  # the predict whose frame and reply these are (a failed predict keeps the last good one)
    image: Any  # its frame (TCP bytes, an array or a pickled PIL image); None once evicted
    resize_mode: str
    pred: dict[str, np.ndarray]
    server_timing: dict[str, float] | None
    error: str | None  # the last predict's error, if it failed
    at: float  # time.time() of the last reply

    @property
    def nbytes(self) -> int:
        if isinstance(self.image, EncodedFrame):
            return len(self.image.data)
        return int(getattr(self.image, "nbytes", 0) or (1 << 20 if self.image is not None else 0))


class LiveSessions:
    """The last predict per session; written from the event loop, read from any thread."""

    def __init__(self, registry: SessionRegistry, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._registry = registry
        self._max_bytes = max_frame_bytes
        self._lock = threading.Lock()
        self._last: OrderedDict[str, LastPredict] = OrderedDict()  # oldest update first
        self._ids = itertools.count(1)
        self._frame_bytes = 0
        self.version = 0
        # called (with no arguments, on the event loop thread) after each change; the HTTP view sets it
        self.on_change: Callable[[], None] | None = None

    def submit(self, key: str, request: PredictRequest, response: Any) -> None:
        """Keep this predict as the session's latest (O(1), on the event loop: references only)."""
        with self._lock:
            old = self._last.pop(key, None)
            if old is not None:
                self._frame_bytes -= old.nbytes
            seq = (old.seq if old else 0) + 1
            if isinstance(response, PredictResult):
                entry = LastPredict(old.id if old else next(self._ids), key, seq, seq, request.image,
                                    request.resize_mode, response.pred, response.server_timing, None, time.time())
            elif old is not None:
                entry = replace(old, seq=seq, error=getattr(response, "message", "error"), at=time.time())
            else:
                return  # nothing to show yet
            self._last[key] = entry
            self._frame_bytes += entry.nbytes
            if self._frame_bytes > self._max_bytes or len(self._last) > 2 * self._registry.max_sessions:
                self._trim_locked()
            self.version += 1
        if self.on_change is not None:
            self.on_change()

    def _trim_locked(self) -> None:
        """Forget sessions the registry dropped, then the oldest frames until under the byte cap."""
        for key in [k for k in self._last if self._registry.get(k) is None]:
            self._frame_bytes -= self._last.pop(key).nbytes
        for key, entry in self._last.items():
            if self._frame_bytes <= self._max_bytes:
                break
            if entry.image is not None:
                self._frame_bytes -= entry.nbytes
                self._last[key] = replace(entry, image=None)

    def last(self, session_id: int) -> LastPredict | None:
        """The latest predict of the session with this URL number, if the registry still holds it."""
        with self._lock:
            found = next((e for e in self._last.values() if e.id == session_id), None)
        return found if found is not None and self._registry.get(found.key) is not None else None

    def listing(self) -> list[dict[str, Any]]:
        """Every session the registry holds, with its latest predict: what /api/sessions returns."""
        now = time.monotonic()
        with self._lock:
            last = dict(self._last)
        rows = []
        for entry in self._registry.entries():
            session, seen = entry.session, last.get(entry.key)
            engine = session.engine
            rows.append({
                "key": entry.key, "id": seen.id if seen else None, "engine": engine.index,
                "device": str(engine.device), "predicts": seen.seq if seen else 0,
                "cfg": session.cfg_scale, "steps": session.steps, "context_length": session.context_length,
                "server_timing": seen.server_timing if seen else None,
                "error": seen.error if seen else None,
                "idle_s": round(max(0.0, now - entry.last_used), 3),
                "last_predict_at": seen.at if seen else None,
                "frame": f"/frame/{seen.id}.jpg?seq={seen.shown}" if seen and seen.image is not None else None,
            })
        return rows


def render_last(entry: LastPredict, max_image_side: int, side: int = 360) -> Any:
    """The session's last frame as the model saw it, with the overlay of its reply (a PIL image).

    Slow (decode, resize, draw: ~20 ms): for the live view's render thread, never the event loop.
    """
    from nitrogen_client.overlay import render_overlay  # the client package: pip install ./clients/python

    if entry.image is None:
        raise ValueError(f"session {entry.key}: its frame was not kept (the live view's memory cap)")
    seen = model_view(frame_to_rgb(entry.image, max_image_side), entry.resize_mode)
    return render_overlay(seen, entry.pred, step=entry.shown, server_timing=entry.server_timing,
                          size=(side, side), title=entry.key[:40])
