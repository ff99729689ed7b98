"""A randomly initialised model with the released ng.pt's reported shape (CHECKPOINT.md)."""

from __future__ import annotations

import json
from pathlib import Path

from nitrogen.demo import build_random_model
from nitrogen.modeling import NitroGenModel

# One file for both sides: original_reference.py builds the original's model from it too.
_SHAPE = json.loads((Path(__file__).with_name("ng_shape.json")).read_text())
NG_CONFIG: dict = _SHAPE["config"]
NG_VISION: dict = _SHAPE["vision"]


def build_ng_shaped_model(seed: int = 0) -> NitroGenModel:
    return build_random_model(NG_CONFIG, NG_VISION, seed)
