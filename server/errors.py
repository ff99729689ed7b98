"""How a failed request becomes its reply: the one mapping from an exception to a short error message.

Every request either succeeds or gets `{"status": "error", "message": ...}`; nothing a client sends
may leave a request unanswered. `error_reply` is the only place that turns an exception into that
message: a client's mistake (ClientError, the library's ValueError/FrameError) keeps its message,
anything else is the server's fault and is logged with a traceback. Messages quote client values
only through `describe`, which never builds a long string (huge integers, deep nesting, megabyte
strings) and never raises.
"""

from __future__ import annotations

import logging
import reprlib
from typing import Any

import numpy as np

MAX_MESSAGE_CHARS = 300  # whole error message
MAX_VALUE_CHARS = 60  # one quoted client value inside it
MAX_INT_DIGITS = 40  # larger integers are described by their size, never converted to decimal


class ClientError(ValueError):
    """A request the server refuses; the message names what was wrong and what is accepted."""


class _Short(reprlib.Repr):
    """reprlib with bounded output for every type a request can hold (bytes, huge ints, arrays)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxdict, self.maxlist, self.maxtuple = 2, 3, 4, 4
        self.maxset = self.maxfrozenset = 4
        self.maxstring = self.maxother = self.maxlong = MAX_VALUE_CHARS - 10

    def repr_int(self, x: int, level: int) -> str:
        # str() of a 5,000-digit int raises (the digit limit) and costs quadratic time below it
        if x.bit_length() > MAX_INT_DIGITS * 3.32:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[: self.maxstring]) + ("..." if len(x) > self.maxstring else "")

    def repr_bytearray(self, x: bytearray, level: int) -> str:
        return f"bytearray({self.repr_bytes(bytes(x[: self.maxstring + 1]), level)})"

    def repr_ndarray(self, x: np.ndarray, level: int) -> str:
        return f"<array of shape {x.shape} and dtype {x.dtype.str}>"

    def repr_instance(self, x: Any, level: int) -> str:
        if isinstance(x, _SAFE_REPR):
            return repr(x)
        # never any other object's own __repr__: it could be anything; records may name themselves
        return getattr(type(x), "DESCRIPTION", None) or f"<{type(x).__name__}>"


_SAFE_REPR = (float, complex, bool, type(None), np.generic, np.dtype)


_SHORT = _Short()


def describe(value: Any) -> str:
    """A client value as it may appear in an error message: at most MAX_VALUE_CHARS characters."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - a description must never fail
        text = f"<{type(value).__name__}>"
    return abbreviate(text, MAX_VALUE_CHARS)


def abbreviate(text: str, limit: int) -> str:
    """`text`, cut in the middle with '...' if longer than `limit` (both ends usually matter)."""
    if len(text) <= limit:
        return text
    head = (limit - 3) * 2 // 3
    return text[:head] + "..." + text[len(text) - (limit - 3 - head):]


def a_or_an(name: str) -> str:
    """'a list', 'an int', 'a UInt8DType': for messages that name a type."""
    return ("an " if name[:1].lower() in "aeio" else "a ") + name


def error_message(exc: BaseException, doing: str) -> tuple[str, bool]:
    """(message for the client, whether it is the client's fault) for an exception raised while
    serving a request; `doing` is what was being done ("predict", "reset", "request"...)."""
    from nitrogen.frames import FrameError  # torch-free

    try:
        if isinstance(exc, (ClientError, FrameError)):
            return abbreviate(str(exc), MAX_MESSAGE_CHARS), True
        if isinstance(exc, ValueError):  # the library refusing an argument (a game, a context length)
            return abbreviate(f"{doing} refused: {exc}", MAX_MESSAGE_CHARS), True
        return abbreviate(f"{doing} failed: {type(exc).__name__}: {exc}", MAX_MESSAGE_CHARS), False
    except Exception:  # noqa: BLE001 - str(exc) itself failed; still answer
        return f"{doing} failed: {type(exc).__name__}", False


def log_failure(log: logging.Logger, who: str, doing: str, exc: BaseException) -> str:
    """The message for `exc` (see error_message), logged: a WARNING for a client's mistake, an ERROR
    with a traceback for the server's own."""
    message, clients_fault = error_message(exc, doing)
    if clients_fault:
        log.warning("%s %s -> error: %s", who, doing, message)
    else:
        log.error("%s %s failed", who, doing, exc_info=(type(exc), exc, exc.__traceback__))
    return message
