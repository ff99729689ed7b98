"""NitroGen inference: checkpoint loading, the model, preprocessing, sessions, batching. No sockets.

Imports are lazy: ``from nitrogen.options import EngineOptions`` or ``nitrogen.frames`` never load
torch, so command-line tools and health checks start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BUTTON_NAMES": "actions",
    "decode_actions": "actions",
    "CheckpointError": "errors",
    "NitrogenError": "errors",
    "EngineOptions": "options",
    "FrameError": "frames",
    "InferenceEngine": "engine",
    "InferenceSession": "session",
    "EnginePool": "pool",
}

__all__ = [
    "BUTTON_NAMES",
    "CheckpointError",
    "EngineOptions",
    "EnginePool",
    "FrameError",
    "InferenceEngine",
    "InferenceSession",
    "NitrogenError",
    "decode_actions",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nitrogen' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
