"""Two-dimensional rotary position embedding (RoPE) as used by CroCo and DUSt3R."""

import torch
from torch import Tensor, nn

from spatialmem._checks import check_tensor, checks_active
from spatialmem._typing import Float, Int

__all__ = ["RoPE2D"]


class RoPE2D(nn.Module):
    """Rotary embedding over a 2-D patch grid.

    Each attention head's channels are split into two halves: the first half is rotated by the
    patch *row*, the second by the patch *column*. Within a half of width ``D`` channel ``j`` is
    paired with channel ``j + D/2`` ("rotate-half" pairing) and rotated by the angle
    ``pos * base ** (-2j / D)`` for ``j < D/2``. Because every rotation is orthogonal and the
    angles are linear in the position, token norms are preserved and the dot product of a rotated
    query and key depends only on their position difference.

    The tables are computed once per (head width, extent, device, dtype) and cached; they are not
    part of the state dict. A call gathers the table rows of its positions (one indexing op, shared
    by the queries and keys of an attention when both have the same positions, see
    [`gather`][spatialmem.layers.RoPE2D.gather]) and rotates with one multiply and one fused
    multiply-add ([`rotate`][spatialmem.layers.RoPE2D.rotate]).

    Args:
        base: frequency base (``100`` for the published ``RoPE100`` models).
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        if not base > 0:
            raise ValueError(f"`base` must be positive, got {base}")
        self.base = float(base)
        self._tables: dict[tuple[int, int, str, torch.dtype], tuple[Tensor, Tensor]] = {}
        self._grids: dict[tuple[int, int, str, torch.dtype], Tensor] = {}

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

    def grid_tables(
        self, head_dim: int, extent: int, device: torch.device, dtype: torch.dtype
    ) -> Float[Tensor, "E E 2 Dh"]:
        """Cached cos and signed-sin factors of every (row, column) position pair.

        ``grid[r, c, 0]`` multiplies a token at ``(r, c)``; ``grid[r, c, 1]`` multiplies its
        half-swapped copy. Each holds the row half (width ``Dh/2``, angles of ``r``) then the
        column half (angles of ``c``); the sine factors carry the sign of the rotation
        (``-sin`` on the first quarter of each half), so that a rotation is
        ``x * cos + swap(x) * signed_sin``.

        Args:
            head_dim: head width ``Dh`` (divisible by 4).
            extent: positions ``0..extent-1`` along each axis.
            device: device of the table.
            dtype: dtype of the table (angles are computed in float32).

        Returns:
            ``[extent, extent, 2, head_dim]`` (``extent² x 2 x Dh`` values: 0.5 M for the
            32-patch extent of a 512-pixel image with 64-wide heads).
        """
        key = (head_dim, extent, str(device), dtype)
        grid = self._grids.get(key)
        if grid is None:
            half = head_dim // 2
            cos, sin = self.tables(half, extent, device, torch.float32)
            quarter = half // 2
            signed_sin = torch.cat((-sin[:, :quarter], sin[:, quarter:]), dim=-1)
            factors = torch.stack((cos, signed_sin), dim=1)  # [E, 2, half]
            rows = factors[:, None].expand(extent, extent, 2, half)
            cols = factors[None, :].expand(extent, extent, 2, half)
            grid = torch.cat((rows, cols), dim=-1).to(dtype).contiguous()
            self._grids[key] = grid
        return grid

    def gather(
        self,
        positions: Int[Tensor, "B N 2"],
        head_dim: int,
        extent: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> tuple[Float[Tensor, "B 1 N Dh"], Float[Tensor, "B 1 N Dh"]]:
        """The rotation factors of ``positions``, to pass to
        [`rotate`][spatialmem.layers.RoPE2D.rotate] (once for queries and keys that share them).

        Args:
            positions: integer (row, column) of every token, in ``[0, extent)``.
            head_dim: head width ``Dh`` of the tokens to rotate.
            extent: exclusive bound on every position value.
            device: device of the tokens.
            dtype: dtype of the tokens.

        Returns:
            ``(cos, signed_sin)``, each ``[B, 1, N, Dh]`` (broadcast over heads).

        Raises:
            TypeError: ``positions`` is not an integer tensor.
            ValueError: ``positions`` not ``[B, N, 2]`` or outside ``[0, extent)``;
                ``head_dim`` not a positive multiple of 4; ``extent`` not positive.
        """
        if checks_active():  # skipped inside a validated model's blocks
            _check_gather_inputs(positions, head_dim, extent)
        grid = self.grid_tables(head_dim, extent, device, dtype)
        factors = grid[positions[..., 0], positions[..., 1]].unsqueeze(1)  # [B, 1, N, 2, Dh]
        return factors[..., 0, :], factors[..., 1, :]

    @staticmethod
    def rotate(
        tokens: Float[Tensor, "B heads N Dh"],
        cos: Float[Tensor, "B 1 N Dh"],
        signed_sin: Float[Tensor, "B 1 N Dh"],
    ) -> Float[Tensor, "B heads N Dh"]:
        """Rotate ``tokens`` by factors from [`gather`][spatialmem.layers.RoPE2D.gather].

        Raises:
            TypeError: ``tokens`` is not a floating tensor.
            ValueError: ``tokens`` not 4-D with a head width divisible by 4, or factors not
                ``[B, 1, N, Dh]`` for those tokens.
        """
        if checks_active():
            _check_rotate_inputs(tokens, cos, signed_sin)
        return RoPE2D._rotate(tokens, cos, signed_sin)

    @staticmethod
    def _rotate(tokens: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
        b, h, n, d = tokens.shape
        # Channel j of each half pairs with channel j + Dh/4: swapping the two quarters of each
        # half (one copy; roll is the fastest swap on CPU) turns the rotation into an elementwise
        # multiply-add.
        swapped = tokens.reshape(b, h, n, 2, 2, d // 4).roll(1, -2).reshape(b, h, n, d)
        return torch.addcmul(tokens * cos, swapped, signed_sin)

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
        if extent is None:
            extent = int(positions.max()) + 1
        cos, signed_sin = self.gather(
            positions, tokens.shape[-1], extent, tokens.device, tokens.dtype
        )
        return self._rotate(tokens, cos, signed_sin)  # tokens and factors agree by construction


def _check_rope_inputs(tokens: object, positions: object) -> None:
    _check_tokens(tokens)
    check_tensor("positions", positions, ndim=3, floating=False, dims={-1: 2}, expected="B N 2")
    assert isinstance(tokens, Tensor) and isinstance(positions, Tensor)
    if positions.shape[0] != tokens.shape[0] or positions.shape[1] != tokens.shape[2]:
        raise ValueError(
            f"`positions` {tuple(positions.shape)} does not match `tokens` "
            f"{tuple(tokens.shape)} (expected [B, N, 2], B and N from tokens [B, heads, N, Dh])"
        )


def _check_gather_inputs(positions: object, head_dim: int, extent: int) -> None:
    check_tensor("positions", positions, ndim=3, floating=False, dims={-1: 2}, expected="B N 2")
    assert isinstance(positions, Tensor)
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 4 or head_dim % 4:
        raise ValueError(f"`head_dim` must be a positive multiple of 4, got {head_dim!r}")
    if isinstance(extent, bool) or not isinstance(extent, int) or extent < 1:
        raise ValueError(f"`extent` must be a positive int, got {extent!r}")
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= extent):
        raise ValueError(
            f"`positions` must lie in [0, {extent}) (`extent`), got values in "
            f"[{int(positions.min())}, {int(positions.max())}]"
        )


def _check_tokens(tokens: object) -> None:
    check_tensor("tokens", tokens, ndim=4, floating=True, expected="B heads N Dh")
    assert isinstance(tokens, Tensor)
    if tokens.shape[-1] % 4:
        raise ValueError(
            f"`tokens` head width must be divisible by 4 for 2-D RoPE, got {tuple(tokens.shape)}"
        )


def _check_rotate_inputs(tokens: object, cos: object, signed_sin: object) -> None:
    _check_tokens(tokens)
    assert isinstance(tokens, Tensor)
    b, _, n, d = tokens.shape
    for name, factor in (("cos", cos), ("signed_sin", signed_sin)):
        check_tensor(name, factor, ndim=4, floating=True, expected="B 1 N Dh")
        assert isinstance(factor, Tensor)
        if tuple(factor.shape) != (b, 1, n, d):
            raise ValueError(
                f"`{name}` must be [B, 1, N, Dh] = {[b, 1, n, d]} for `tokens` "
                f"{tuple(tokens.shape)}, got {tuple(factor.shape)}"
            )
