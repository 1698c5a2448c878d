"""Two intertwined cross-attention decoders (CroCo / DUSt3R)."""

import torch
from torch import Tensor, nn

from spatialmem._checks import check_same_batch, check_tensor, checks_active
from spatialmem._typing import Float, Int
from spatialmem.layers import DecoderBlock, RoPE2D, default_norm_layer
from spatialmem.layers.blocks import NormLayer

__all__ = ["TwinDecoder"]


class TwinDecoder(nn.Module):
    """Two decoders with separate weights that run in lockstep and read each other.

    At layer ``i`` decoder 1 updates view 1's tokens from (its layer ``i-1`` output, view 2's
    layer ``i-1`` output) and decoder 2 does the same with the roles swapped. The input projection
    ``embed`` and the final ``norm`` are shared by both views.

    Args:
        enc_dim: width of the incoming encoder tokens.
        embed_dim: decoder width ``Cd``.
        depth: number of layers ``L`` per decoder.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        rope_base: RoPE base, or ``None`` for no positional encoding.
        norm_other: normalise the other view's tokens in cross-attention (``norm_im2_in_dec``).
        norm_layer: normalisation constructor.
        drop_path_rate: stochastic depth, linearly increasing over the layers.
    """

    def __init__(
        self,
        enc_dim: int = 1024,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        rope_base: float | None = 100.0,
        norm_other: bool = True,
        norm_layer: NormLayer = default_norm_layer,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.enc_dim = enc_dim
        self.embed_dim = embed_dim
        self.depth = depth
        self.rope = RoPE2D(rope_base) if rope_base is not None else None
        self.embed = nn.Linear(enc_dim, embed_dim)
        # Present in the published checkpoints (CroCo pre-training); unused by reconstruction.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]

        def make() -> nn.ModuleList:
            return nn.ModuleList(
                DecoderBlock(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    rope=self.rope,
                    drop_path=rate,
                    norm_layer=norm_layer,
                    norm_other=norm_other,
                )
                for rate in rates
            )

        self.blocks1 = make()
        self.blocks2 = make()
        self.norm = norm_layer(embed_dim)

    def forward(
        self,
        tokens1: Float[Tensor, "B P1 Ce"],
        tokens2: Float[Tensor, "B P2 Ce"],
        pos1: Int[Tensor, "B P1 2"],
        pos2: Int[Tensor, "B P2 2"],
        extent: int | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Decode two views against each other.

        Args:
            tokens1: view-1 tokens (encoder output, or memory-fused tokens).
            tokens2: view-2 tokens.
            pos1: view-1 patch positions.
            pos2: view-2 patch positions.
            extent: exclusive bound on position values (patch-grid size); read from the
                positions (a GPU sync) when ``None``.

        Returns:
            ``(dec1, dec2)``: for each view a list of ``L + 1`` tensors; entry 0 is the input
            tokens (width ``Ce``), entries ``1..L`` the block outputs (width ``Cd``), the last one
            after the shared final norm.
        """
        if checks_active():
            check_tensor("tokens1", tokens1, ndim=3, floating=True, dims={-1: self.enc_dim})
            check_tensor("tokens2", tokens2, ndim=3, floating=True, dims={-1: self.enc_dim})
            check_same_batch(["tokens1", "tokens2"], [tokens1, tokens2])
        if extent is None:
            extent = int(torch.maximum(pos1.max(), pos2.max())) + 1
        dec1, dec2 = [tokens1], [tokens2]
        x1, x2 = self.embed(tokens1), self.embed(tokens2)
        for block1, block2 in zip(self.blocks1, self.blocks2, strict=True):
            x1, x2 = block1(x1, x2, pos1, pos2, extent), block2(x2, x1, pos2, pos1, extent)
            dec1.append(x1)
            dec2.append(x2)
        dec1[-1] = self.norm(dec1[-1])
        dec2[-1] = self.norm(dec2[-1])
        return dec1, dec2
