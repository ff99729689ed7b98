"""LoRA adapters trained with PEFT on the original model, merged into the weights once at load.

A PEFT adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or the older
pickled ``adapter_model.bin``). Its keys name the original modules (``base_model.model.<module>.
lora_A.weight``); ours carry the checkpoint's names, so they apply as they are. Merging follows PEFT's
documented rule, ``W += scale * B @ A`` with ``scale = lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA),
computed in float32. We apply the rule ourselves rather than through ``peft`` because peft would wrap
the whole model only to unwrap it again, and it is not needed at run time (the tests use it as the
reference). Anything the rule does not cover (DoRA, trained biases, saved full modules) is refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, refusal_reason

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                  r"(?:\.(?P<name>[A-Za-z0-9_]+))?(?:\.weight)?$")


@dataclass
class Adapter:
    path: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def describe(self) -> dict[str, Any]:
        """What ``info`` reports: where it came from and what it changes."""
        modules = sorted({_KEY.match(k).group("module") for k in self.tensors if _KEY.match(k)})
        return {"path": self.path, "r": self.config.get("r"), "lora_alpha": self.config.get("lora_alpha"),
                "modules": len(modules), "base_model": self.config.get("base_model_name_or_path")}


def read_adapter(directory: str | Path) -> Adapter:
    """Read and check an adapter directory (nothing is executed: safetensors, or torch's safe loader)."""
    path = Path(directory)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"adapter {str(path)!r} has no {CONFIG_FILE}; expected a PEFT adapter directory "
                              f"({CONFIG_FILE} + {' or '.join(WEIGHT_FILES)})")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"adapter {str(path)!r}: {CONFIG_FILE} is not readable JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"adapter {str(path)!r}: peft_type is {config.get('peft_type')!r}; "
                              "only LORA adapters can be merged")
    for flag, bad in (("use_dora", True), ("bias", "all"), ("bias", "lora_only")):
        if config.get(flag) == bad:
            raise CheckpointError(f"adapter {str(path)!r}: {flag}={bad!r} is not supported; "
                                  "expected a plain LoRA adapter (use_dora false, bias 'none')")
    if config.get("modules_to_save"):
        raise CheckpointError(f"adapter {str(path)!r}: modules_to_save {config['modules_to_save']} is not "
                              "supported (only LoRA weights are merged)")
    return Adapter(str(path), config, _read_tensors(path))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise CheckpointError(f"adapter {str(path)!r} has no {' or '.join(WEIGHT_FILES)}")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(weights))
        else:  # a pickle: only tensors may come out of it, as for ng.pt
            tensors = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable or unsafe: one message naming the file
        raise CheckpointError(f"adapter weights {str(weights)!r} could not be loaded safely: "
                              f"{refusal_reason(exc)[:300]}") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise CheckpointError(f"adapter weights {str(weights)!r} are not a dict of tensors")
    return tensors


def _scale(config: dict[str, Any], module: str) -> tuple[int, float]:
    """(rank, alpha) for one module: PEFT's rank_pattern/alpha_pattern override r/lora_alpha by key."""
    r, alpha = config.get("r", 8), config.get("lora_alpha", 8)
    for pattern, value in (config.get("rank_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            r = value
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = value
    return r, alpha


def merge_adapter(state: dict[str, torch.Tensor], adapter: Adapter) -> dict[str, torch.Tensor]:
    """A new state dict with the adapter merged (the input's tensors are not modified)."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    embeddings: set[str] = set()
    for key, tensor in adapter.tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise CheckpointError(f"adapter {adapter.path!r}: key {key!r} is not a LoRA weight "
                                  "(expected base_model.model.<module>.lora_A/lora_B.weight)")
        kind = m.group("kind")
        pairs.setdefault(m.group("module"), {})[kind.replace("embedding_", "")] = tensor
        if "embedding" in kind:
            embeddings.add(m.group("module"))
    merged = dict(state)
    missing = sorted(mod for mod in pairs if f"{mod}.weight" not in state)
    if missing:
        raise CheckpointError(f"adapter {adapter.path!r} targets modules this model lacks: "
                              f"{', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"lora_A", "lora_B"}:
            raise CheckpointError(f"adapter {adapter.path!r}: module {module!r} has {sorted(ab)}; "
                                  "expected both lora_A and lora_B")
        weight = state[f"{module}.weight"]
        r, alpha = _scale(adapter.config, module)
        scale = alpha / math.sqrt(r) if adapter.config.get("use_rslora") else alpha / r
        delta = _delta(module, ab["lora_A"].float(), ab["lora_B"].float(), weight.shape, adapter, r,
                       module in embeddings)
        if adapter.config.get("fan_in_fan_out"):
            delta = delta.T
        if delta.shape != weight.shape:
            raise CheckpointError(f"adapter {adapter.path!r}: {module} delta has shape {tuple(delta.shape)}, "
                                  f"the model's weight {tuple(weight.shape)}")
        merged[f"{module}.weight"] = (weight.float() + scale * delta).to(weight.dtype)
    return merged


def _delta(module: str, a: torch.Tensor, b: torch.Tensor, shape: torch.Size, adapter: Adapter,
           r: int, embedding: bool) -> torch.Tensor:
    """B @ A for Linear (A: r x in, B: out x r), Conv2d (A: r x in x kh x kw, B: out x r x 1 x 1) and
    Embedding (A: r x num, B: dim x r, stored transposed)."""
    if a.shape[0] != b.shape[1] or a.shape[0] != r:
        raise CheckpointError(f"adapter {adapter.path!r}: {module} has lora_A {tuple(a.shape)} and lora_B "
                              f"{tuple(b.shape)}; expected rank r={r} in both")
    if embedding:
        return (b @ a).T
    if a.dim() == 4:
        return (b.flatten(1) @ a.flatten(1)).view(shape)
    return b @ a
