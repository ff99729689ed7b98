"""The NitroGen network, built from diffusers/transformers blocks so checkpoint names load as-is.

Submodule names mirror the original (``vision_encoder``, ``vl_self_attention_model``, ``model``,
``action_encoder``, ``action_decoder``, ``game_embedding``), so ``load_state_dict`` on ``ng.pt`` is
strict. The forward pass is split into the step-invariant part (vision tower, mixer, cross-attention
keys/values: :meth:`NitroGenModel.condition`) and the per-step velocity (:meth:`NitroGenModel.velocity`),
which is the whole point: the original recomputes the first part at every Euler step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding, TimestepEmbedding, Timesteps
from einops import rearrange
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from .config import CheckpointConfig, DiTConfig, MixerConfig, TransformerConfig, VisionConfig

ADA_NORM_EPS = 1e-5  # the original's AdaLayerNorm ignores the config's norm_eps


class AdaLayerNorm(nn.Module):
    """LayerNorm modulated by the timestep embedding; (scale, shift) order as in the original."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)

    def modulation(self, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.linear(self.silu(temb)).chunk(2, dim=1)
        return scale[:, None], shift[:, None]


class TransformerBlock(nn.Module):
    """Pre-norm attention + feed-forward block; positional table added after the first norm."""

    def __init__(self, cfg: TransformerConfig, *, ada_norm: bool, affine: bool, eps: float,
                 cross_attention_dim: int | None) -> None:
        super().__init__()
        dim = cfg.inner_dim
        self.pos_embed = (
            SinusoidalPositionalEmbedding(dim, max_seq_length=cfg.max_num_positional_embeddings)
            if cfg.positional_embeddings == "sinusoidal" else None
        )
        self.norm1: nn.Module = AdaLayerNorm(dim, ADA_NORM_EPS) if ada_norm else nn.LayerNorm(
            dim, eps=eps, elementwise_affine=affine)
        self.attn1 = Attention(
            query_dim=dim, heads=cfg.num_attention_heads, dim_head=cfg.attention_head_dim,
            dropout=cfg.dropout, bias=cfg.attention_bias, cross_attention_dim=cross_attention_dim,
            upcast_attention=cfg.upcast_attention, out_bias=True,
        )
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.ff = FeedForward(dim, dropout=cfg.dropout, activation_fn=cfg.activation_fn,
                              final_dropout=cfg.final_dropout, bias=True)
        self.is_cross = cross_attention_dim is not None

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_embed(x) if self.pos_embed is not None else x

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=self.attn1.heads)

    def key_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads-split keys and values of ``context``: cached once per predict for cross blocks."""
        attn = self.attn1
        if getattr(attn, "to_kv", None) is not None:
            k, v = attn.to_kv(context).chunk(2, dim=-1)
        else:
            k, v = attn.to_k(context), attn.to_v(context)
        return self._heads(k), self._heads(v)

    def attend(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """diffusers' AttnProcessor2_0 math, with cached keys/values (cross) or self-attention."""
        attn = self.attn1
        if kv is None and getattr(attn, "to_qkv", None) is not None:
            q, k, v = (self._heads(t) for t in attn.to_qkv(x).chunk(3, dim=-1))
        else:
            q = self._heads(attn.to_q(x))
            k, v = kv if kv is not None else self.key_values(x)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        out = rearrange(out, "b h n d -> b n (h d)").to(q.dtype)
        return attn.to_out[0](out)

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """One GEMM for q/k/v (self-attention) or k/v (cross-attention) instead of three or two.

        Same dot products, fewer and larger kernels; the separate layers are dropped so the weights
        are not held twice.
        """
        attn = self.attn1
        attn.fuse_projections()
        for name in ("to_k", "to_v") if self.is_cross else ("to_q", "to_k", "to_v"):
            delattr(attn, name)

    def forward_plain(self, h: torch.Tensor) -> torch.Tensor:
        """The mixer's block: layer norm, self-attention, feed-forward."""
        n = self.add_positions(self.norm1(h))
        h = h + self.attend(n)
        return h + self.ff(self.norm3(h))


class VLMixer(nn.Module):
    """Self-attention over the vision-language tokens (``vl_self_attention_model``)."""

    def __init__(self, cfg: MixerConfig) -> None:
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(cfg, ada_norm=False, affine=True, eps=1e-5, cross_attention_dim=None)
            for _ in range(cfg.num_layers)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            h = block.forward_plain(h)
        return h


class TimestepEncoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=1)
        self.timestep_embedder = TimestepEmbedding(in_channels=256, time_embed_dim=dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self.timestep_embedder.linear_1.weight.dtype
        return self.timestep_embedder(self.time_proj(t).to(dtype))


class DiT(nn.Module):
    """The flow-matching transformer (``model``): actions cross-attend to the mixed VL tokens."""

    def __init__(self, cfg: DiTConfig, cross_attention_dim: int) -> None:
        super().__init__()
        dim = cfg.inner_dim
        self.timestep_encoder = TimestepEncoder(dim)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                cfg, ada_norm=cfg.norm_type == "ada_norm", affine=cfg.norm_elementwise_affine,
                eps=cfg.norm_eps,
                cross_attention_dim=None if (cfg.interleave_self_attention and i % 2 == 1)
                else cross_attention_dim,
            )
            for i in range(cfg.num_layers)
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.proj_out_1 = nn.Linear(dim, 2 * dim)
        self.proj_out_2 = nn.Linear(dim, cfg.output_dim)


class CategorySpecificLinear(nn.Module):
    """Per-embodiment linear layer; NitroGen has one embodiment, so row 0 is always used."""

    def __init__(self, num_categories: int, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.W = nn.Parameter(0.02 * torch.randn(num_categories, input_dim, output_dim))
        self.b = nn.Parameter(torch.zeros(num_categories, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.W[0]) + self.b[0]

    def as_linear(self) -> nn.Linear:
        """The embodiment-0 layer as an ``nn.Linear`` (for kernels that want that form)."""
        out_dim, in_dim = self.W.shape[2], self.W.shape[1]
        linear = nn.Linear(in_dim, out_dim, device=self.W.device, dtype=self.W.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.W[0].t())
            linear.bias.copy_(self.b[0])
        return linear


class ActionEncoder(nn.Module):
    def __init__(self, action_dim: int, hidden: int, num_embodiments: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.W1 = CategorySpecificLinear(num_embodiments, action_dim, hidden)
        self.W2 = CategorySpecificLinear(num_embodiments, 2 * hidden, hidden)
        self.W3 = CategorySpecificLinear(num_embodiments, hidden, hidden)

    def time_encoding(self, t: int) -> torch.Tensor:
        """[sin, cos] of t * exp(-k ln(10000) / half), computed as the original does (float32)."""
        half = self.hidden // 2
        exponent = -torch.arange(half, dtype=torch.float) * (torch.log(torch.tensor(10000.0)) / half)
        freqs = torch.tensor([[float(t)]]).unsqueeze(-1) * exponent.exp()
        return torch.cat([torch.sin(freqs), torch.cos(freqs)], dim=-1)  # (1, 1, hidden)

    def forward(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        a = self.W1(x)
        h = torch.cat([a, tau.to(a.dtype).expand(a.shape[0], a.shape[1], -1)], dim=-1)
        h = self.W2(h)
        return self.W3(h * torch.sigmoid(h))


class ActionDecoder(nn.Module):
    def __init__(self, hidden: int, action_dim: int, num_embodiments: int) -> None:
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_embodiments, hidden, hidden)
        self.layer2 = CategorySpecificLinear(num_embodiments, hidden, action_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(h)))


@dataclass
class StepConstants:
    """Everything an Euler step needs that depends only on the weights and the step index."""

    tau: torch.Tensor                                 # action-encoder time encoding (1, 1, hidden)
    block_mods: list[tuple[torch.Tensor, torch.Tensor]]  # per DiT block: (scale, shift), (1, 1, dim)
    out_shift: torch.Tensor
    out_scale: torch.Tensor


def build_vision_tower(vision: VisionConfig) -> nn.Module:
    """The SigLIP vision transformer with the names the checkpoint uses (transformers 4.x or 5.x)."""
    config = SiglipVisionConfig(**vision.to_transformers_kwargs())
    model = SiglipVisionModel(config)
    return getattr(model, "vision_model", model)  # 4.x wraps the transformer; 5.x is the transformer


class NitroGenModel(nn.Module):
    """Vision tower + VL mixer + DiT + action codec, sized entirely by the checkpoint config."""

    def __init__(self, cfg: CheckpointConfig, vision: VisionConfig, num_games: int = 0) -> None:
        super().__init__()
        m = cfg.model_cfg
        self.cfg = cfg
        self.vision_config = vision
        self.vision_encoder = build_vision_tower(vision)
        self.vl_self_attention_model = VLMixer(m.vl_self_attention_cfg)
        cross_dim = m.diffusion_model_cfg.cross_attention_dim or m.vision_hidden_size
        self.model = DiT(m.diffusion_model_cfg, cross_attention_dim=cross_dim)
        self.action_encoder = ActionEncoder(m.action_dim, m.hidden_size, m.max_num_embodiments)
        self.action_decoder = ActionDecoder(m.hidden_size, m.action_dim, m.max_num_embodiments)
        self.game_embedding = nn.Embedding(num_games, m.vision_hidden_size) if num_games else None
        self.position_embedding = (
            nn.Embedding(m.max_seq_len, m.hidden_size) if m.add_pos_embed else None
        )

    # ---- step-invariant work -------------------------------------------------------------------
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """SigLIP ``last_hidden_state`` (after post_layernorm; the pooling head is unused)."""
        ve = self.vision_encoder
        hidden = ve.embeddings(pixel_values)
        out = ve.encoder(inputs_embeds=hidden)
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return ve.post_layernorm(last)

    def condition(self, vl: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Mix the VL tokens once and project them to each cross-attention block's keys/values."""
        mixed = self.vl_self_attention_model(vl)
        return [blk.key_values(mixed) if blk.is_cross else None for blk in self.model.transformer_blocks]

    @torch.no_grad()
    def step_constants(self, num_steps: int, buckets: int) -> list[StepConstants]:
        """Per-step timestep embeddings and modulations: fixed for a given model, cached once."""
        dit = self.model
        steps = []
        for i in range(num_steps):
            t = int(i / float(num_steps) * buckets)
            temb = dit.timestep_encoder(torch.tensor([t], device=self._device()).long())
            mods = [blk.norm1.modulation(temb) for blk in dit.transformer_blocks]
            shift, scale = dit.proj_out_1(F.silu(temb)).chunk(2, dim=1)
            tau = self.action_encoder.time_encoding(t).to(self._device())
            steps.append(StepConstants(tau, mods, shift[:, None], scale[:, None]))
        return steps

    def fuse_projections(self) -> None:
        """Fused attention projections in the mixer and the DiT (after the weights are loaded)."""
        for blk in [*self.vl_self_attention_model.transformer_blocks, *self.model.transformer_blocks]:
            blk.fuse_projections()

    def _device(self) -> torch.device:
        return self.vision_encoder.embeddings.position_embedding.weight.device  # never swapped by fast paths

    # ---- one Euler step ----------------------------------------------------------------------------
    def velocity(self, x: torch.Tensor, step: StepConstants,
                 kv: list[tuple[torch.Tensor, torch.Tensor] | None]) -> torch.Tensor:
        """The predicted velocity for actions ``x`` (rows, horizon, action_dim) at one step."""
        h = self.action_encoder(x, step.tau)
        if self.position_embedding is not None:
            h = h + self.position_embedding.weight[: h.shape[1]].unsqueeze(0)
        for blk, (scale, shift), cached in zip(self.model.transformer_blocks, step.block_mods, kv):
            n = blk.add_positions(blk.norm1.norm(h) * (1 + scale) + shift)
            h = h + blk.attend(n, cached)
            h = h + blk.ff(blk.norm3(h))
        h = self.model.norm_out(h) * (1 + step.out_scale) + step.out_shift
        return self.action_decoder(self.model.proj_out_2(h))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
