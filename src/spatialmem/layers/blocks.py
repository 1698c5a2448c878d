"""Pre-norm transformer blocks: the encoder (self-attention) and decoder (self + cross) blocks."""

from collections.abc import Callable
from functools import partial

from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from spatialmem._typing import Float, Int
from spatialmem.layers.attention import Attention, CrossAttention
from spatialmem.layers.rope import RoPE2D

__all__ = ["DecoderBlock", "EncoderBlock", "default_norm_layer"]

NormLayer = Callable[[int], nn.Module]

default_norm_layer: NormLayer = partial(nn.LayerNorm, eps=1e-6)
"""LayerNorm with ``eps=1e-6``, the normalisation of every CroCo/DUSt3R block."""


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


class EncoderBlock(nn.Module):
    """ViT block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Args:
        dim: token width ``C``.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        rope: rotary embedding for the attention, or ``None``.
        qkv_bias: bias on the ``qkv`` projection.
        drop: dropout after projections and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic-depth rate.
        norm_layer: normalisation constructor taking the width.
        act_layer: MLP activation (exact GELU by default).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        rope: RoPE2D | None = None,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = default_norm_layer,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, rope, qkv_bias, attn_drop, drop)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(
        self,
        x: Float[Tensor, "B N C"],
        pos: Int[Tensor, "B N 2"] | None = None,
        extent: int | None = None,
    ) -> Float[Tensor, "B N C"]:
        """Apply the block to tokens ``x`` at integer positions ``pos``."""
        x = x + self.drop_path(self.attn(self.norm1(x), pos, extent))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """CroCo decoder block: self-attention, cross-attention to the other view, MLP.

    ``x + self_attn(norm1(x))``, then ``x + cross_attn(norm2(x), norm_y(y))``, then
    ``x + mlp(norm3(x))``, where ``y`` are the other view's tokens.

    Args:
        dim: token width ``C``.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        rope: rotary embedding for both attentions, or ``None``.
        qkv_bias: bias on the projections.
        drop: dropout after projections and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic-depth rate.
        norm_layer: normalisation constructor taking the width.
        act_layer: MLP activation.
        norm_other: normalise the other view's tokens with ``norm_y`` (``norm_im2_in_dec``);
            when ``False`` ``norm_y`` is the identity.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        rope: RoPE2D | None = None,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = default_norm_layer,
        act_layer: type[nn.Module] = nn.GELU,
        norm_other: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, rope, qkv_bias, attn_drop, drop)
        self.cross_attn = CrossAttention(dim, num_heads, rope, qkv_bias, attn_drop, drop)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = norm_layer(dim)
        self.norm3 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.norm_y = norm_layer(dim) if norm_other else nn.Identity()

    def forward(
        self,
        x: Float[Tensor, "B N C"],
        y: Float[Tensor, "B M C"],
        x_pos: Int[Tensor, "B N 2"] | None = None,
        y_pos: Int[Tensor, "B M 2"] | None = None,
        extent: int | None = None,
    ) -> Float[Tensor, "B N C"]:
        """Update ``x`` given the other view's tokens ``y``; returns the new ``x``."""
        x = x + self.drop_path(self.attn(self.norm1(x), x_pos, extent))
        y = self.norm_y(y)
        x = x + self.drop_path(self.cross_attn(self.norm2(x), y, y, x_pos, y_pos, extent))
        return x + self.drop_path(self.mlp(self.norm3(x)))
