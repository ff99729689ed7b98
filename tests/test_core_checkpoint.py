"""Loading checkpoints: both config encodings, safety against hostile pickles, clear errors."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict

from nitrogen import CheckpointError, EngineOptions, InferenceEngine, InferenceSession
from nitrogen.checkpoint import read_checkpoint

NO_WARMUP = EngineOptions(warmup=False)


def _raw(golden_dir: Path, name: str = "tiny-a") -> dict:
    return torch.load(golden_dir / f"{name}.pt", weights_only=False)


def _pydantic_config(cfg: dict) -> BaseModel:
    """Rebuild ``cfg`` as pydantic objects living at the original module paths, as ng.pt may hold them."""
    modules: dict[str, types.ModuleType] = {}

    def make(path: str, fields: dict) -> type[BaseModel]:
        mod_name, cls_name = path.rsplit(".", 1)
        cls = type(cls_name, (BaseModel,), {"__annotations__": {k: object for k in fields},
                                            "model_config": ConfigDict(arbitrary_types_allowed=True),
                                            "__module__": mod_name, **fields})
        modules.setdefault(mod_name, types.ModuleType(mod_name))
        setattr(modules[mod_name], cls_name, cls)
        return cls

    model_cfg = dict(cfg["model_cfg"])
    dit = make("nitrogen.flow_matching_transformer.modules.DiTConfig", model_cfg["diffusion_model_cfg"])
    mixer = make("nitrogen.flow_matching_transformer.modules.SelfAttentionTransformerConfig",
                 model_cfg["vl_self_attention_cfg"])
    model_cfg["diffusion_model_cfg"] = dit()
    model_cfg["vl_self_attention_cfg"] = mixer()
    top = {
        "experiment_name": cfg["experiment_name"],
        "model_cfg": make("nitrogen.flow_matching_transformer.nitrogen.NitroGen_Config", model_cfg)(),
        "tokenizer_cfg": make("nitrogen.mm_tokenizers.NitrogenTokenizerConfig", cfg["tokenizer_cfg"])(),
        "modality_cfg": make("nitrogen.cfg.ModalityConfig", cfg["modality_cfg"])(),
    }
    obj = make("nitrogen.cfg.CkptConfig", top)()
    return obj, modules


def test_pydantic_config_objects_load_like_a_dict(golden_dir, golden, tmp_path):
    raw = _raw(golden_dir)
    obj, modules = _pydantic_config(raw["ckpt_config"])
    saved = dict(sys.modules)
    sys.modules.update(modules)
    try:
        torch.save({**raw, "ckpt_config": obj}, tmp_path / "pyd.pt")
    finally:
        for name in modules:
            if name not in saved:
                del sys.modules[name]
    data = (tmp_path / "pyd.pt").read_bytes()
    assert b"NitroGen_Config" in data and b"CkptConfig" in data
    loaded = read_checkpoint(tmp_path / "pyd.pt")
    assert loaded.config.model_cfg.num_inference_timesteps == 4
    assert loaded.config.model_cfg.diffusion_model_cfg.interleave_self_attention is True
    g = golden("tiny-a")
    session = InferenceSession.from_checkpoint(tmp_path / "pyd.pt", device="cpu", options=NO_WARMUP)
    np.testing.assert_allclose(session.predict_raw(g["image_0"], seed=100), g["action_tensor_0"], atol=1e-4)


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_hostile_pickle_is_refused_and_runs_nothing(golden_dir, tmp_path):
    marker = tmp_path / "pwned"
    raw = _raw(golden_dir)
    raw["ckpt_config"] = {**raw["ckpt_config"], "experiment_name": _Exploit(marker)}
    torch.save(raw, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"system"):
        InferenceEngine.from_checkpoint(tmp_path / "evil.pt", device="cpu", options=NO_WARMUP)
    assert not marker.exists()


def test_hostile_import_of_unknown_module_is_refused_before_import(tmp_path):
    # GLOBAL 'evilmod payload' then REDUCE: the module must never be imported.
    payload = b"\x80\x02cevil_module_that_must_not_import\npayload\n)R."
    (tmp_path / "legacy.pt").write_bytes(payload)
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "legacy.pt")
    assert "evil_module_that_must_not_import" not in sys.modules


def test_truncated_file(golden_dir, tmp_path):
    data = (golden_dir / "tiny-a.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a NitroGen checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a NitroGen checkpoint"):
        read_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a dict with 'ckpt_config' and 'model'"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")


def test_missing_unexpected_and_mismatched_keys(golden_dir, tmp_path):
    raw = _raw(golden_dir)
    state = dict(raw["model"])
    del state["model.proj_out_2.bias"]
    state["model.extra.weight"] = torch.zeros(2)
    state["action_decoder.layer1.b"] = torch.zeros(1, 7)
    torch.save({**raw, "model": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        InferenceEngine.from_checkpoint(tmp_path / "bad.pt", device="cpu", options=NO_WARMUP)
    msg = str(err.value)
    assert "missing keys (1): model.proj_out_2.bias" in msg
    assert "unexpected keys (1): model.extra.weight" in msg
    assert "action_decoder.layer1.b: checkpoint (1, 7) vs model (1, 64)" in msg


def test_invalid_config_names_the_field(golden_dir, tmp_path):
    raw = _raw(golden_dir)
    cfg = {**raw["ckpt_config"], "model_cfg": {**raw["ckpt_config"]["model_cfg"]}}
    del cfg["model_cfg"]["action_horizon"]
    torch.save({**raw, "ckpt_config": cfg}, tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match="action_horizon"):
        read_checkpoint(tmp_path / "cfg.pt")


def test_vision_config_from_shapes_and_known_encoder_table(golden_dir, tmp_path):
    raw = _raw(golden_dir, "tiny-b")
    del raw["vision_config"]
    torch.save(raw, tmp_path / "noname.pt")
    with pytest.raises(CheckpointError, match=r"unknown vision_encoder_name 'test/siglip-tiny-4h'.*"
                                              r"google/siglip2-large-patch16-256"):
        read_checkpoint(tmp_path / "noname.pt")
    cfg = {**raw["ckpt_config"], "model_cfg": {**raw["ckpt_config"]["model_cfg"]}}
    # a table entry with 12 heads: sizes still come from the tensors
    cfg["model_cfg"]["vision_encoder_name"] = "google/siglip2-base-patch16-256"
    torch.save({**raw, "ckpt_config": cfg}, tmp_path / "base.pt")
    vision = read_checkpoint(tmp_path / "base.pt").vision
    assert (vision.hidden_size, vision.num_hidden_layers, vision.intermediate_size) == (32, 12, 64)
    assert (vision.image_size, vision.patch_size, vision.num_attention_heads) == (256, 16, 12)


def test_explicit_vision_config_wins(golden_dir):
    loaded = read_checkpoint(golden_dir / "tiny-b.pt")
    assert loaded.vision.num_attention_heads == 4


def test_sizes_come_from_the_checkpoint_horizon_18_and_8_steps(golden_dir, tmp_path):
    """Nothing assumes the golden (or released) numbers: horizon and step count follow the config."""
    raw = _raw(golden_dir)
    cfg = {**raw["ckpt_config"], "model_cfg": {**raw["ckpt_config"]["model_cfg"]}}
    cfg["model_cfg"].update(action_horizon=18, num_inference_timesteps=8)
    torch.save({**raw, "ckpt_config": cfg}, tmp_path / "h18.pt")
    session = InferenceSession.from_checkpoint(tmp_path / "h18.pt", device="cpu", options=NO_WARMUP)
    pred = session.predict(np.zeros((240, 320, 3), np.uint8), seed=1)
    assert pred["j_left"].shape == (18, 2) and pred["buttons"].shape == (18, 21)
    info = session.info()
    assert (info["action_horizon"], info["num_inference_timesteps"]) == (18, 8)
    with pytest.raises(ValueError, match=r"noise has shape \(16, 25\); expected \(18, 25\)"):
        session.predict(np.zeros((8, 8, 3), np.uint8), noise=np.zeros((16, 25), np.float32))
