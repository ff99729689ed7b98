"""A pickle module for ``torch.load`` that can only build what a NitroGen checkpoint needs.

``ng.pt`` is a full pickle: its ``ckpt_config`` may hold pydantic objects of the original code. Loading
it with plain ``pickle`` would import and call whatever the file names (``os.system`` included). This
unpickler resolves a fixed allowlist instead: tensor rebuild helpers, ``OrderedDict``, plain builtins and
the original configuration classes, which are replaced by inert records that only keep their fields.
Anything else is refused *before* it is imported, with an error naming it.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
from typing import Any

import torch

from .errors import CheckpointError

# Class paths of the original configuration objects (see golden/README.md).
ORIGINAL_CONFIG_CLASSES = frozenset(
    {
        "nitrogen.cfg.CkptConfig",
        "nitrogen.cfg.ModalityConfig",
        "nitrogen.flow_matching_transformer.nitrogen.NitroGen_Config",
        "nitrogen.flow_matching_transformer.modules.DiTConfig",
        "nitrogen.flow_matching_transformer.modules.SelfAttentionTransformerConfig",
        "nitrogen.mm_tokenizers.NitrogenTokenizerConfig",
        "nitrogen.mm_tokenizers.GameMappingConfig",
    }
)


class PickledConfig:
    """Inert stand-in for a pickled pydantic object: records the state, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.fields: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        fields: dict[str, Any] = {}
        if isinstance(state, tuple):  # (dict_state, slots_state)
            state = state[0] if state and isinstance(state[0], dict) else {}
        if isinstance(state, dict):
            inner = state.get("__dict__")
            if isinstance(inner, dict):  # pydantic v2
                fields.update(inner)
                extra = state.get("__pydantic_extra__")
                if isinstance(extra, dict):
                    fields.update(extra)
            else:  # pydantic v1 / plain objects
                fields.update({k: v for k, v in state.items() if not str(k).startswith("__")})
        self.fields = fields


def _config_class(path: str) -> type:
    return type(path.rsplit(".", 1)[1], (PickledConfig,), {"original_path": path})


def _as_path_string(*parts: Any) -> str:
    return str(pathlib.PurePath(*[str(p) for p in parts]))


_ALLOWED: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
    "torch.nn.parameter.Parameter": torch.nn.Parameter,
    "torch.Size": torch.Size,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "__builtin__.set": set,
    "__builtin__.frozenset": frozenset,
    "pathlib.PosixPath": _as_path_string,
    "pathlib.WindowsPath": _as_path_string,
    "pathlib.PurePosixPath": _as_path_string,
    "pathlib.PureWindowsPath": _as_path_string,
    **{name: _config_class(name) for name in ORIGINAL_CONFIG_CLASSES},
}
_ALLOWED.update({f"torch.{name}": getattr(torch, name) for name in ("float32", "float16", "bfloat16")})


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only answers from the allowlist."""

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        try:
            return _ALLOWED[key]
        except KeyError:
            raise CheckpointError(
                f"refusing to load checkpoint: its pickle asks for {key!r}, which is not allowed "
                "(a NitroGen checkpoint needs only tensors, builtins and its config classes)"
            ) from None


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` counterpart used by ``torch.load`` for legacy (non-zip) files."""
    return Unpickler(file, **kwargs).load()


def to_plain(obj: Any) -> Any:
    """Turn stand-in config records (and containers of them) into plain dicts and lists."""
    if isinstance(obj, PickledConfig):
        return {k: to_plain(v) for k, v in obj.fields.items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    return obj
