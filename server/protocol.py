"""The one request codec: both ports' requests become these typed objects, replies come from them.

A frontend only does framing (ZeroMQ envelopes + pickle, or JSON lines + payloads); the fields inside
a request are checked here, once, with error messages that name the field and what it should be.
A field that is present must hold a valid value: `null`/None is refused like any other wrong value
(leave a field out to get its default).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ClientError, a_or_an, describe
from .images import RESIZE_MODES, EncodedFrame, PickledImage

REQUEST_TYPES = ("predict", "reset", "info")
MAX_NAME = 128  # session and game names
MAX_SEED = 2**63 - 1
MAX_GAME_ID = 2**31 - 1
MAX_CONTEXT = 1024
MAX_STEPS = 1024  # the session then checks against the checkpoint's own step count
# NitroGen holds each predicted action for one game frame: the checkpoint format has no other ratio.
# TCP replies carry it as "repeat" (clients hold each step that many frames); info() reports it too.
ACTION_DOWNSAMPLE_RATIO = 1


class RequestError(ClientError):
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
    steps: int | None = None

    @property
    def reconfigures(self) -> bool:
        return any(v is not None for v in (self.cfg_scale, self.context_length, self.game, self.steps))


@dataclass(frozen=True)
class InfoRequest:
    session: str | None = None


Request = PredictRequest | ResetRequest | InfoRequest


@dataclass(frozen=True)
class PredictResult:
    pred: dict[str, np.ndarray]
    repeat: int = ACTION_DOWNSAMPLE_RATIO
    # the server's own time split in ms: queue_ms (waiting for the engine), infer_ms (its batch),
    # total_ms (request decoded to reply ready); an optional reply key that old clients ignore
    server_timing: dict[str, float] | None = None


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
_ABSENT = object()


def _present(fields: Mapping[str, Any], name: str, expected: str) -> Any:
    """The field's value, or _ABSENT; a present null is refused (it is not "use the default")."""
    value = fields.get(name, _ABSENT)
    if value is None:
        raise RequestError(f"'{name}' is null/None; expected {expected} (leave the field out for the default)")
    return value


def optional_int(fields: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    expected = f"an integer from {lo} to {hi}"
    value = _present(fields, name, expected)
    if value is _ABSENT:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise RequestError(f"'{name}' is {describe(value)}; expected {expected}")
    return int(value)


def _opt_str(fields: Mapping[str, Any], name: str, max_len: int) -> str | None:
    expected = f"a string of 1 to {max_len} characters"
    value = _present(fields, name, expected)
    if value is _ABSENT:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise RequestError(f"'{name}' is {describe(value)}; expected {expected}")
    return value


def _opt_cfg(fields: Mapping[str, Any]) -> float | None:
    expected = "a number from 0 to 100"
    value = _present(fields, "cfg_scale", expected)
    if value is _ABSENT:
        return None
    # compared before any float(): float(10**400) raises, and NaN fails the comparison
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 100:
        raise RequestError(f"'cfg_scale' is {describe(value)}; expected {expected}")
    return float(value)


def _opt_game(fields: Mapping[str, Any]) -> str | int | None:
    expected = f"a game name of 1 to {MAX_NAME} characters or an integer id from 0 to {MAX_GAME_ID}"
    value = _present(fields, "game", expected)
    if value is _ABSENT:
        return None
    if isinstance(value, str) and 1 <= len(value) <= MAX_NAME:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= MAX_GAME_ID:
        return int(value)
    raise RequestError(f"'game' is {describe(value)}; expected {expected}")


def request_type(fields: Any) -> str:
    """The request's `type`, checked; used by frontends before reading any payload."""
    expected = f"one of {', '.join(REQUEST_TYPES)}"
    if not isinstance(fields, Mapping):
        raise RequestError(
            f"request is {a_or_an(type(fields).__name__)}; expected a dict/object with a 'type' field"
        )
    if "type" not in fields:
        raise RequestError(f"request has no 'type'; expected {expected}")
    kind = fields["type"]
    if not isinstance(kind, str) or kind not in REQUEST_TYPES:
        raise RequestError(f"'type' is {describe(kind)}; expected {expected}")
    return kind


def parse_request(fields: Any, image: ImageInput = None, default_resize: str = "stretch") -> Request:
    """Validate a request's fields (from a pickled dict or a JSON header) into a typed request.

    `image` is the frame for predict: on the ZeroMQ port it is `fields["image"]`, on the TCP port the
    payload that followed the header.
    """
    kind = request_type(fields)
    session = _opt_str(fields, "session", MAX_NAME)
    if kind == "info":
        return InfoRequest(session=session)
    if kind == "reset":
        return ResetRequest(session=session, cfg_scale=_opt_cfg(fields),
                            context_length=optional_int(fields, "context_length", 1, MAX_CONTEXT),
                            game=_opt_game(fields), steps=optional_int(fields, "steps", 1, MAX_STEPS))
    seed = optional_int(fields, "seed", 0, MAX_SEED)
    mode = _present(fields, "resize_mode", f"one of {', '.join(RESIZE_MODES)}")
    if mode is _ABSENT:
        mode = default_resize
    if not isinstance(mode, str) or mode not in RESIZE_MODES:
        raise RequestError(f"'resize_mode' is {describe(mode)}; expected one of {', '.join(RESIZE_MODES)}")
    if image is None:
        raise RequestError("predict request has no 'image'; expected an H x W x 3 uint8 array or PIL image")
    return PredictRequest(image=image, seed=seed, session=session, resize_mode=mode)


def to_wire_dict(response: Response) -> dict[str, Any]:
    """The reply as the original server's dict (pickled on the ZeroMQ port, JSON on the TCP port)."""
    if isinstance(response, PredictResult):
        reply: dict[str, Any] = {"status": "ok", "pred": response.pred}
        if response.server_timing is not None:
            reply["server_timing"] = response.server_timing
        return reply
    if isinstance(response, InfoResult):
        return {"status": "ok", "info": response.info}
    if isinstance(response, ResetResult):
        return {"status": "ok"}
    return {"status": "error", "message": response.message}

