"""Two-dimensional rotary position embedding (RoPE) as used by CroCo and DUSt3R."""

import torch
from torch import Tensor, nn

from spatialmem._checks import check_tensor, checks_active
from spatialmem._typing import Float, Int

__all__ = ["RoPE2D"]


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RoPE2D(nn.Module):
    """Rotary embedding over a 2-D patch grid.

    Each attention head's channels are split into two halves: the first half is rotated by the
    patch *row*, the second by the patch *column*. Within a half of width ``D`` channel ``j`` is
    paired with channel ``j + D/2`` ("rotate-half" pairing) and rotated by the angle
    ``pos * base ** (-2j / D)`` for ``j < D/2``. Because every rotation is orthogonal and the
    angles are linear in the position, token norms are preserved and the dot product of a rotated
    query and key depends only on their position difference.

    The cos/sin tables are computed once per (head width, extent, device, dtype) and cached; they
    are not part of the state dict.

    Args:
        base: frequency base (``100`` for the published ``RoPE100`` models).
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        if not base > 0:
            raise ValueError(f"`base` must be positive, got {base}")
        self.base = float(base)
        self._tables: dict[tuple[int, int, str, torch.dtype], tuple[Tensor, Tensor]] = {}

    def extra_repr(self) -> str:
        return f"base={self.base:g}"

    def tables(
        self, dim: int, extent: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Float[Tensor, "N D"], Float[Tensor, "N D"]]:
        """Cached cos and sin tables for positions ``0..extent-1`` and a half-head width ``dim``.

        Args:
            dim: width ``D`` of one half of a head (must be even).
            extent: number of integer positions covered (largest position + 1).
            device: device of the tables.
            dtype: dtype of the tables (angles are always computed in float32).

        Returns:
            ``(cos, sin)``, each ``[extent, dim]``.
        """
        key = (dim, extent, str(device), dtype)
        cached = self._tables.get(key)
        if cached is None:
            exponent = torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim
            inv_freq = 1.0 / (self.base**exponent)
            angles = torch.outer(torch.arange(extent, device=device, dtype=torch.float32), inv_freq)
            angles = torch.cat((angles, angles), dim=-1)
            cached = (angles.cos().to(dtype), angles.sin().to(dtype))
            self._tables[key] = cached
        return cached

    def forward(
        self,
        tokens: Float[Tensor, "B heads N Dh"],
        positions: Int[Tensor, "B N 2"],
        extent: int | None = None,
    ) -> Float[Tensor, "B heads N Dh"]:
        """Rotate ``tokens`` by their 2-D ``positions``.

        Args:
            tokens: per-head features, head width ``Dh`` divisible by 4.
            positions: integer (row, column) of every token, non-negative.
            extent: an upper bound (exclusive) on every position value. Models pass the patch
                grid size, known from the image shape; when ``None`` it is read from
                ``positions``, which synchronises with the GPU.

        Returns:
            Rotated tokens, same shape and dtype as ``tokens``.
        """
        if checks_active():  # skipped when called from a block of a validated model
            _check_rope_inputs(tokens, positions)
        head_dim = tokens.shape[-1]
        if extent is None:
            extent = int(positions.max()) + 1
        half = head_dim // 2
        cos, sin = self.tables(half, extent, tokens.device, tokens.dtype)
        rows, cols = tokens.split(half, dim=-1)
        return torch.cat(
            (
                self._rotate(rows, positions[..., 0], cos, sin),
                self._rotate(cols, positions[..., 1], cos, sin),
            ),
            dim=-1,
        )

    @staticmethod
    def _rotate(x: Tensor, pos: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        # [B, N] positions -> [B, 1, N, D] tables, broadcast over heads.
        c = cos[pos].unsqueeze(1)
        s = sin[pos].unsqueeze(1)
        return x * c + _rotate_half(x) * s


def _check_rope_inputs(tokens: object, positions: object) -> None:
    check_tensor("tokens", tokens, ndim=4, floating=True, expected="B heads N Dh")
    check_tensor("positions", positions, ndim=3, floating=False, dims={-1: 2}, expected="B N 2")
    assert isinstance(tokens, Tensor) and isinstance(positions, Tensor)
    if tokens.shape[-1] % 4:
        raise ValueError(
            f"`tokens` head width must be divisible by 4 for 2-D RoPE, got {tuple(tokens.shape)}"
        )
    if positions.shape[0] != tokens.shape[0] or positions.shape[1] != tokens.shape[2]:
        raise ValueError(
            f"`positions` {tuple(positions.shape)} does not match `tokens` "
            f"{tuple(tokens.shape)} (expected [B, N, 2], B and N from tokens [B, heads, N, Dh])"
        )
