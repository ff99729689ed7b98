"""The demo model: the real architecture at toy size with seeded random weights.

It lets the whole stack (server, clients, Docker) run with no GPU and no download. Its actions are
noise with the right shape: never mistake it for the policy.
"""

from __future__ import annotations

import logging

import torch

from .config import CheckpointConfig, VisionConfig
from .modeling import NitroGenModel

logger = logging.getLogger(__name__)

DEMO_SEED = 1234

DEMO_CONFIG = {
    "experiment_name": "demo",
    "model_cfg": {
        "diffusion_model_cfg": {"num_attention_heads": 2, "attention_head_dim": 16, "output_dim": 32,
                                "num_layers": 2, "dropout": 0.0, "interleave_self_attention": True,
                                "cross_attention_dim": 32},
        "vl_self_attention_cfg": {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 1,
                                  "dropout": 0.0},
        "hidden_size": 32, "action_dim": 25, "action_horizon": 16, "num_inference_timesteps": 4,
        "vision_encoder_name": "demo/siglip-toy", "vision_hidden_size": 32,
    },
    "tokenizer_cfg": {"max_sequence_length": 300, "action_horizon": 16},
    "modality_cfg": {"frame_per_sample": 1},
}
DEMO_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 256, "patch_size": 16}


def build_random_model(config: dict, vision: dict, seed: int) -> NitroGenModel:
    """A randomly initialised model of any shape; seeded, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NitroGenModel(CheckpointConfig.model_validate(config), VisionConfig(**vision))
    return model.eval().requires_grad_(False)


def build_demo_model() -> NitroGenModel:
    """Seeded, so every run (and every machine) gets the same weights."""
    logger.warning("DEMO MODEL: tiny random weights; its actions are MEANINGLESS. "
                   "Pass a real checkpoint (models/ng.pt) to play.")
    return build_random_model(DEMO_CONFIG, DEMO_VISION, DEMO_SEED)
