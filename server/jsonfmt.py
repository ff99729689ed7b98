"""JSON lines for the TCP port, written so that the simplest clients can read them.

Existing Lua clients pick numbers out with a pattern and read the reply in one 4 KiB recv, so: no
exponent notation anywhere, buttons as 0/1, sticks with at most 4 decimals, no spaces.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .protocol import ErrorResult, PredictResult, Response, to_wire_dict

STICK_DECIMALS = 4


def format_number(value: float, decimals: int | None = None) -> str:
    """A float as a JSON number without exponent; `decimals` rounds (trailing zeros dropped)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"cannot write non-finite number {value} as JSON")
    if decimals is not None:
        text = f"{value:.{decimals}f}"
    else:
        text = repr(value)
        if "e" in text or "E" in text:
            text = np.format_float_positional(value, trim="-")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "", "-"):
        text = "0"
    return text


def encode_value(value: Any) -> str:
    """Generic JSON encoder with exponent-free floats (used for info and error replies)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return "null" if value is None else ("true" if value else "false")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_number(value) if math.isfinite(float(value)) else "null"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, np.ndarray):
        return encode_value(value.tolist())
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _stick_number(value: float) -> str:
    """format_number(value, STICK_DECIMALS) for a finite value, inlined: it runs 4H times per reply."""
    text = f"{value:.{STICK_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "", "-") else text


def _sticks(arr: np.ndarray) -> str:
    rows = (f"[{_stick_number(x)},{_stick_number(y)}]" for x, y in arr.tolist())
    return "[" + ",".join(rows) + "]"


def _buttons(arr: np.ndarray) -> str:
    """Rows of 0/1 built as one byte array: [d,d,...,d], with no per-value Python work."""
    h, w = arr.shape
    if h == 0 or w == 0:
        return "[" + ",".join("[]" for _ in range(h)) + "]"
    out = np.full((h, 2 * w + 2), ord(","), dtype=np.uint8)  # "[" + w digits and w-1 commas + "]" + ","
    out[:, 0], out[:, 2 * w] = ord("["), ord("]")
    out[:, 1:2 * w:2] = np.where(arr > 0.5, ord("1"), ord("0"))
    return "[" + out.tobytes()[:-1].decode("ascii") + "]"


def _timing(timing: dict[str, float] | None) -> str:
    """',"server_timing":{...}' in ms with at most 3 decimals, or nothing."""
    if timing is None:
        return ""
    return ',"server_timing":{' + ",".join(f'"{k}":{format_number(v, 3)}' for k, v in timing.items()) + "}"


def encode_reply(response: Response) -> bytes:
    """One reply line (ending in '\\n') for the TCP port."""
    if isinstance(response, PredictResult):
        pred = response.pred
        body = (
            '{"status":"ok","pred":{"j_left":' + _sticks(np.asarray(pred["j_left"]))
            + ',"j_right":' + _sticks(np.asarray(pred["j_right"]))
            + ',"buttons":' + _buttons(np.asarray(pred["buttons"]))
            + '},"repeat":' + str(int(response.repeat)) + _timing(response.server_timing) + "}"
        )
    else:
        body = encode_value(to_wire_dict(response))
    return body.encode("ascii") + b"\n"


def error_line(message: str) -> bytes:
    """An error reply line (for framing errors the frontend writes this, then closes)."""
    return encode_reply(ErrorResult(message))
