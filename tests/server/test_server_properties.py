"""Property-based tests of the two parsers that take untrusted bytes: the ZeroMQ unpickler and the
TCP header parser, plus the field checks behind both (hypothesis; examples and time bounded).

The properties: plain data and arrays come back equal, at any pickle protocol; anything else is
either refused with the parser's own error or parsed, never another exception; and what a pickle
makes the server allocate stays within a small multiple of its size.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from nitrogen_server.header import MAX_DEPTH, MAX_NUMBER_CHARS, FramingError, nesting_depth, parse_header
from nitrogen_server.protocol import RequestError, parse_request
from nitrogen_server.safe_pickle import UnsafePickleError, safe_loads

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PLAIN_DTYPES = ["b1", "i1", "u1", "<i2", ">u2", "<i4", "<u4", ">i8", "<u8", "<f2", "<f4", ">f8", "<c8", "<c16"]

arrays = st.sampled_from(PLAIN_DTYPES).flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                          elements={"allow_nan": False} if dt[-2] in "fc" or dt[-3:-1] == "c1" else None)
).map(lambda a: np.asfortranarray(a) if a.ndim > 1 and a.size % 2 else a)
leaves = (st.none() | st.booleans() | st.integers(-(2**100), 2**100) | st.floats(allow_nan=False)
          | st.text(max_size=20) | st.binary(max_size=20) | st.builds(bytearray, st.binary(max_size=8)) | arrays)
plain_data = st.recursive(
    leaves,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=6), inner, max_size=4)
                   | st.frozensets(st.integers(-5, 5), max_size=3)),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equal values, arrays compared by dtype, shape and contents."""
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@PROPS
@given(value=plain_data, protocol=st.integers(0, 5))
def test_unpickler_returns_plain_data_and_arrays_unchanged(value, protocol):
    got = safe_loads(pickle.dumps({"type": "info", "x": value}, protocol=protocol))
    assert same(got["x"], value)


@PROPS
@given(value=st.sampled_from(PLAIN_DTYPES).map(np.dtype).flatmap(lambda dt: st.just(dt.type(1))),
       protocol=st.integers(2, 5))
def test_numpy_scalars_become_the_numbers_they_hold(value, protocol):
    assert safe_loads(pickle.dumps(value, protocol=protocol)) == value.item()


def loads_within_budget(data: bytes) -> None:
    """safe_loads either parses or raises UnsafePickleError; it allocates at most ~3x the message."""
    tracemalloc.start()
    try:
        safe_loads(data)
    except UnsafePickleError as exc:
        assert str(exc) and len(str(exc)) <= 400
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 3 * len(data) + (1 << 20), f"{peak} bytes traced for a {len(data)}-byte pickle"


@PROPS
@given(data=st.binary(max_size=300))
def test_unpickler_on_arbitrary_bytes(data):
    loads_within_budget(data)


@PROPS
@given(value=plain_data, protocol=st.integers(0, 5),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from("rid")), max_size=4))
def test_unpickler_on_damaged_pickles(value, protocol, edits):
    data = bytearray(pickle.dumps({"type": "predict", "image": value}, protocol=protocol))
    for pos, byte, how in edits:
        pos %= len(data) + 1
        if how == "r" and pos < len(data):
            data[pos] = byte
        elif how == "i":
            data.insert(pos, byte)
        elif pos < len(data):
            del data[pos]
    loads_within_budget(bytes(data))


def _u4(n: int) -> bytes:
    return struct.pack("<I", n)


# fragments of the opcodes that allocate or resolve names, with hostile arguments
OPCODE_PIECES = st.sampled_from([
    b"N", b"K\x07", b"J" + _u4(2**31 - 1), b"\x8a\x09" + b"\xff" * 9, b"]", b"}", b")", b"(", b"t", b"l", b"d",
    b"a", b"e", b"s", b"u", b"0", b"2", b"\x85", b"\x86", b"\x87", b"R", b"b", b"\x81", b"\x88", b"\x89",
    b"X" + _u4(3) + b"abc", b"C\x02hi", b"B" + _u4(2**31), b"\x8e" + struct.pack("<Q", 2**40),
    b"\x96" + struct.pack("<Q", 2**33), b"\x95" + struct.pack("<Q", 2**40),
    b"q\x05", b"r" + _u4(2**25), b"r" + _u4(7), b"p99999999999\n", b"h\x05", b"j" + _u4(2**30), b"g7\n",
    b"\x94", b"\x8f", b"\x90", b"\x91",
    b"cnumpy\ndtype\n", b"cnumpy\nndarray\n", b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.numeric\n_frombuffer\n", b"c__builtin__\nbytearray\n",
    b"cbuiltins\nset\n", b"cbuiltins\nobject\n", b"ccopyreg\n_reconstructor\n", b"c_codecs\nencode\n",
    b"cPIL.Image\nImage\n", b"cos\nsystem\n", b"cbuiltins\neval\n", b"\x82\x01", b"P1\n", b"Q",
    b"X\x02\x00\x00\x00O8", b"X\x02\x00\x00\x00u1", b"X\x01\x00\x00\x00|",
])


@PROPS
@given(pieces=st.lists(OPCODE_PIECES, max_size=40), proto=st.sampled_from([b"", b"\x80\x02", b"\x80\x05"]))
def test_unpickler_on_opcode_soup(pieces, proto):
    loads_within_budget(proto + b"".join(pieces) + b".")


# ---- the TCP header parser ------------------------------------------------------------------------------

json_leaves = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=15)
headers = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@PROPS
@given(fields=headers, ending=st.sampled_from([b"\n", b"\r\n", b""]))
def test_header_parser_reads_json_objects_as_json_does(fields, ending):
    line = json.dumps(fields).encode() + ending
    assert parse_header(line, 1 << 16) == json.loads(line)


@PROPS
@given(data=st.binary(max_size=300) | st.text(alphabet='{}[]"\\:,0123456789.eE-+ntrufals ', max_size=300)
       .map(str.encode))
def test_header_parser_on_arbitrary_bytes(data):
    try:
        fields = parse_header(data, 1 << 16)
    except FramingError as exc:
        assert str(exc) and len(str(exc)) <= 300
    else:
        assert fields is None or isinstance(fields, dict)


def reference_depth(text: str) -> int:
    """Bracket depth outside strings, the slow obvious way."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


@PROPS
@given(value=json_values, extra=st.integers(0, 60))
def test_nesting_depth_matches_a_reference(value, extra):
    text = "[" * extra + json.dumps(value) + "]" * extra
    assert nesting_depth(text) in (0, reference_depth(text))  # 0: the fast path knew it was shallow
    if reference_depth(text) > MAX_DEPTH:
        assert nesting_depth(text) == reference_depth(text)
        with pytest.raises(FramingError, match="nested"):
            parse_header(b'{"x":' + text.encode() + b"}", 1 << 16)


@PROPS
@given(digits=st.integers(MAX_NUMBER_CHARS + 1, 5000), where=st.sampled_from(["len", "seed", "x"]))
def test_long_numbers_are_refused_before_conversion(digits, where):
    with pytest.raises(FramingError, match=f"number of {digits} characters"):
        parse_header(b'{"type":"info","%s":1%s}' % (where.encode(), b"0" * (digits - 1)), 1 << 16)


# ---- the field checks behind both ports -----------------------------------------------------------------

hostile_values = (json_values | st.integers().map(lambda n: n * 10**400) | st.just(float("nan"))
                  | st.just(float("inf")) | st.text(min_size=100, max_size=3000) | arrays
                  | st.integers(1, 200).map(lambda n: [[[[[[[[n]]]]]]]] * 3))


@PROPS
@given(fields=st.dictionaries(st.sampled_from(["type", "seed", "session", "resize_mode", "cfg_scale",
                                               "context_length", "game", "image"]), hostile_values, max_size=6),
       kind=st.sampled_from(["predict", "reset", "info", None]))
def test_field_checks_answer_anything_with_a_short_message(fields, kind):
    if kind is not None:
        fields = {**fields, "type": kind}
    try:
        parse_request(fields, image=np.zeros((2, 2, 3), np.uint8))
    except RequestError as exc:
        assert 0 < len(str(exc)) <= 300
        assert "'" in str(exc) or "request" in str(exc)  # names the field (or the request)


def test_nan_and_huge_cfg_are_refused_by_value():
    for bad in (math.nan, math.inf, 10**400, -1e-9, 100.5):
        with pytest.raises(RequestError, match="'cfg_scale'"):
            parse_request({"type": "reset", "cfg_scale": bad})
