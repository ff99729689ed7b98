"""What ``torch.load(weights_only=True)`` may rebuild from ``ng.pt`` beyond torch's own allowlist.

The released checkpoint may hold its config as pickled pydantic objects of the original code. We never
import that code: each original class path is registered with torch's safe loader under an inert
record class that keeps the fields and runs nothing. torch maintains the allowlist of its own internals;
anything else a file names (``os.system``...) is refused by torch before it is imported.
"""

from __future__ import annotations

import pathlib
from typing import Any

# Class paths of the original configuration objects (see golden/README.md).
ORIGINAL_CONFIG_CLASSES = (
    "nitrogen.cfg.CkptConfig",
    "nitrogen.cfg.ModalityConfig",
    "nitrogen.flow_matching_transformer.nitrogen.NitroGen_Config",
    "nitrogen.flow_matching_transformer.modules.DiTConfig",
    "nitrogen.flow_matching_transformer.modules.SelfAttentionTransformerConfig",
    "nitrogen.mm_tokenizers.NitrogenTokenizerConfig",
    "nitrogen.mm_tokenizers.GameMappingConfig",
)


class PickledConfig:
    """Inert stand-in for a pickled pydantic (v1 or v2) object: records its fields, runs nothing."""

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


def _record_class(path: str) -> type:
    return type(path.rsplit(".", 1)[1], (PickledConfig,), {"original_path": path})


def _as_path_string(*parts: Any) -> str:
    """A pickled ``pathlib`` path (e.g. a game table's source files) becomes a plain string."""
    return str(pathlib.PurePath(*[str(p) for p in parts]))


SAFE_GLOBALS: list[tuple[Any, str]] = [
    *((_record_class(path), path) for path in ORIGINAL_CONFIG_CLASSES),
    *((_as_path_string, f"pathlib.{cls}") for cls in ("PosixPath", "WindowsPath", "PurePosixPath",
                                                      "PureWindowsPath")),
    (frozenset, "builtins.frozenset"),
]


def to_plain(obj: Any) -> Any:
    """Turn stand-in config records (and containers of them) into plain dicts and lists."""
    if isinstance(obj, PickledConfig):
        return {k: to_plain(v) for k, v in obj.fields.items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in obj]
    return obj
