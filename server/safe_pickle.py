"""A restricted unpickler for the ZeroMQ port: plain data, numpy arrays and PIL images, nothing else.

The original NitroGen server called `pickle.loads` on whatever arrived, which lets any client run code
on the server. Here `find_class` only ever returns a fixed set of harmless callables; everything else
is refused before it is imported. PIL images are not rebuilt by Pillow's own `__setstate__` (which
allocates whatever size the pickle claims): they come back as `PickledImage` records that
`to_pil` validates first.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
import re
from typing import Any, ClassVar

import numpy as np
from PIL import Image


class UnsafePickleError(ValueError):
    """The pickle names something outside the allowlist (or is not a pickle at all)."""


class PickledImage:
    """Inert stand-in for a pickled PIL image; holds Pillow's pickled state [info, mode, size, palette, data]."""

    def __init__(self, *_args: Any) -> None:
        self.state: list[Any] = []

    def __setstate__(self, state: Any) -> None:
        self.state = list(state) if isinstance(state, (list, tuple)) else []

    def to_pil(self, max_side: int) -> Image.Image:
        """Rebuild the image after checking mode, size and data length against the limits."""
        from .images import ImageError, check_size

        if len(self.state) < 5:
            raise ImageError("pickled PIL image has no pixel data; expected Image.Image state")
        _info, mode, size, palette, data = self.state[:5]
        if mode not in ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1"):
            raise ImageError(f"PIL image mode {mode!r} is not supported; expected RGB, RGBA, L or P")
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            raise ImageError(f"PIL image size {size!r} is not a (width, height) pair")
        check_size(size[0], size[1], max_side)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError("PIL image pixel data is not bytes")
        try:
            img = Image.frombytes(mode, tuple(size), bytes(data))
            if mode in ("P", "PA") and palette:
                img.putpalette(palette)
        except Exception as exc:  # noqa: BLE001 - Pillow's errors vary by mode
            raise ImageError(f"PIL image data does not match mode {mode} size {tuple(size)}: {exc}") from None
        return img


class _Inert:
    """Stand-in for harmless objects inside a PIL image's info dict (e.g. IFDRational dpi values)."""

    def __init__(self, *_args: Any) -> None:
        pass

    def __setstate__(self, _state: Any) -> None:
        pass


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor for protocol 0/1 pickles, limited to our inert stand-ins."""
    if cls not in (PickledImage, _Inert) or base is not object:
        raise UnsafePickleError("copyreg._reconstructor is only allowed for PIL images")
    return cls()


_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMERIC_MODULES = ("numpy.core.numeric", "numpy._core.numeric")
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "object"): object,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("PIL.Image", "Image"): PickledImage,
    ("PIL.TiffImagePlugin", "IFDRational"): _Inert,
}


def _numpy_attr(path: str) -> Any:
    """Resolve a numpy internal that moved between numpy 1 (numpy.core) and 2 (numpy._core)."""
    for root in ("numpy._core", "numpy.core"):
        mod_name, _, attr = f"{root}.{path}".rpartition(".")
        try:
            with _quiet_deprecations():
                return getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(path)


class _quiet_deprecations:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _build_allowlist() -> dict[tuple[str, str], Any]:
    allowed = dict(_ALLOWED)
    reconstruct = _numpy_attr("multiarray._reconstruct")
    scalar = _numpy_attr("multiarray.scalar")
    frombuffer = _numpy_attr("numeric._frombuffer")
    for mod in _NUMPY_MODULES:
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    for mod in _NUMERIC_MODULES:
        allowed[(mod, "_frombuffer")] = frombuffer
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """_codecs.encode as used by protocol-2 pickles of bytes; only str input, only text codecs."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError("_codecs.encode is only allowed on text with latin1/utf-8")
    return obj.encode(encoding, errors)


_PLUGIN_CLASS = re.compile(r"PIL\.\w+ImagePlugin\Z")


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class resolves only the allowlist; nothing else is imported."""

    allowlist: ClassVar[dict[tuple[str, str], Any]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # protocol 0-2 pickles may use Python 2 names (__builtin__.set, copy_reg._reconstructor)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self.allowlist.get((module, name))
        if found is not None:
            return found
        if _PLUGIN_CLASS.match(module) and name.endswith("ImageFile"):
            return PickledImage  # e.g. PngImageFile from Image.open(): rebuilt as a plain image
        raise UnsafePickleError(
            f"pickle refers to {module}.{name}, which is not allowed; requests may contain only dicts, "
            "lists, tuples, str, bytes, numbers, numpy arrays and PIL images"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("pickle uses persistent ids, which are not allowed")


RestrictedUnpickler.allowlist = _build_allowlist()


def safe_loads(data: bytes) -> Any:
    """Unpickle client bytes with the allowlist; any failure is an UnsafePickleError naming the cause."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except RecursionError:
        raise UnsafePickleError("pickle is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - a malformed pickle can raise nearly anything
        raise UnsafePickleError(f"could not unpickle the request ({type(exc).__name__}: {exc})") from None
