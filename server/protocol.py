"""The one request codec: both ports' requests become these typed objects, replies come from them.

A frontend only does framing (ZeroMQ envelopes + pickle, or JSON lines + payloads); the fields inside
a request are checked here, once, with error messages that name the field and what it should be.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .images import RESIZE_MODES, EncodedFrame
from .safe_pickle import PickledImage

REQUEST_TYPES = ("predict", "reset", "info")
MAX_SESSION_NAME = 128
MAX_SEED = 2**63 - 1


class RequestError(ValueError):
    """A malformed request; the message names the bad field and what is expected."""


# A frame as a frontend hands it over: undecoded TCP bytes, a numpy array, or a pickled PIL image.
ImageInput = EncodedFrame | np.ndarray | PickledImage | Any


@dataclass(frozen=True)
class PredictRequest:
    image: ImageInput
    seed: int | None = None
    session: str | None = None
    resize_mode: str = "stretch"


@dataclass(frozen=True)
class ResetRequest:
    """Clears the frame buffer; with any of the optional settings, starts a new session with them."""

    session: str | None = None
    cfg_scale: float | None = None
    context_length: int | None = None
    game: str | int | None = None

    @property
    def reconfigures(self) -> bool:
        return self.cfg_scale is not None or self.context_length is not None or self.game is not None


@dataclass(frozen=True)
class InfoRequest:
    session: str | None = None


Request = PredictRequest | ResetRequest | InfoRequest


@dataclass(frozen=True)
class PredictResult:
    pred: dict[str, np.ndarray]
    repeat: int


@dataclass(frozen=True)
class ResetResult:
    pass


@dataclass(frozen=True)
class InfoResult:
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorResult:
    message: str


Response = PredictResult | ResetResult | InfoResult | ErrorResult


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def optional_int(fields: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RequestError(f"'{name}' is {_describe(value)}; expected an integer from {lo} to {hi}")
    value = int(value)
    if not lo <= value <= hi:
        raise RequestError(f"'{name}' is {value}; expected an integer from {lo} to {hi}")
    return value


def _opt_str(fields: Mapping[str, Any], name: str, max_len: int) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise RequestError(f"'{name}' is {_describe(value)}; expected a string of 1 to {max_len} characters")
    return value


def request_type(fields: Any) -> str:
    """The request's `type`, checked; used by frontends before reading any payload."""
    if not isinstance(fields, Mapping):
        raise RequestError(
            f"request is a {type(fields).__name__}; expected a dict/object with a 'type' field"
        )
    kind = fields.get("type")
    if kind not in REQUEST_TYPES:
        raise RequestError(f"'type' is {_describe(kind)}; expected one of {', '.join(REQUEST_TYPES)}")
    return kind


def parse_request(fields: Any, image: ImageInput = None, default_resize: str = "stretch") -> Request:
    """Validate a request's fields (from a pickled dict or a JSON header) into a typed request.

    `image` is the frame for predict: on the ZeroMQ port it is `fields["image"]`, on the TCP port the
    payload that followed the header.
    """
    kind = request_type(fields)
    session = _opt_str(fields, "session", MAX_SESSION_NAME)
    if kind == "info":
        return InfoRequest(session=session)
    if kind == "reset":
        cfg = fields.get("cfg_scale")
        if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, numbers.Real)
                                or not 0.0 <= float(cfg) <= 100.0):
            raise RequestError(f"'cfg_scale' is {_describe(cfg)}; expected a number from 0 to 100")
        game = fields.get("game")
        if game is not None and (isinstance(game, bool) or not isinstance(game, (str, numbers.Integral))):
            raise RequestError(f"'game' is {_describe(game)}; expected a game name or an integer id")
        return ResetRequest(
            session=session,
            cfg_scale=None if cfg is None else float(cfg),
            context_length=optional_int(fields, "context_length", 1, 1024),
            game=int(game) if isinstance(game, numbers.Integral) else game,
        )
    seed = optional_int(fields, "seed", 0, MAX_SEED)
    mode = fields.get("resize_mode", default_resize)
    if mode is None:
        mode = default_resize
    if mode not in RESIZE_MODES:
        raise RequestError(f"'resize_mode' is {_describe(mode)}; expected one of {', '.join(RESIZE_MODES)}")
    if image is None:
        raise RequestError("predict request has no 'image'; expected an H x W x 3 uint8 array or PIL image")
    return PredictRequest(image=image, seed=seed, session=session, resize_mode=mode)


def to_wire_dict(response: Response) -> dict[str, Any]:
    """The reply as the original server's dict (pickled on the ZeroMQ port, JSON on the TCP port)."""
    if isinstance(response, PredictResult):
        return {"status": "ok", "pred": response.pred}
    if isinstance(response, InfoResult):
        return {"status": "ok", "info": response.info}
    if isinstance(response, ResetResult):
        return {"status": "ok"}
    return {"status": "error", "message": response.message}
