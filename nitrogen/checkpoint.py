"""Reading ``ng.pt``: safe unpickling, config validation, the vision tower's config, strict loading."""

from __future__ import annotations

import logging
import math
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from . import config_pickle
from .config import CheckpointConfig, VisionConfig
from .errors import CheckpointError, refusal_reason
from .modeling import NitroGenModel, count_parameters

logger = logging.getLogger(__name__)

# Attention heads of the published SigLIP / SigLIP 2 vision towers: the one size tensor shapes can't
# tell. Base towers have 12 heads; large, so400m and giant-opt have 16.
_HEADS_BY_FAMILY = {"base": 12, "large": 16, "so400m": 16, "giant-opt": 16}
KNOWN_VISION_ENCODERS: dict[str, int] = {
    f"google/{name}": _HEADS_BY_FAMILY[family]
    for family, names in {
        "base": ["siglip-base-patch16-224", "siglip-base-patch16-256", "siglip-base-patch16-384",
                 "siglip-base-patch16-512", "siglip-base-patch16-256-multilingual",
                 "siglip2-base-patch16-224", "siglip2-base-patch16-256", "siglip2-base-patch16-384",
                 "siglip2-base-patch16-512", "siglip2-base-patch32-256"],
        "large": ["siglip-large-patch16-256", "siglip-large-patch16-384",
                  "siglip2-large-patch16-256", "siglip2-large-patch16-384", "siglip2-large-patch16-512"],
        "so400m": ["siglip-so400m-patch14-224", "siglip-so400m-patch14-384",
                   "siglip-so400m-patch16-256-i18n", "siglip2-so400m-patch14-224",
                   "siglip2-so400m-patch14-384", "siglip2-so400m-patch16-256",
                   "siglip2-so400m-patch16-384", "siglip2-so400m-patch16-512"],
        "giant-opt": ["siglip2-giant-opt-patch16-256", "siglip2-giant-opt-patch16-384"],
    }.items()
    for name in names
}

_VISION = "vision_encoder."


@dataclass
class LoadedCheckpoint:
    config: CheckpointConfig
    vision: VisionConfig
    state_dict: dict[str, torch.Tensor]
    num_games: int
    path: str
    game_names: dict[str, int]


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load and validate a checkpoint file without executing anything it contains."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        with torch.serialization.safe_globals(config_pickle.SAFE_GLOBALS):
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:  # torch's safe loader refused a global: name it
        raise CheckpointError(
            f"refusing to load checkpoint {str(path)!r}: {refusal_reason(exc)} "
            "(a NitroGen checkpoint needs only tensors, builtins and its config classes)"
        ) from None
    except Exception as exc:  # torch raises many types for a bad file; all mean the same to the user
        raise CheckpointError(
            f"{str(path)!r} is not a NitroGen checkpoint (truncated or not a torch.save file): {exc}"
        ) from exc
    return parse_checkpoint(raw, str(path))


def parse_checkpoint(raw: Any, path: str = "<memory>") -> LoadedCheckpoint:
    """Validate the unpickled ``{"ckpt_config", "model"}`` dict and derive the vision config."""
    if not isinstance(raw, dict) or "model" not in raw or "ckpt_config" not in raw:
        found = sorted(map(str, raw.keys())) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{path!r} is not a NitroGen checkpoint: expected a dict with 'ckpt_config' and 'model', "
            f"found {found}"
        )
    state = raw["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path!r} is not a NitroGen checkpoint: 'model' is not a state dict")
    try:
        config = CheckpointConfig.model_validate(config_pickle.to_plain(raw["ckpt_config"]))
    except ValidationError as exc:
        raise CheckpointError(f"{path!r} has an invalid ckpt_config: {exc}") from exc
    if config.model_cfg.model_type != "nitrogen":
        raise CheckpointError(
            f"{path!r} is not a NitroGen checkpoint: model_type is {config.model_cfg.model_type!r}"
        )
    vision = resolve_vision_config(config, state, raw.get("vision_config"), path)
    games = state.get("game_embedding.weight")
    num_games = int(games.shape[0]) if games is not None else 0
    return LoadedCheckpoint(config, vision, state, num_games, path, _game_names(raw, num_games, path))


def _game_names(raw: dict, num_games: int, path: str) -> dict[str, int]:
    """Optional ``game_mapping`` entry (name -> row of game_embedding); ids work without it."""
    mapping = raw.get("game_mapping")
    if mapping is None:
        return {}
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and 0 <= v < num_games for k, v in mapping.items()
    ):
        raise CheckpointError(f"{path!r}: game_mapping must map game names to rows 0..{num_games - 1}")
    return dict(mapping)


def resolve_vision_config(config: CheckpointConfig, state: dict[str, torch.Tensor],
                          explicit: Any, path: str) -> VisionConfig:
    """An explicit ``vision_config`` wins; otherwise sizes from shapes, heads from the known table."""
    if explicit is not None:
        try:
            return VisionConfig.model_validate(config_pickle.to_plain(explicit))
        except ValidationError as exc:
            raise CheckpointError(f"{path!r} has an invalid vision_config: {exc}") from exc
    try:
        patch = state[_VISION + "embeddings.patch_embedding.weight"]
        positions = state[_VISION + "embeddings.position_embedding.weight"]
        fc1 = state[_VISION + "encoder.layers.0.mlp.fc1.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{path!r} is not a NitroGen checkpoint: missing {exc.args[0]!r}") from None
    layers = {int(m.group(1)) for k in state if (m := re.match(r"vision_encoder\.encoder\.layers\.(\d+)\.", k))}
    side = math.isqrt(positions.shape[0])
    if side * side != positions.shape[0]:
        raise CheckpointError(f"{path!r}: vision position table has {positions.shape[0]} rows, not a square grid")
    name = config.model_cfg.vision_encoder_name
    if name not in KNOWN_VISION_ENCODERS:
        raise CheckpointError(
            f"{path!r}: unknown vision_encoder_name {name!r}, so its number of attention heads is unknown; "
            f"known encoders: {', '.join(sorted(KNOWN_VISION_ENCODERS))} "
            "(or add a 'vision_config' entry with num_attention_heads to the checkpoint)"
        )
    return VisionConfig(
        hidden_size=patch.shape[0], num_channels=patch.shape[1], patch_size=patch.shape[2],
        image_size=side * patch.shape[2], intermediate_size=fc1.shape[0],
        num_hidden_layers=max(layers) + 1, num_attention_heads=KNOWN_VISION_ENCODERS[name],
    )


def build_model(ckpt: LoadedCheckpoint) -> NitroGenModel:
    """Build the network on the meta device and adopt the checkpoint tensors (no random init)."""
    with torch.device("meta"):
        model = NitroGenModel(ckpt.config, ckpt.vision, num_games=ckpt.num_games)
    check_state_dict(model, ckpt.state_dict, ckpt.path)
    model.load_state_dict(ckpt.state_dict, strict=True, assign=True)
    _materialise_derived_buffers(model)
    model.eval().requires_grad_(False)
    logger.info("loaded %s: %.3g parameters", ckpt.path, count_parameters(model))
    return model


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """One error listing every missing/unexpected key and every shape mismatch (both shapes)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
    if mismatched:
        parts.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:20])}")
    raise CheckpointError(f"{path!r} does not match the model its config describes: " + " | ".join(parts))


def _materialise_derived_buffers(model: torch.nn.Module) -> None:
    """Non-persistent buffers are not in the checkpoint; rebuild the ones SigLIP derives."""
    emb = model.vision_encoder.embeddings
    if hasattr(emb, "position_ids"):
        emb.register_buffer(
            "position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
    leftovers = [n for n, b in model.named_buffers() if b.is_meta]
    if leftovers:
        raise CheckpointError(f"internal: buffers left uninitialised after loading: {leftovers}")
