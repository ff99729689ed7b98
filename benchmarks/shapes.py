"""A randomly initialised model with the released ng.pt's reported shape (CHECKPOINT.md)."""

from __future__ import annotations

from nitrogen.demo import build_random_model
from nitrogen.modeling import NitroGenModel

NG_CONFIG = {
    "experiment_name": "ng-shaped-random",
    "model_cfg": {
        "diffusion_model_cfg": {"num_attention_heads": 16, "attention_head_dim": 64, "output_dim": 1024,
                                "num_layers": 8, "dropout": 0.2, "interleave_self_attention": True,
                                "cross_attention_dim": 1024},
        "vl_self_attention_cfg": {"num_attention_heads": 16, "attention_head_dim": 64, "num_layers": 4,
                                  "dropout": 0.2},
        "hidden_size": 1024, "action_dim": 25, "action_horizon": 18, "num_inference_timesteps": 16,
        "vision_encoder_name": "google/siglip2-large-patch16-256", "vision_hidden_size": 1024,
    },
    "tokenizer_cfg": {"max_sequence_length": 300, "action_horizon": 18},
    "modality_cfg": {"frame_per_sample": 1},
}
NG_VISION = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
             "num_attention_heads": 16, "image_size": 256, "patch_size": 16}


def build_ng_shaped_model(seed: int = 0) -> NitroGenModel:
    return build_random_model(NG_CONFIG, NG_VISION, seed)
