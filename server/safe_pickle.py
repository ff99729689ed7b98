"""The one gate for ZeroMQ pickles: what a request may contain and how much unpickling may allocate.

The original NitroGen server called `pickle.loads` on whatever arrived. Here a pickle goes through
three steps, and nothing a client names is ever imported, called or handed to numpy's or Pillow's own
unpickling code:

1. `scan`: every opcode is read once with the standard library's `pickletools.genops` (which parses
   without executing) and checked against the limits *before* anything is built: no opcode that
   imports by other routes (EXT*, INST, OBJ, persistent ids, out-of-band buffers), at most
   `max_opcodes` opcodes, memo indices below `max_memo` (CPython's unpickler sizes its memo array by
   the largest index: slot 2**25 alone would cost 512 MiB), frames and counted strings no longer than
   the bytes that remain, nothing after STOP.
2. The C unpickler runs with a `find_class` that resolves only a fixed table of stand-ins: numpy's
   dtype, array and scalar constructors become inert records that only remember their arguments and
   state; `bytearray`, `set`, `frozenset`, `complex` and protocol 2's `_codecs.encode` become wrappers
   that accept only data (never a size: `bytearray(2**27)` is refused) and charge what they allocate
   to a budget of twice the message size; PIL images become `PickledImage` records.
3. `_Resolver` walks the result (at most `max_depth` levels, shared objects once, cycles refused) and
   turns array records into numpy arrays: only plain dtypes from a fixed table (bool, ints, floats,
   complex; the dtype state must be the plain one numpy writes), only raw bytes of exactly
   shape x itemsize, read with `np.frombuffer`. A dtype state never reaches numpy.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import re
from typing import Any

import numpy as np

from .errors import a_or_an, abbreviate, describe
from .images import PickledImage
from .pickle_records import ArrayRecord, DTypeRecord, PickleLimits, UnsafePickleError

__all__ = ["PickleLimits", "PickledImage", "UnsafePickleError", "safe_loads", "scan"]


FORBIDDEN_OPCODES = frozenset({"EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ_EX", "PERSID", "BINPERSID",
                               "NEXT_BUFFER", "READONLY_BUFFER"})
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})
ALLOWED_CONTENT = ("requests may contain only dicts, lists, tuples, sets, str, bytes, numbers, None, "
                   "numpy arrays of plain dtypes and PIL images")


def scan(data: bytes, limits: PickleLimits) -> None:
    """Step 1: check every opcode against the limits without building anything."""
    count = memo_size = 0
    stop_at = None
    try:
        for op, arg, pos in pickletools.genops(data):
            count += 1
            if count > limits.max_opcodes:
                raise UnsafePickleError(f"pickle has more than {limits.max_opcodes} opcodes; {ALLOWED_CONTENT}")
            name = op.name
            if name in FORBIDDEN_OPCODES:
                raise UnsafePickleError(f"pickle uses opcode {name}, which is not allowed; {ALLOWED_CONTENT}")
            if name in _MEMO_OPCODES and not 0 <= int(arg) < limits.max_memo:
                raise UnsafePickleError(f"pickle uses memo slot {describe(arg)}; the limit is {limits.max_memo}")
            if name == "MEMOIZE":
                memo_size += 1
                if memo_size > limits.max_memo:
                    raise UnsafePickleError(f"pickle memoizes more than {limits.max_memo} objects")
            if name == "FRAME" and arg > len(data) - pos - 9:
                raise UnsafePickleError(f"pickle frame of {arg} bytes is longer than the message")
            if name == "STOP":
                stop_at = pos
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - genops reports a malformed pickle in several ways
        raise UnsafePickleError(f"message is not a valid pickle ({type(exc).__name__}: "
                                f"{describe(str(exc))})") from None
    if stop_at is None:
        raise UnsafePickleError("message is not a valid pickle (no STOP opcode)")
    if stop_at != len(data) - 1:
        raise UnsafePickleError(f"message has {len(data) - 1 - stop_at} bytes after the pickle's end")


# ---- step 2: stand-ins for the few callables a request may name ----------------------------------------


class _Budget:
    """Bytes the wrappers may still allocate for one request."""

    def __init__(self, nbytes: int) -> None:
        self.left = nbytes

    def charge(self, nbytes: int, what: str) -> None:
        self.left -= nbytes
        if self.left < 0:
            raise UnsafePickleError(f"pickle builds more data than it carries ({what}); {ALLOWED_CONTENT}")


def _make_wrappers(budget: _Budget, limits: PickleLimits) -> dict[str, Any]:
    """Callables a pickle may name, bound to this request's budget."""

    def array_from(cls: Any, shape: Any, dtype: Any, raw: Any, fortran: bool) -> ArrayRecord:
        record = ArrayRecord()
        record.parts = (shape, dtype, fortran, raw)
        return record

    def ndarray(shape: Any = None, dtype: Any = None, buffer: Any = None, *rest: Any) -> ArrayRecord:
        """numpy.ndarray(shape, dtype, buffer): our own replies' form; never allocates by shape."""
        if buffer is None or rest:
            raise UnsafePickleError("numpy.ndarray(...) is accepted only as ndarray(shape, dtype, bytes)")
        return array_from(None, shape, dtype, buffer, False)

    def reconstruct(cls: Any = None, *_args: Any) -> ArrayRecord:
        """numpy's _reconstruct(ndarray, (0,), b'b'): an empty record that BUILD then fills."""
        if cls is not ndarray:
            raise UnsafePickleError("numpy _reconstruct is accepted only for numpy.ndarray")
        return ArrayRecord()

    def frombuffer(buf: Any = None, dtype: Any = None, shape: Any = None, order: Any = "C",
                   axis_order: Any = None) -> ArrayRecord:
        """numpy's protocol-5 form, _frombuffer(buffer, dtype, shape, order[, axis_order]); an array in
        neither C nor F order (a transposed frame) comes as its bytes in memory order, 'K', plus the
        transpose that restores it."""
        if order not in ("C", "F", "K") or (order == "K") != (axis_order is not None):
            raise UnsafePickleError(f"numpy _frombuffer with order {describe(order)} and axis order "
                                    f"{describe(axis_order)}; expected 'C' or 'F', or 'K' with an axis order")
        record = array_from(None, shape, dtype, buf, order == "F")
        record.axes = axis_order
        return record

    def scalar(dtype: Any = None, raw: Any = None) -> Any:
        """A numpy scalar (np.int64(3)) becomes the plain Python number it holds."""
        if not isinstance(dtype, DTypeRecord):
            raise UnsafePickleError(f"numpy scalar of dtype {describe(dtype)}; expected a plain dtype")
        dt = dtype.resolve("a numpy scalar")
        if not isinstance(raw, bytes) or len(raw) != dt.itemsize:
            raise UnsafePickleError(f"numpy scalar of {dt.name} needs {dt.itemsize} bytes")
        return np.frombuffer(raw, dt)[0].item()

    def make_bytearray(source: Any = b"", encoding: Any = None, *rest: Any) -> bytearray:
        if isinstance(source, str) and encoding in ("latin-1", "latin1") and not rest:
            source = source.encode("latin-1")  # protocol 2's form
        if not isinstance(source, (bytes, bytearray)) or rest:
            raise UnsafePickleError(f"bytearray({a_or_an(type(source).__name__)}) is not allowed; "
                                    "expected bytearray(bytes)")
        budget.charge(len(source), "bytearray")
        return bytearray(source)

    def make_bytes(source: Any = b"", *rest: Any) -> bytes:
        """bytes() is how protocols 0-2 write b''; otherwise only bytes from bytes."""
        if not isinstance(source, (bytes, bytearray)) or rest:
            raise UnsafePickleError(f"bytes({a_or_an(type(source).__name__)}) is not allowed; expected bytes()")
        budget.charge(len(source), "bytes")
        return bytes(source)

    def collection(kind: type) -> Any:
        def build(items: Any = ()) -> Any:
            if not isinstance(items, (list, tuple, set, frozenset, dict)):
                raise UnsafePickleError(f"{kind.__name__}() of {a_or_an(type(items).__name__)} is not allowed")
            budget.charge(64 * len(items), kind.__name__)
            return kind(items)
        return build

    def make_complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (real, imag)):
            raise UnsafePickleError("complex() is accepted only of two numbers")
        return complex(real, imag)

    def encode(obj: Any = None, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        """_codecs.encode as protocol-2 pickles of bytes use it: text to latin-1 or UTF-8 only."""
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8") \
                or errors != "strict":
            raise UnsafePickleError("_codecs.encode is accepted only on text, to latin-1 or UTF-8")
        budget.charge(len(obj) * (1 if encoding.startswith("latin") else 4), "_codecs.encode")
        return obj.encode(encoding)

    def reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
        """copyreg._reconstructor for protocol 0/1 pickles, only for the inert stand-ins."""
        if cls not in (PickledImage, _Inert) or base is not object:
            raise UnsafePickleError("copyreg._reconstructor is only allowed for PIL images")
        return cls()

    table = {
        ("numpy", "ndarray"): ndarray,
        ("numpy", "dtype"): DTypeRecord,
        ("builtins", "set"): collection(set),
        ("builtins", "frozenset"): collection(frozenset),
        ("builtins", "bytearray"): make_bytearray,
        ("builtins", "bytes"): make_bytes,
        ("builtins", "complex"): make_complex,
        ("builtins", "object"): object,
        ("copyreg", "_reconstructor"): reconstructor,
        ("_codecs", "encode"): encode,
        ("PIL.Image", "Image"): PickledImage,
        ("PIL.TiffImagePlugin", "IFDRational"): _Inert,
    }
    for root in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x names
        table[(f"{root}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{root}.multiarray", "scalar")] = scalar
        table[(f"{root}.numeric", "_frombuffer")] = frombuffer
    return table


_PLUGIN_CLASS = re.compile(r"PIL\.\w+ImagePlugin\Z")


class _Unpickler(pickle.Unpickler):
    """The C unpickler; find_class resolves only this request's table of stand-ins."""

    def __init__(self, data: bytes, table: dict[tuple[str, str], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._table = table

    def find_class(self, module: str, name: str) -> Any:
        # protocol 0-2 pickles may use Python 2 names (__builtin__.set, copy_reg._reconstructor)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self._table.get((module, name))
        if found is not None:
            return found
        if _PLUGIN_CLASS.match(module) and name.endswith("ImageFile"):
            return PickledImage  # e.g. PngImageFile from Image.open(): rebuilt as a plain image
        raise UnsafePickleError(f"pickle refers to {abbreviate(module, 60)}.{abbreviate(name, 60)}, which is "
                                f"not allowed; {ALLOWED_CONTENT}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("pickle uses persistent ids, which are not allowed")


# ---- step 3: records -> arrays, with a depth limit ------------------------------------------------------

_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None))


class _Resolver:
    """Walks an unpickled request once: arrays built, depth bounded, shared objects resolved once."""

    def __init__(self, limits: PickleLimits) -> None:
        self.limits = limits
        self.done: dict[int, Any] = {}

    def resolve(self, obj: Any, where: str, depth: int = 0) -> Any:
        if isinstance(obj, _LEAVES):
            return obj
        if id(obj) in self.done:
            return self.done[id(obj)]
        if depth >= self.limits.max_depth:
            raise UnsafePickleError(f"{where} is nested more than {self.limits.max_depth} levels deep "
                                    "(or refers to itself)")
        kind = type(obj)
        if kind is ArrayRecord:
            out: Any = obj.to_array(where, self.limits)
        elif kind is DTypeRecord:
            out = obj.resolve(where)
        elif kind is dict:
            out = {}
            for key, value in obj.items():
                if not isinstance(key, _LEAVES):
                    raise UnsafePickleError(f"{where} has a key that is {a_or_an(type(key).__name__)}; "
                                            "dict keys must be strings or numbers")
                out[key] = self.resolve(value, _child(where, key), depth + 1)
        elif kind in (list, tuple):
            out = kind(self.resolve(v, where, depth + 1) for v in obj)
        elif kind in (set, frozenset):
            if not all(isinstance(v, _LEAVES) for v in obj):
                raise UnsafePickleError(f"{where} is a set holding something other than strings or numbers")
            out = obj
        elif kind in (PickledImage, _Inert, object):
            out = obj  # inert records; a PickledImage is checked when it is turned into pixels
        else:  # unreachable: nothing else can be built from the table
            raise UnsafePickleError(f"{where} is {a_or_an(kind.__name__)}; {ALLOWED_CONTENT}")
        self.done[id(obj)] = out
        return out


def _child(where: str, key: Any) -> str:
    """Errors name the request's top-level field ('image'), however deep inside it the problem is."""
    if where != "request":
        return where
    return f"'{key}'" if isinstance(key, str) and len(key) <= 40 else f"field {describe(key)}"


_PLAIN_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError)


def safe_loads(data: bytes, limits: PickleLimits | None = None) -> Any:
    """Unpickle client bytes through the three steps; any failure is an UnsafePickleError naming the cause."""
    limits = limits or PickleLimits()
    scan(data, limits)
    budget = _Budget(2 * len(data) + (1 << 16))
    try:
        obj = _Unpickler(data, _make_wrappers(budget, limits)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError) as exc:
        raise UnsafePickleError(f"message is not a valid pickle ({describe(str(exc))})") from None
    except Exception as exc:  # noqa: BLE001 - e.g. TypeError from an unhashable dict key
        # the text of ordinary errors helps the client; others (SystemError...) would leak internals
        detail = f": {describe(str(exc))}" if isinstance(exc, _PLAIN_ERRORS) else ""
        raise UnsafePickleError(f"pickle builds something the server cannot make ({type(exc).__name__}"
                                f"{detail}); {ALLOWED_CONTENT}") from None
    return _Resolver(limits).resolve(obj, "request")


class _Inert:
    """Stand-in for harmless objects inside a PIL image's info dict (e.g. IFDRational dpi values)."""

    DESCRIPTION = "<PIL info value>"

    def __init__(self, *_args: Any) -> None:
        pass

    def __setstate__(self, _state: Any) -> None:
        pass
