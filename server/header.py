"""The TCP port's header line -> a dict, with its size, nesting and numbers bounded before or while parsing.

The standard library's `json` does the parsing. Around it: the line's length is checked first (the
documented limit counts the whole line, its `\\n` included); the text must be UTF-8 (json.loads would
guess UTF-16/32 from bytes); nesting deeper than MAX_DEPTH is refused before the parser recurses (it
would raise RecursionError around 1,000 levels); every number literal is checked for length by
json's own `parse_int`/`parse_float` hooks before it is converted (a 400-digit integer, 1e400, NaN).
Any failure is a FramingError: without the header the payload's length is unknown, so the
connection cannot go on.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

from .errors import abbreviate, describe

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 40  # a seed is at most 19 digits; a float's shortest repr at most 24 characters

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal (unrolled: linear time)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


class FramingError(Exception):
    """The stream can no longer be split into requests: answer with an error line, then close."""


def nesting_depth(text: str) -> int:
    """The deepest level of [ ] / { } nesting in JSON text, strings skipped."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:  # fast path: cannot be deeper than its openers
        return 0
    skeleton = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    return max(itertools.accumulate(1 if c in "[{" else -1 for c in skeleton), default=0)


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise FramingError(f"header has a number of {len(text)} characters; numbers may have at most "
                           f"{MAX_NUMBER_CHARS}")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise FramingError(f"header has a number of {len(text)} characters; numbers may have at most "
                           f"{MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):
        raise FramingError(f"header has the number {describe(text)}, which is out of range for a float")
    return value


def _parse_constant(name: str) -> float:
    raise FramingError(f"header contains {name}, which is not JSON; expected finite numbers only")


def line_too_long(max_bytes: int) -> FramingError:
    return FramingError(f"header line is longer than {max_bytes} bytes (its \\n included); expected one "
                        "JSON object per line, ending in \\n")


def parse_header(line: bytes, max_bytes: int) -> dict[str, Any] | None:
    """One header line (with or without its line ending) -> the request's fields; None for a blank line."""
    if len(line) > max_bytes:
        raise line_too_long(max_bytes)
    try:
        text = line.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise FramingError(f"header is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                           f"{exc.start}); expected one JSON object per line, like {{\"type\":\"info\"}}") from None
    if not text:
        return None
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise FramingError(f"header is nested {depth} levels deep; the limit is {MAX_DEPTH}")
    try:
        fields = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                            parse_constant=_parse_constant)
    except FramingError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FramingError(f"header is not valid JSON ({abbreviate(str(exc), 80)}); expected one JSON "
                           'object per line, like {"type":"predict"}') from None
    if not isinstance(fields, dict):
        kind = _JSON_KINDS.get(type(fields), "value")
        raise FramingError(f"header is a JSON {kind}; expected a JSON "
                           'object like {"type":"info"}')
    return fields
