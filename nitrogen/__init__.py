"""NitroGen inference: checkpoint loading, the model, preprocessing, sessions, batching. No sockets."""

from .actions import BUTTON_NAMES, decode_actions
from .engine import EngineOptions, InferenceEngine
from .errors import CheckpointError, NitrogenError
from .session import InferenceSession

__all__ = [
    "BUTTON_NAMES",
    "CheckpointError",
    "EngineOptions",
    "InferenceEngine",
    "InferenceSession",
    "NitrogenError",
    "decode_actions",
]
