"""LoRA adapters made with peft on a golden checkpoint: merged at load, served as peft's own merge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import peft
import pytest
import torch
from nitrogen_server.app import ServerThread
from server_testkit import ModelClient, TcpClient, encode, server_settings

from nitrogen import CheckpointError, EngineOptions, InferenceSession
from nitrogen.checkpoint import build_model, read_checkpoint

TARGETS = ["to_q", "to_v", "q_proj", "fc1", "linear_1", "proj_out_2", "patch_embedding"]
NO_WARMUP = EngineOptions(warmup=False)


@pytest.fixture(scope="module")
def lora(golden_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(adapter directory, checkpoint with peft's merge_and_unload weights) for tiny-a."""
    out = tmp_path_factory.mktemp("lora")
    model = build_model(read_checkpoint(golden_dir / "tiny-a.pt"))
    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    tuned = peft.get_peft_model(model, config)
    tuned.save_pretrained(out / "adapter")
    merged = tuned.merge_and_unload().state_dict()
    raw = torch.load(golden_dir / "tiny-a.pt", weights_only=False)
    torch.save({**raw, "model": {k: v.contiguous() for k, v in merged.items() if k in raw["model"]}},
               out / "merged.pt")
    return out / "adapter", out / "merged.pt"


def test_merged_adapter_equals_peft_merge(golden_dir, golden, lora):
    adapter, merged = lora
    g = golden("tiny-a")
    ours = InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu", options=NO_WARMUP,
                                            adapters=[adapter])
    theirs = InferenceSession.from_checkpoint(merged, device="cpu", options=NO_WARMUP)
    for i in range(2):
        x, ref = ours.predict_raw(g[f"image_{i}"], seed=100 + i), theirs.predict_raw(g[f"image_{i}"], seed=100 + i)
        np.testing.assert_allclose(x, ref, atol=1e-5, rtol=0)
        assert np.abs(x - g[f"action_tensor_{i}"]).max() > 1e-3  # the adapter really changed the model
    assert ours.info()["adapters"][0]["r"] == 4 and ours.info()["adapters"][0]["modules"] > 10
    ours.engine.close(), theirs.engine.close()


def test_server_with_adapter_answers_like_the_merged_weights(golden_dir, golden, lora, server_errors):
    adapter, merged = lora
    g = golden("tiny-a")
    reference = InferenceSession.from_checkpoint(merged, device="cpu", options=NO_WARMUP)
    want = [reference.predict(g[f"image_{i}"], seed=100 + i) for i in range(2)]
    settings = server_settings(str(golden_dir / "tiny-a.pt"), adapter=str(adapter))
    with ServerThread(settings) as srv, TcpClient(srv.tcp_port) as tcp, ModelClient(srv.zmq_port) as zmq:
        assert tcp.request({"type": "info"})["info"]["adapters"][0]["path"] == str(adapter)
        for i in range(2):
            png = encode(g[f"image_{i}"], "PNG")
            reply = tcp.request({"type": "predict", "len": len(png), "seed": 100 + i}, png)
            assert reply["pred"]["buttons"] == want[i]["buttons"].astype(int).tolist()
            np.testing.assert_allclose(reply["pred"]["j_left"], want[i]["j_left"], atol=1e-4)
            zreply = zmq.predict(g[f"image_{i}"], seed=100 + i)
            for key in ("j_left", "j_right", "buttons"):
                np.testing.assert_array_equal(zreply["pred"][key], want[i][key])
    reference.engine.close()


def test_bin_adapter_loads_safely_and_hostile_bin_is_refused(golden_dir, golden, lora, tmp_path):
    adapter, _ = lora
    from safetensors.torch import load_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    torch.save(tensors, tmp_path / "bin" / "adapter_model.bin")
    g = golden("tiny-a")
    a = InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu", options=NO_WARMUP,
                                         adapters=[adapter])
    b = InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu", options=NO_WARMUP,
                                         adapters=[tmp_path / "bin"])
    np.testing.assert_array_equal(a.predict_raw(g["image_0"], seed=1), b.predict_raw(g["image_0"], seed=1))
    a.engine.close(), b.engine.close()

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"base_model.model.model.proj_out_2.lora_A.weight": Exploit()}, tmp_path / "bin" / "adapter_model.bin")
    with pytest.raises(CheckpointError, match=r"adapter_model\.bin.*could not be loaded safely.*system"):
        InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu", adapters=[tmp_path / "bin"])
    assert not marker.exists()


def _variant(adapter: Path, dest: Path, config: dict | None = None, rename: tuple[str, str] | None = None,
             drop_rank: bool = False) -> Path:
    from safetensors.torch import load_file, save_file

    dest.mkdir()
    cfg = {**json.loads((adapter / "adapter_config.json").read_text()), **(config or {})}
    (dest / "adapter_config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    if rename:
        tensors = {k.replace(*rename): v for k, v in tensors.items()}
    if drop_rank:
        key = next(k for k in tensors if k.endswith("proj_out_2.lora_A.weight"))
        tensors[key] = tensors[key][:2].contiguous()
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    return dest


@pytest.mark.parametrize("kind, expected", [
    ("missing", r"targets modules this model lacks: model\.proj_out_9"),
    ("rank", r"proj_out_2 has lora_A \(2, \d+\) and lora_B \(\d+, 4\); expected rank r=4"),
    ("dora", r"use_dora=True is not supported"),
    ("noconfig", r"has no adapter_config\.json"),
])
def test_bad_adapters_get_clear_errors(golden_dir, lora, tmp_path, kind, expected):
    adapter, _ = lora
    if kind == "missing":
        bad = _variant(adapter, tmp_path / kind, rename=("proj_out_2", "proj_out_9"))
    elif kind == "rank":
        bad = _variant(adapter, tmp_path / kind, drop_rank=True)
    elif kind == "dora":
        bad = _variant(adapter, tmp_path / kind, config={"use_dora": True})
    else:
        bad = tmp_path / kind
        bad.mkdir()
    with pytest.raises(CheckpointError, match=expected):
        InferenceSession.from_checkpoint(golden_dir / "tiny-a.pt", device="cpu", adapters=[bad])
