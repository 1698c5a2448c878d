"""The memory (value) encoder of Spann3R: a pointmap turned into one token per patch."""

from torch import Tensor, nn

from spatialmem._checks import check_tensor, checks_active, internal_calls
from spatialmem._typing import Float
from spatialmem.layers import EncoderBlock, PatchEmbed, RoPE2D, default_norm_layer
from spatialmem.layers.blocks import NormLayer

__all__ = ["MemoryEncoder"]


class MemoryEncoder(nn.Module):
    """Encodes a predicted pointmap into memory-value tokens (paper Sec. 3.2, "memory encoder").

    The ``[B, H, W, 3]`` pointmap is cut into patches like an image (``patch_embed``, a strided
    convolution over the xyz channels), passed through ``depth`` pre-norm ViT blocks, normalised
    and projected to the memory width: ``proj(norm(blocks(patch_embed(pts))))``. The published
    Spann3R uses no positional encoding in these blocks (``rope_base=None``).

    Args:
        embed_dim: block width.
        out_dim: memory width ``C`` of the returned tokens.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        patch_size: patch side in pixels (the image encoder's, so that tokens align).
        rope_base: RoPE base for the blocks, or ``None`` (published model) for none.
        norm_layer: normalisation constructor (LayerNorm, eps 1e-6 by default).
    """

    def __init__(
        self,
        embed_dim: int = 1024,
        out_dim: int = 1024,
        depth: int = 6,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        rope_base: float | None = None,
        norm_layer: NormLayer = default_norm_layer,
    ) -> None:
        super().__init__()
        self.embed_dim, self.out_dim, self.patch_size = embed_dim, out_dim, patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.rope = RoPE2D(rope_base) if rope_base is not None else None
        self.blocks = nn.ModuleList(
            EncoderBlock(embed_dim, num_heads, mlp_ratio, rope=self.rope, norm_layer=norm_layer)
            for _ in range(depth)
        )
        self.norm = norm_layer(embed_dim)
        self.proj = nn.Linear(embed_dim, out_dim)

    def forward(self, pts3d: Float[Tensor, "B H W 3"]) -> Float[Tensor, "B P C"]:
        """Value tokens of a pointmap.

        Args:
            pts3d: points per pixel, ``H`` and ``W`` multiples of the patch size.

        Returns:
            ``[B, P, out_dim]`` tokens in row-major patch order, ``P = (H/p) * (W/p)``.
        """
        h, w = pts3d.shape[1:3]
        if checks_active():  # shapes only: predicted points are not value-checked
            check_tensor("pts3d", pts3d, ndim=4, floating=True, dims={3: 3}, expected="B H W 3")
            if h % self.patch_size or w % self.patch_size:
                raise ValueError(
                    f"`pts3d` height and width must be multiples of the patch size "
                    f"{self.patch_size}, got {tuple(pts3d.shape)}"
                )
        with internal_calls():
            tokens, positions = self.patch_embed(pts3d.permute(0, 3, 1, 2))
            extent = max(h, w) // self.patch_size
            for block in self.blocks:
                tokens = block(tokens, positions, extent)
        return self.proj(self.norm(tokens))
