"""Reading a ZeroMQ reply pickle without trusting the server that sent it.

A reply holds plain data and numpy arrays. numpy's own unpickling (``dtype.__setstate__``) trusts the
state it is given: crafted state crashes the process (an object dtype over raw bytes). So no numpy
callable is handed to the unpickler: dtypes and arrays are rebuilt by the stand-ins below from plain
numeric dtypes and exactly sized bytes, after their state is compared with what numpy itself writes.
Both encodings are read: our server's ``ndarray(shape, dtype, bytearray)`` and numpy's default
``_reconstruct`` + state (the original NitroGen server's).
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import numpy as np

PLAIN_KINDS = "biuf"  # bool, signed, unsigned, float: what actions and images are made of
MAX_ELEMENTS = 1 << 28


class UnsafeReply(pickle.UnpicklingError):
    """The reply pickle asks for something a nitrogen reply never contains."""


class _DType:
    """``numpy.dtype(name, align, copy)``: a plain numeric dtype; its state must be numpy's own."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str) or len(name) > 8:
            raise UnsafeReply(f"reply names dtype {name!r}; expected a plain numeric dtype such as 'f4'")
        try:
            dtype = np.dtype(name)
        except TypeError:
            raise UnsafeReply(f"reply names dtype {name!r}, which numpy does not know") from None
        if dtype.kind not in PLAIN_KINDS or dtype.itemsize > 8:
            raise UnsafeReply(f"reply names dtype {name!r}; expected bool, int, uint or float")
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        expected = self.dtype.__reduce__()[2]
        if state != expected:
            raise UnsafeReply(f"reply sets dtype {self.dtype} to state {str(state)[:80]}; expected {expected}")


def _real_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _DType):
        raise UnsafeReply("an array in the reply has no plain dtype")
    return value.dtype


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value) or len(value) > 8:
        raise UnsafeReply(f"array shape {str(value)[:60]} is not a tuple of sizes")
    if math.prod(value) > MAX_ELEMENTS:
        raise UnsafeReply(f"array shape {value} is too large")
    return value


def _array(shape: Any, dtype: Any, data: Any) -> np.ndarray:
    shape, dtype = _shape(shape), _real_dtype(dtype)
    if isinstance(data, str):  # protocol-2 pickles carry bytes as latin-1 text
        data = data.encode("latin1")
    if not isinstance(data, (bytes, bytearray)) or len(data) != math.prod(shape) * dtype.itemsize:
        raise UnsafeReply(f"array data for shape {shape} {dtype} has the wrong size")
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)  # writable, as numpy's own are


class _NDArray:
    """``numpy.ndarray``: called as our server writes arrays, or passed to ``_reconstruct``."""

    def __call__(self, shape: Any, dtype: Any, buffer: Any = None) -> np.ndarray:
        return _array(shape, dtype, buffer)


_NDARRAY = _NDArray()


class _Reconstructed:
    """``_reconstruct(ndarray, (0,), b'b')`` then ``__setstate__((1, shape, dtype, fortran, data))``."""

    def __init__(self, cls: Any, base_shape: Any, tag: Any) -> None:
        if cls is not _NDARRAY:
            raise UnsafeReply("_reconstruct may only rebuild numpy.ndarray")
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and state[3] is False):
            raise UnsafeReply("array state is not (version, shape, dtype, False, data)")
        self.value = _array(state[1], state[2], state[4])


def _scalar(dtype: Any, data: Any) -> Any:
    return _array((), dtype, data)[()]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if order not in ("C", "F"):
        raise UnsafeReply(f"array order {order!r} is not C or F")
    return _array(shape, dtype, bytes(buffer))


def _encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafeReply("_codecs.encode is only for text with latin1/utf-8")
    return text.encode(encoding, errors)


_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DType,
    ("_codecs", "encode"): _encode,
    ("builtins", "bytearray"): bytearray,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _Reconstructed for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeReply(f"reply names {module}.{name}, which a nitrogen reply never contains") from None


def _finish(obj: Any, depth: int = 0) -> Any:
    """Stand-ins -> real arrays; anything left half-built is refused."""
    if depth > 32:
        raise UnsafeReply("reply is nested too deeply")
    if isinstance(obj, _Reconstructed):
        if obj.value is None:
            raise UnsafeReply("an array in the reply has no state")
        return obj.value
    if isinstance(obj, (_DType, _NDArray)):
        raise UnsafeReply("a dtype or array class stands alone in the reply")
    if isinstance(obj, dict):
        return {k: _finish(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1) for v in obj)
    return obj


def loads(data: bytes) -> Any:
    """Unpickle a reply; ``UnsafeReply`` (or pickle's own errors) for anything else."""
    return _finish(_Unpickler(io.BytesIO(data)).load())
