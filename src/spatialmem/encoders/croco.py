"""CroCo / DUSt3R ViT image encoder with 2-D RoPE."""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from spatialmem._checks import check_images, checks_active, internal_calls
from spatialmem._typing import Float, Int
from spatialmem.layers import EncoderBlock, PatchEmbed, RoPE2D, default_norm_layer
from spatialmem.layers.blocks import NormLayer
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = ["CroCoEncoder", "EncodedFrame"]


@dataclass(eq=False)
class EncodedFrame(TensorDataclass):
    """A batch of images after the encoder, with what later stages need to know of it.

    The pair models may feed the encoder a transposed image (portrait frames in the
    ``"transpose"`` portrait mode); that is recorded here once, in
    [transposed][spatialmem.encoders.EncodedFrame.transposed], so that the heads and the memory
    encoder need not derive it again.
    """

    tokens: Float[Tensor, "B P C"]
    """Encoder output after the final norm, row-major patch order."""
    positions: Int[Tensor, "B P 2"]
    """Integer (row, column) patch positions."""
    grid: tuple[int, int]
    """Patch-grid size ``(h, w)`` as encoded; ``P = h * w``."""
    image: Float[Tensor, "B C_in H W"]
    """The images as given (before any transposition)."""
    transposed: bool = False
    """The encoder saw ``image`` transposed (a portrait frame encoded as landscape)."""

    @property
    def batch_size(self) -> int:
        """Number of images ``B``."""
        return self.tokens.shape[0]

    @property
    def image_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the images as given (untransposed)."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


class CroCoEncoder(nn.Module):
    """ViT encoder: patch embedding, ``depth`` pre-norm blocks with 2-D RoPE, final LayerNorm.

    Works for any image whose height and width are multiples of ``patch_size``; RoPE needs no
    learned position table.

    Args:
        embed_dim: token width ``C``.
        depth: number of blocks.
        num_heads: attention heads (``embed_dim / num_heads`` divisible by 4 with RoPE).
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        patch_size: patch side in pixels.
        in_chans: image channels.
        rope_base: RoPE frequency base; ``None`` disables positional encoding in the blocks.
        norm_layer: normalisation constructor (LayerNorm, eps 1e-6 by default).
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
    """

    def __init__(
        self,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        in_chans: int = 3,
        rope_base: float | None = 100.0,
        norm_layer: NormLayer = default_norm_layer,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.rope = RoPE2D(rope_base) if rope_base is not None else None
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            EncoderBlock(
                embed_dim,
                num_heads,
                mlp_ratio,
                rope=self.rope,
                drop_path=rate,
                norm_layer=norm_layer,
            )
            for rate in rates
        )
        self.norm = norm_layer(embed_dim)

    def forward(self, img: Float[Tensor, "B C_in H W"]) -> EncodedFrame:
        """Encode images ``[B, 3, H, W]`` (values in [-1, 1] for the published weights)."""
        out, _ = self.forward_intermediates(img, indices=())
        return out

    def forward_intermediates(
        self, img: Float[Tensor, "B C_in H W"], indices: Sequence[int] | None = None
    ) -> tuple[EncodedFrame, list[Float[Tensor, "B P C"]]]:
        """Encode and also return the outputs of selected blocks.

        Args:
            img: image batch.
            indices: block indices whose outputs to return (before the final norm); ``None``
                returns every block's output.

        Returns:
            ``(output, intermediates)`` with one ``[B, P, C]`` tensor per requested block.
        """
        if checks_active():
            check_images("img", img, self.patch_size, channels=self.patch_embed.in_chans)
        with internal_calls():
            tokens, positions = self.patch_embed(img)
            grid = self.patch_embed.grid_size((img.shape[-2], img.shape[-1]))
            extent = max(grid)
            wanted = set(range(len(self.blocks))) if indices is None else set(indices)
            intermediates = []
            for i, block in enumerate(self.blocks):
                tokens = block(tokens, positions, extent)
                if i in wanted:
                    intermediates.append(tokens)
        return EncodedFrame(self.norm(tokens), positions, grid, img), intermediates
