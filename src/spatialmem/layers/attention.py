"""Multi-head self- and cross-attention with optional 2-D RoPE on queries and keys."""

import torch.nn.functional as F
from torch import Tensor, nn

from spatialmem._checks import checks_active
from spatialmem._typing import Float, Int
from spatialmem.layers.rope import RoPE2D

__all__ = ["Attention", "CrossAttention"]


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _AttentionBase(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        rope: RoPE2D | None,
        attn_drop: float,
        proj_drop: float,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"`dim` ({dim}) must be divisible by `num_heads` ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.rope = rope
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        q_pos: Tensor | None,
        k_pos: Tensor | None,
        extent: int | None,
    ) -> Tensor:
        if self.rope is not None:
            if q_pos is None or k_pos is None:
                raise ValueError("positions are required when the attention uses RoPE")
            if checks_active() or extent is None:  # the public path (validates, finds extent)
                q = self.rope(q, q_pos, extent)
                k = self.rope(k, k_pos, extent)
            else:  # queries and keys at the same positions share one gather
                q_rot = self.rope.gather(q_pos, self.head_dim, extent, q.device, q.dtype)
                k_rot = (
                    q_rot
                    if k_pos is q_pos and k.dtype == q.dtype
                    else self.rope.gather(k_pos, self.head_dim, extent, k.device, k.dtype)
                )
                q = self.rope.rotate(q, *q_rot)
                k = self.rope.rotate(k, *k_rot)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(_merge_heads(out)))


class Attention(_AttentionBase):
    """Self-attention with a fused ``qkv`` projection (timm / CroCo parameter layout).

    Scores use the scale ``head_dim ** -0.5`` and are computed by
    `torch.nn.functional.scaled_dot_product_attention`.

    Args:
        dim: token width ``C``.
        num_heads: number of heads; ``C`` must be divisible by it.
        rope: rotary embedding applied to queries and keys, or ``None``.
        qkv_bias: whether the ``qkv`` projection has a bias.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        rope: RoPE2D | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, rope, attn_drop, proj_drop)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)

    def forward(
        self,
        x: Float[Tensor, "B N C"],
        pos: Int[Tensor, "B N 2"] | None = None,
        extent: int | None = None,
    ) -> Float[Tensor, "B N C"]:
        """Attend every token to every token.

        Args:
            x: tokens.
            pos: integer (row, column) positions, required with RoPE.
            extent: exclusive bound on position values (see [`RoPE2D`][spatialmem.layers.RoPE2D]).
        """
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        heads = self.num_heads
        q, k, v = (_split_heads(t, heads) for t in (q, k, v))
        return self._attend(q, k, v, pos, pos, extent)


class CrossAttention(_AttentionBase):
    """Cross-attention from ``query`` tokens to ``key``/``value`` tokens.

    Queries are rotated with their own positions and keys with the other set's positions.

    Args:
        dim: token width ``C`` of queries, keys and values.
        num_heads: number of heads.
        rope: rotary embedding, or ``None``.
        qkv_bias: whether the projections have biases.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        rope: RoPE2D | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, rope, attn_drop, proj_drop)
        self.projq = nn.Linear(dim, dim, bias=qkv_bias)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias)

    def forward(
        self,
        query: Float[Tensor, "B N C"],
        key: Float[Tensor, "B M C"],
        value: Float[Tensor, "B M C"],
        query_pos: Int[Tensor, "B N 2"] | None = None,
        key_pos: Int[Tensor, "B M 2"] | None = None,
        extent: int | None = None,
    ) -> Float[Tensor, "B N C"]:
        """Attend ``query`` tokens to ``key``/``value`` tokens.

        Args:
            query: query tokens.
            key: key tokens.
            value: value tokens (same count as keys).
            query_pos: positions of the queries, required with RoPE.
            key_pos: positions of the keys, required with RoPE.
            extent: exclusive bound on position values (see [`RoPE2D`][spatialmem.layers.RoPE2D]).
        """
        heads = self.num_heads
        q = _split_heads(self.projq(query), heads)
        k = _split_heads(self.projk(key), heads)
        v = _split_heads(self.projv(value), heads)
        return self._attend(q, k, v, query_pos, key_pos, extent)
