"""Typed views of the ``ckpt_config`` stored in a NitroGen checkpoint.

Field names and defaults follow the original configuration classes, so a plain dict from any
checkpoint validates here; fields we do not use (training switches) are accepted and ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    """Unknown fields are ignored: newer checkpoints may carry training-only settings."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class TransformerConfig(_Lenient):
    """Shared fields of the DiT and of the vision-language mixer."""

    num_attention_heads: int = 8
    attention_head_dim: int = 64
    output_dim: int = 26
    num_layers: int = 12
    dropout: float = 0.1
    attention_bias: bool = True
    activation_fn: Literal["gelu", "gelu-approximate", "geglu", "geglu-approximate", "swiglu",
                           "linear-silu"] = "gelu-approximate"  # what diffusers' FeedForward builds
    num_embeds_ada_norm: int | None = 1000
    upcast_attention: bool = False
    max_num_positional_embeddings: int = 512
    final_dropout: bool = True
    positional_embeddings: Literal["sinusoidal"] | None = "sinusoidal"
    interleave_self_attention: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


class DiTConfig(TransformerConfig):
    # The original DiT builds AdaLayerNorm blocks only; other values crashed it at the first predict.
    norm_type: Literal["ada_norm"] = "ada_norm"
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-5  # used by norm3 only: the original's AdaLayerNorm always uses 1e-5
    cross_attention_dim: int | None = None


class MixerConfig(TransformerConfig):
    pass


class ModelConfig(_Lenient):
    model_type: str = "nitrogen"
    add_pos_embed: bool = False
    diffusion_model_cfg: DiTConfig
    vl_self_attention_cfg: MixerConfig
    hidden_size: int = 1024
    max_seq_len: int = 1024
    action_dim: int
    action_horizon: int
    num_timestep_buckets: int = 1000
    num_inference_timesteps: int
    max_num_embodiments: int = 1
    vision_encoder_name: str = "google/siglip-large-patch16-256"
    vision_hidden_size: int = 768


class GameMappingConfig(_Lenient):
    src_files: list[str] = Field(default_factory=list)


class TokenizerConfig(_Lenient):
    tokenizer_id: str = "nitrogen"
    num_visual_tokens_per_frame: int = 256
    max_action_dim: int = 25
    max_sequence_length: int = 300
    action_horizon: int = 16
    game_mapping_cfg: GameMappingConfig | None = None
    old_layout: bool = False


class ModalityConfig(_Lenient):
    frame_per_sample: int = 1
    frame_spacing: int | None = None
    action_per_chunk: int = 8
    action_shift: int = 1
    action_interleaving: bool = False
    token_set: str = "new"


class CheckpointConfig(_Lenient):
    """The whole ``ckpt_config``: what the model is and how it was fed."""

    experiment_name: str = ""
    model_cfg: ModelConfig
    tokenizer_cfg: TokenizerConfig = Field(default_factory=TokenizerConfig)
    modality_cfg: ModalityConfig = Field(default_factory=ModalityConfig)


class VisionConfig(_Lenient):
    """The SigLIP vision tower's hyper-parameters (a subset of transformers' SiglipVisionConfig)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    def to_transformers_kwargs(self) -> dict[str, Any]:
        return self.model_dump()
