"""What a request pickle may rebuild besides plain data: records of numpy dtypes and arrays.

The unpickler (`safe_pickle`) hands numpy's reconstructors these records instead of numpy itself, so
no client-chosen dtype state or allocation size ever reaches numpy; `ArrayRecord.to_array` builds the
array from bytes of exactly the size its shape and plain dtype need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ClientError, describe


class UnsafePickleError(ClientError):
    """The message is not a pickle of plain data, arrays and images, or is over a limit."""


@dataclass(frozen=True)
class PickleLimits:
    """Bounds on one request; a legitimate request (a dict with a frame) uses a few dozen opcodes."""

    max_opcodes: int = 10_000
    max_memo: int = 10_000
    max_depth: int = 32
    max_array_dims: int = 8


_PLAIN_DTYPES = {name: np.dtype(name) for name in
                 ("b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16")}
PLAIN_DTYPE_NAMES = "bool, int8 to int64, uint8 to uint64, float16 to float64, complex64, complex128"


class DTypeRecord:
    """numpy.dtype(name, align, copy) + BUILD state, remembered; `resolve` maps it to a plain dtype."""

    DESCRIPTION = "<numpy dtype>"
    name: Any = None  # class defaults: NEWOBJ builds instances without calling __init__
    state: Any = None

    def __init__(self, name: Any = None, *_args: Any) -> None:
        self.name, self.state = name, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def resolve(self, where: str) -> np.dtype:
        plain = _PLAIN_DTYPES.get(self.name) if isinstance(self.name, str) else None
        if plain is None:
            raise UnsafePickleError(f"{where} has numpy dtype {describe(self.name)}; arrays may have only "
                                    f"plain dtypes: {PLAIN_DTYPE_NAMES}")
        order = "="
        if self.state is not None:  # exactly what numpy writes for these: (3, order, None x3, -1, -1, 0)
            s = self.state
            if not (isinstance(s, tuple) and len(s) == 8 and s[0] == 3 and s[1] in ("<", ">", "|", "=")
                    and s[2:] == (None, None, None, -1, -1, 0)):
                raise UnsafePickleError(f"{where} has a numpy dtype {self.name} with state {describe(s)}; "
                                        "only the plain state numpy writes, (3, order, None, None, None, "
                                        "-1, -1, 0), is accepted")
            order = s[1]
        return plain.newbyteorder(order) if order in "<>" else plain


class ArrayRecord:
    """An array as the pickle describes it (shape, dtype record, order, raw bytes); built by `to_array`."""

    DESCRIPTION = "<numpy array>"
    parts: tuple[Any, Any, Any, Any] | None = None

    def __init__(self, *_args: Any) -> None:
        self.parts: tuple[Any, Any, Any, Any] | None = None  # shape, dtype, fortran order, raw bytes
        self.axes: Any = None  # protocol 5, neither C nor F order: the transpose that restores the array

    def __setstate__(self, state: Any) -> None:
        if self.parts is not None:
            raise UnsafePickleError("pickle sets a numpy array's state twice")
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, raw)
        if not (isinstance(state, tuple) and len(state) == 4):
            raise UnsafePickleError(f"numpy array state is {describe(state)}; expected (version, shape, "
                                    "dtype, is_fortran, raw bytes)")
        self.parts = state

    def to_array(self, where: str, limits: PickleLimits) -> np.ndarray:
        if self.parts is None:
            raise UnsafePickleError(f"{where} is a numpy array without data")
        shape, dtype, fortran, raw = self.parts
        if not isinstance(fortran, bool):
            raise UnsafePickleError(f"{where} has array order flag {describe(fortran)}; expected True or False")
        if not isinstance(dtype, DTypeRecord):
            raise UnsafePickleError(f"{where} has dtype {describe(dtype)}; expected numpy.dtype(...)")
        array = build_array(where, shape, dtype.resolve(where), raw, fortran, limits)
        if self.axes is None:
            return array
        if not (isinstance(self.axes, tuple) and len(self.axes) == array.ndim
                and all(type(a) is int for a in self.axes) and sorted(self.axes) == list(range(array.ndim))):
            raise UnsafePickleError(f"{where} has axis order {describe(self.axes)}; expected a permutation of "
                                    f"0..{array.ndim - 1}")
        return np.ascontiguousarray(array.transpose(self.axes))


def build_array(where: str, shape: Any, dtype: np.dtype, raw: Any, fortran: bool,
                limits: PickleLimits) -> np.ndarray:
    """An array from raw bytes of exactly the size its shape and dtype need (no copy)."""
    if not (isinstance(shape, tuple) and len(shape) <= limits.max_array_dims
            and all(type(n) is int and 0 <= n < 2**31 for n in shape)):
        raise UnsafePickleError(f"{where} has array shape {describe(shape)}; expected a tuple of at most "
                                f"{limits.max_array_dims} integers from 0 to 2**31-1")
    if not isinstance(raw, (bytes, bytearray)):
        raise UnsafePickleError(f"{where} has array data of type {type(raw).__name__}; expected bytes")
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise UnsafePickleError(f"{where} has {len(raw)} bytes of array data; shape {describe(shape)} of "
                                f"{dtype.name} needs exactly {need}")
    return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")
