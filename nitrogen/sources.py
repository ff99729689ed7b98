"""Where a model comes from: the demo, a local (or downloaded) ``ng.pt``, plus LoRA adapters.

The file is read and the adapters merged once, here; engines get a factory that builds the network
from the result on their own worker thread, so several engines (devices) share one read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import Adapter, merge_adapter, read_adapter
from .checkpoint import build_model, read_checkpoint
from .demo import build_demo_model
from .modeling import NitroGenModel
from .weights import ensure_checkpoint

DEMO = "demo"


@dataclass
class ModelSourceSpec:
    factory: Callable[[], NitroGenModel]
    path: str
    game_names: dict[str, int] = field(default_factory=dict)
    adapters: list[dict[str, Any]] = field(default_factory=list)


def _demo_with(adapters: list[Adapter]) -> NitroGenModel:
    model = build_demo_model()
    if adapters:
        state = model.state_dict()
        for adapter in adapters:
            state = merge_adapter(state, adapter)
        model.load_state_dict(state)
    return model


def load_source(path_or_demo: str | Path, adapters: Sequence[str | Path] = ()) -> ModelSourceSpec:
    """Read (or download) the checkpoint and merge ``adapters`` in order; nothing is built yet."""
    read = [read_adapter(a) for a in adapters]
    described = [a.describe() for a in read]
    if str(path_or_demo) == DEMO:
        return ModelSourceSpec(lambda: _demo_with(read), DEMO, {}, described)
    path = ensure_checkpoint(path_or_demo)
    loaded = read_checkpoint(path)
    for adapter in read:
        loaded.state_dict = merge_adapter(loaded.state_dict, adapter)
    return ModelSourceSpec(lambda: build_model(loaded), str(path), loaded.game_names, described)
