"""What both clients share: the interface, the prediction type and reply validation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from .errors import ProtocolError, ServerError
from .wire import BUTTON_NAMES, PRED_WIDTHS, SERVER_TIMING, SERVER_TIMING_KEYS

__all__ = ["BUTTON_NAMES", "WAIT_SLICE_S", "PolicyClient", "Prediction", "check_reply", "parse_prediction", "parse_timing"]

_C = TypeVar("_C", bound="PolicyClient")

WAIT_SLICE_S = 0.1
"""Longest single blocking wait in a client: on Windows a blocked receive cannot be interrupted, so
Ctrl+C takes effect only when the wait returns; waiting in slices keeps that under this."""

Prediction = dict[str, np.ndarray]
"""``{"j_left": (H, 2), "j_right": (H, 2), "buttons": (H, 21)}``, all float32."""


def parse_prediction(pred: Any) -> Prediction:
    """Normalise a reply's ``pred`` (arrays or nested lists) to float32 arrays with checked shapes.

    Both ports must hand the caller the same thing, and a malformed reply should fail here, named,
    rather than deep inside the player.
    """
    if not isinstance(pred, Mapping):
        raise ProtocolError(f"reply 'pred' must be a mapping, got {type(pred).__name__}")
    out: Prediction = {}
    horizon: int | None = None
    for key, width in PRED_WIDTHS.items():
        if key not in pred:
            raise ProtocolError(f"reply 'pred' lacks {key!r}; expected keys {sorted(PRED_WIDTHS)}")
        try:
            arr = np.asarray(pred[key], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"reply 'pred'[{key!r}] is not numeric: {exc}") from exc
        if arr.ndim != 2 or arr.shape[1] != width:
            raise ProtocolError(f"reply 'pred'[{key!r}] has shape {arr.shape}, expected (H, {width})")
        if horizon is not None and arr.shape[0] != horizon:
            raise ProtocolError(f"reply 'pred'[{key!r}] has {arr.shape[0]} steps, others have {horizon}")
        horizon = arr.shape[0]
        out[key] = arr
    return out


def parse_timing(reply: Mapping[str, Any]) -> dict[str, float] | None:
    """The reply's ``server_timing`` ({"queue_ms", "infer_ms", "total_ms"}), or None when the server sent
    none (older servers) or sent something else: a diagnostic must never fail a predict."""
    timing = reply.get(SERVER_TIMING)
    if not isinstance(timing, Mapping):
        return None
    out = {k: float(timing[k]) for k in SERVER_TIMING_KEYS
           if isinstance(timing.get(k), (int, float)) and not isinstance(timing.get(k), bool)}
    return out or None


def check_reply(reply: Any, request_type: str) -> dict[str, Any]:
    """Raise ServerError with the server's message for an error reply; return the reply otherwise."""
    if not isinstance(reply, dict) or "status" not in reply:
        raise ProtocolError(f"reply to {request_type!r} is not a dict with 'status': {str(reply)[:200]!r}")
    if reply["status"] != "ok":
        raise ServerError(str(reply.get("message", "unknown error (no message in reply)")), request_type)
    return reply


class PolicyClient(ABC):
    """One interface over both ports, so the player does not care which one it talks to.

    ``last_timing`` is the server's time split for the last predict (``{"queue_ms", "infer_ms",
    "total_ms"}``), None before the first one or when the server does not report it: it tells the
    network's share of a slow predict from the model's.
    """

    last_timing: dict[str, float] | None = None

    @abstractmethod
    def predict(self, image: Any, seed: int | None = None) -> Prediction:
        """Send one RGB frame (H x W x 3 uint8 array or PIL image); get the next action chunk."""

    @abstractmethod
    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request dict; return the ok reply or raise ServerError with the server's message."""

    def reset(self) -> None:
        """Clear this client's frame history on the server."""
        self.request({"type": "reset"})

    def info(self) -> dict[str, Any]:
        """Session and model facts (``action_downsample_ratio``, ``action_horizon``, ``buttons`` ...)."""
        reply = self.request({"type": "info"})
        if not isinstance(reply.get("info"), dict):
            raise ProtocolError(f"info reply lacks an 'info' dict: keys {sorted(reply)}")
        return reply["info"]

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def __enter__(self: _C) -> _C:  # noqa: PYI019 (typing.Self needs 3.11; we support 3.10)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
