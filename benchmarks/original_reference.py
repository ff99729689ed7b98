"""Run NVIDIA's own NitroGen code on this machine: reference vectors and timings to hold ours against.

Why this exists: bf16 results depend on the CPU's kernels (an AVX2 host and an AVX512-BF16 one round
differently), and "N times faster than the original" means nothing unless the original ran on the same
machine. The golden vectors in ../shared were made on one CPU kind; this makes them on the CPU at hand.

It runs in its own environment with the original's dependencies and never imports ours (both packages are
called `nitrogen`):

    python -m venv /tmp/orig && /tmp/orig/bin/pip install torch==2.13.0 transformers==4.57.1 \\
        diffusers einops pyyaml pydantic polars pillow
    git clone https://github.com/MineDojo/NitroGen ~/NitroGen      # any checkout of the original
    /tmp/orig/bin/python benchmarks/original_reference.py vectors --original ~/NitroGen \\
        --checkpoint ../shared/golden/tiny-b.pt --frames ../shared/golden/tiny-b.npz \\
        --dtype bfloat16 --out tiny-b.bf16.npz
    /tmp/orig/bin/python benchmarks/original_reference.py time --original ~/NitroGen --iters 3

What is the original's and what is this file's: the model, tokenizer and image processor are the
original's classes, called as its `InferenceSession._predict_flowmatching` calls them. That method hard-codes
"cuda", so the dozen lines that build its inputs are restated here for the CPU, and x(0) is taken from the
frames file instead of `torch.randn` (the only random draw of `get_action`), so that runs compare.
The Hugging Face downloads the original makes at load are replaced offline: the vision tower is built from
its config (`vision_config` in the checkpoint, or SigLIP 2 large for `time`), the processor as SigLIP 2's
(256x256 bicubic, mean = std = 0.5).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("original_reference")
SHAPE_FILE = Path(__file__).with_name("ng_shape.json")


def import_original(checkout: Path, vision_config: dict[str, Any]) -> Any:
    """Import the original's package from `checkout`, its vision tower built offline from `vision_config`."""
    if not (checkout / "nitrogen" / "flow_matching_transformer" / "nitrogen.py").is_file():
        raise SystemExit(f"--original {checkout}: not a checkout of NVIDIA's NitroGen "
                         "(expected nitrogen/flow_matching_transformer/nitrogen.py in it)")
    if "nitrogen" in sys.modules:
        raise SystemExit("another `nitrogen` package is already imported; run this in the original's environment")
    import transformers

    def offline_tower(name: str, *args: Any, **kwargs: Any) -> Any:
        logger.info("vision tower %r built from its config (random weights until a checkpoint is loaded)", name)
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision_config))

    transformers.SiglipVisionModel.from_pretrained = offline_tower  # the original calls it by class attribute
    # The original's `nitrogen` has no __init__.py: a regular package of that name anywhere on the path
    # (ours, through PYTHONPATH or an install) would win over it whatever the order, so drop those.
    sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "nitrogen" / "__init__.py").is_file()]
    sys.path.insert(0, str(checkout))
    import nitrogen.cfg
    import nitrogen.flow_matching_transformer.nitrogen as original_model
    import nitrogen.mm_tokenizers as original_tokenizers
    return argparse.Namespace(cfg=nitrogen.cfg, model=original_model, tokenizers=original_tokenizers)


def build(orig: Any, ckpt_config: dict[str, Any], state: dict[str, torch.Tensor] | None,
          game_mapping: dict[str, int] | None) -> tuple[Any, Any, Any]:
    """The original's `load_model`, on the CPU, with the checkpoint's game table when it has one."""
    cfg = orig.cfg.CkptConfig.model_validate(ckpt_config)
    cfg.tokenizer_cfg.training = False
    tokenizer = orig.tokenizers.NitrogenTokenizer(cfg.tokenizer_cfg)
    if game_mapping is not None and 0 not in game_mapping.values():
        game_mapping = {None: 0, **game_mapping}  # the original's table starts with "no game" (its row 0)
    tokenizer.game_mapping = game_mapping
    model = orig.model.NitroGen(config=cfg.model_cfg, game_mapping=game_mapping)
    if state is not None:
        model.load_state_dict(state)
    model.eval()
    tokenizer.eval()
    return cfg, model, tokenizer


@contextlib.contextmanager
def fixed_noise(noise: torch.Tensor) -> Iterator[None]:
    """`get_action`'s one `torch.randn` returns `noise` (batch 1) instead of a fresh draw."""
    real = torch.randn

    def randn(*args: Any, size: Any = None, dtype: Any = None, device: Any = None, **kw: Any) -> torch.Tensor:
        shape = tuple(size if size is not None else args)
        if shape != (1, *noise.shape):
            raise RuntimeError(f"unexpected torch.randn{shape}; expected (1, {tuple(noise.shape)})")
        return noise[None].to(dtype=dtype or torch.float32, device=device).clone()

    torch.randn = randn
    try:
        yield
    finally:
        torch.randn = real


def predict(model: Any, tokenizer: Any, frames_seen: deque, context: int, cfg_scale: float,
            game: str | None, noise: torch.Tensor, dtype: torch.dtype) -> dict[str, np.ndarray]:
    """One `_predict_flowmatching` call of the original, on the CPU."""
    pixel_values = torch.cat(list(frames_seen), dim=0)
    available = len(frames_seen)
    frames = torch.zeros((context, *pixel_values.shape[1:]), dtype=pixel_values.dtype)
    frames[-available:] = pixel_values
    dropped = torch.zeros((context,), dtype=torch.bool)
    dropped[:context - available] = True
    with_history = tokenizer.encode({"frames": frames, "dropped_frames": dropped, "game": game})
    last_only = torch.ones((context,), dtype=torch.bool)
    last_only[-1] = False
    without_history = tokenizer.encode({"frames": frames, "dropped_frames": last_only, "game": None})
    for data in (with_history, without_history):
        for k, v in data.items():
            data[k] = (v.unsqueeze(0) if isinstance(v, torch.Tensor)
                       else torch.tensor(v).unsqueeze(0) if isinstance(v, np.ndarray) else [v])
    autocast = (torch.autocast(device_type="cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast, fixed_noise(noise):
        if cfg_scale == 1.0:
            out = model.get_action(with_history)
        else:
            out = model.get_action_with_cfg(with_history, without_history, cfg_scale=cfg_scale)
        decoded = tokenizer.decode(out)
    result = {k: v.float().squeeze(0).numpy() for k, v in decoded.items()}
    result["action_tensor"] = out["action_tensor"].float().squeeze(0).numpy()
    return result


def image_processor() -> Any:
    from PIL import Image
    from transformers import SiglipImageProcessor
    return SiglipImageProcessor(size={"height": 256, "width": 256}, resample=Image.Resampling.BICUBIC)


def cmd_vectors(args: argparse.Namespace) -> None:
    raw = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if "vision_config" not in raw:
        raise SystemExit(f"{args.checkpoint}: no `vision_config` entry (the golden checkpoints carry one)")
    orig = import_original(args.original, raw["vision_config"])
    _, model, tokenizer = build(orig, raw["ckpt_config"], raw["model"], raw.get("game_mapping"))
    golden = np.load(args.frames)
    n, context, cfg_scale = int(golden["n_steps"]), int(golden["context_length"]), float(golden["cfg_scale"])
    game = str(golden["game"]) if "game" in golden.files else None
    proc, seen = image_processor(), deque(maxlen=context)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    out: dict[str, Any] = {k: golden[k] for k in golden.files if golden[k].ndim == 0}
    for i in range(n):
        pixels = proc([golden[f"image_{i}"]], return_tensors="pt")["pixel_values"]
        gap = float((pixels[0] - torch.from_numpy(golden[f"pixel_values_{i}"])).abs().max())
        if gap:
            logger.warning("frame %d: the processor's pixel_values differ from the file's by %.3g", i, gap)
        seen.append(pixels)
        got = predict(model, tokenizer, seen, context, cfg_scale, game, torch.from_numpy(golden[f"noise_{i}"]), dtype)
        for k, v in got.items():
            out[f"{k}_{i}"] = v
        ref = golden.get(f"action_tensor_{i}")
        logger.info("predict %d: action_tensor max |original %s - frames file| = %.3g", i, args.dtype,
                    float(np.abs(got["action_tensor"] - ref).max()) if ref is not None else float("nan"))
    out["cpu_capability"] = np.array(torch.backends.cpu.get_cpu_capability())
    np.savez(args.out, **out)
    logger.info("wrote %s (%d predicts, %s, CPU capability %s)", args.out, n, args.dtype,
                torch.backends.cpu.get_cpu_capability())


def cmd_time(args: argparse.Namespace) -> None:
    shape = json.loads(SHAPE_FILE.read_text())
    orig = import_original(args.original, shape["vision"])
    cfg, model, tokenizer = build(orig, shape["config"], None, None)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    context = cfg.modality_cfg.frame_per_sample
    proc, seen = image_processor(), deque(maxlen=context)
    rng = np.random.default_rng(0)
    noise = torch.zeros(cfg.model_cfg.action_horizon, cfg.model_cfg.action_dim)
    times = []
    for i in range(args.iters + 1):
        frame = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        t0 = time.perf_counter()
        seen.append(proc([frame], return_tensors="pt")["pixel_values"])
        predict(model, tokenizer, seen, context, 1.0, None, noise.normal_(generator=torch.Generator().manual_seed(i)),
                dtype)
        dt = time.perf_counter() - t0
        logger.info("predict %d: %.3f s%s", i, dt, " (warm-up, not counted)" if i == 0 else "")
        if i:
            times.append(dt)
    print(json.dumps({"original_predict_s": {"p50": statistics.median(times), "min": min(times), "max": max(times),
                                             "n": len(times)},
                      "dtype": args.dtype, "threads": torch.get_num_threads(),
                      "cpu": platform.processor() or platform.machine(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    vec = sub.add_parser("vectors", help="the original's outputs for a golden checkpoint's frames and noise")
    vec.add_argument("--checkpoint", type=Path, required=True)
    vec.add_argument("--frames", type=Path, required=True, help="a golden NAME.npz: frames, noise, settings")
    vec.add_argument("--out", type=Path, required=True)
    tim = sub.add_parser("time", help="seconds per predict of the original on an ng.pt-shaped random model")
    tim.add_argument("--iters", type=int, default=3)
    tim.add_argument("--threads", type=int, default=None)
    for p in (vec, tim):
        p.add_argument("--original", type=Path, required=True, help="a checkout of NVIDIA's NitroGen")
        p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                       help="bfloat16: the original's mixed precision (autocast), as its server runs")
    args = ap.parse_args()
    (cmd_vectors if args.cmd == "vectors" else cmd_time)(args)


if __name__ == "__main__":
    main()
