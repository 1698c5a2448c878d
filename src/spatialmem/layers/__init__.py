"""Reusable building blocks: RoPE, patch embedding, attention and transformer blocks."""

from spatialmem.layers.attention import Attention, CrossAttention
from spatialmem.layers.blocks import DecoderBlock, EncoderBlock, default_norm_layer
from spatialmem.layers.patch_embed import PatchEmbed, grid_positions
from spatialmem.layers.rope import RoPE2D

__all__ = [
    "Attention",
    "CrossAttention",
    "DecoderBlock",
    "EncoderBlock",
    "PatchEmbed",
    "RoPE2D",
    "default_norm_layer",
    "grid_positions",
]
