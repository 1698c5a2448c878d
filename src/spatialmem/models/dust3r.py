"""The DUSt3R pair model: shared encoder, twin decoders, one head per view."""

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from spatialmem._checks import check_images, check_same_batch
from spatialmem._typing import Float
from spatialmem.decoders import TwinDecoder
from spatialmem.encoders import CroCoEncoder, EncoderOutput
from spatialmem.heads import DPTHead, HeadOutput, LinearHead
from spatialmem.models.config import DUSt3RConfig

__all__ = ["DUSt3R", "PairOutput", "build_head"]


@dataclass
class PairOutput:
    """Predictions for an image pair."""

    view1: HeadOutput
    """View 1: ``pts3d [B, H1, W1, 3]`` in view 1's camera frame, ``conf [B, H1, W1]``."""
    view2: HeadOutput
    """View 2: ``pts3d [B, H2, W2, 3]`` also in view 1's frame (official ``pts3d_in_other_view``),
    ``conf [B, H2, W2]``."""


def build_head(config: DUSt3RConfig) -> nn.Module:
    """Build one prediction head (DPT or linear) for a pair-model configuration."""
    common = {
        "patch_size": config.patch_size,
        "depth_mode": config.depth_mode,
        "conf_mode": config.conf_mode,
    }
    if config.head == "linear":
        return LinearHead(config.dec_embed_dim, **common)
    hooks = config.resolved_dpt_hooks
    dims = [config.enc_embed_dim if h == 0 else config.dec_embed_dim for h in hooks]
    return DPTHead(
        dim_tokens=dims,
        hooks=hooks,
        layer_dims=config.dpt_layer_dims,
        feature_dim=config.dpt_feature_dim,
        last_dim=config.resolved_dpt_last_dim,
        **common,
    )


def _transpose_output(out: HeadOutput) -> HeadOutput:
    return HeadOutput(pts3d=out.pts3d.transpose(1, 2), conf=out.conf.transpose(1, 2))


class DUSt3R(nn.Module):
    """DUSt3R (``AsymmetricCroCo3DStereo``) pair model.

    Both images go through the same :class:`~spatialmem.encoders.CroCoEncoder`, then through a
    :class:`~spatialmem.decoders.TwinDecoder`, and each view's decoder tokens through its own head.
    View 2's points are expressed in view 1's camera frame.

    Args:
        config: architecture; see :class:`DUSt3RConfig`.
    """

    def __init__(self, config: DUSt3RConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DUSt3RConfig()
        norm = partial(nn.LayerNorm, eps=config.norm_eps)
        self.encoder = CroCoEncoder(
            embed_dim=config.enc_embed_dim,
            depth=config.enc_depth,
            num_heads=config.enc_num_heads,
            mlp_ratio=config.mlp_ratio,
            patch_size=config.patch_size,
            rope_base=config.rope_base,
            norm_layer=norm,
        )
        self.decoder = TwinDecoder(
            enc_dim=config.enc_embed_dim,
            embed_dim=config.dec_embed_dim,
            depth=config.dec_depth,
            num_heads=config.dec_num_heads,
            mlp_ratio=config.mlp_ratio,
            rope_base=config.rope_base,
            norm_other=config.norm_other_in_decoder,
            norm_layer=norm,
        )
        self.head1 = build_head(config)
        self.head2 = build_head(config)

    def _landscape(self, img: Tensor) -> tuple[Tensor, bool]:
        """Transpose a portrait batch to landscape when the portrait mode asks for it."""
        portrait = img.shape[-2] > img.shape[-1]
        if portrait and self.config.portrait == "transpose":
            return img.transpose(-1, -2), True
        return img, False

    def encode(self, img: Float[Tensor, "B 3 H W"]) -> EncoderOutput:
        """Encode images as the pair model sees them (portrait handling applied)."""
        img, _ = self._landscape(img)
        return self.encoder(img)

    def encode_pair(
        self, img1: Float[Tensor, "B 3 H1 W1"], img2: Float[Tensor, "B 3 H2 W2"]
    ) -> tuple[EncoderOutput, EncoderOutput]:
        """Encode both views (portrait handling applied), in one encoder batch when they have
        the same shape."""
        land1, _ = self._landscape(img1)
        land2, _ = self._landscape(img2)
        if land1.shape != land2.shape:
            return self.encoder(land1), self.encoder(land2)
        both = self.encoder(torch.cat((land1, land2)))
        b = img1.shape[0]
        first = EncoderOutput(both.tokens[:b], both.positions[:b], both.grid)
        second = EncoderOutput(both.tokens[b:], both.positions[b:], both.grid)
        return first, second

    def head_image_size(self, img: Tensor) -> tuple[tuple[int, int], bool]:
        """Image size handed to the heads and whether their output must be transposed back."""
        h, w = img.shape[-2], img.shape[-1]
        if h <= w or self.config.portrait == "native":
            return (h, w), False
        # "transpose" sees a landscape image; "legacy_reshape" reads the portrait grid as one.
        return (w, h), True

    def predict(self, head: nn.Module, tokens: list[Tensor], img: Tensor) -> HeadOutput:
        """Run ``head`` on a view's decoder token list and undo the portrait transposition."""
        size, transposed = self.head_image_size(img)
        out = head(tokens, size)
        return _transpose_output(out) if transposed else out

    def forward(
        self, img1: Float[Tensor, "B 3 H1 W1"], img2: Float[Tensor, "B 3 H2 W2"]
    ) -> PairOutput:
        """Predict pointmaps and confidences for an image pair.

        Args:
            img1: view-1 images in [-1, 1] (``(u8 / 255 - 0.5) / 0.5``), ``H1, W1`` multiples of
                the patch size.
            img2: view-2 images, same batch size; may differ in size from ``img1``.

        Returns:
            :class:`PairOutput` with both views' points in view 1's camera frame.
        """
        p = self.config.patch_size
        check_images("img1", img1, p)
        check_images("img2", img2, p)
        check_same_batch(["img1", "img2"], [img1, img2])
        enc1, enc2 = self.encode_pair(img1, img2)
        extent = max(*enc1.grid, *enc2.grid)
        dec1, dec2 = self.decoder(enc1.tokens, enc2.tokens, enc1.positions, enc2.positions, extent)
        return PairOutput(
            view1=self.predict(self.head1, dec1, img1),
            view2=self.predict(self.head2, dec2, img2),
        )
