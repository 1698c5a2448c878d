"""The DUSt3R pair model: shared encoder, twin decoders, one head per view."""

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from spatialmem._checks import (
    check_images,
    check_same_batch,
    check_tensor,
    internal_calls,
    match_module,
)
from spatialmem._typing import Float
from spatialmem.decoders import TwinDecoder
from spatialmem.encoders import CroCoEncoder, EncodedFrame
from spatialmem.heads import DPTHead, HeadOutput, LinearHead
from spatialmem.models.config import DUSt3RConfig
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = ["DUSt3R", "PairDecoding", "PairOutput", "build_head"]


@dataclass(eq=False)
class PairDecoding(TensorDataclass):
    """Decoder tokens and head outputs of one decoded pair (the pieces a sequence model reuses)."""

    dec1: list[Tensor]
    """View 1's decoder tokens (``L + 1`` entries, ``[B, P, C]`` each)."""
    dec2: list[Tensor]
    """View 2's decoder tokens."""
    view1: HeadOutput
    """Head 1's output for view 1."""
    view2: HeadOutput | None
    """Head 2's output for view 2 (``None`` when head 2 was not run)."""


@dataclass(eq=False)
class PairOutput(TensorDataclass):
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
    return out.apply(lambda t: t.transpose(1, 2))  # [B, W, H, ...] -> [B, H, W, ...]


class DUSt3R(nn.Module):
    """DUSt3R (``AsymmetricCroCo3DStereo``) pair model.

    Both images go through the same [`CroCoEncoder`][spatialmem.encoders.CroCoEncoder], then through
    a [`TwinDecoder`][spatialmem.decoders.TwinDecoder], and each view's decoder tokens through its
    own head. View 2's points are expressed in view 1's camera frame.

    Args:
        config: architecture; see [`DUSt3RConfig`][spatialmem.models.DUSt3RConfig].
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

    def encode(self, img: Float[Tensor, "B 3 H W"]) -> EncodedFrame:
        """Encode images as the pair model sees them.

        In the ``"transpose"`` portrait mode a portrait batch is encoded as landscape; the
        returned frame records it ([transposed][spatialmem.encoders.EncodedFrame.transposed]) and
        keeps ``img`` as given.
        """
        if self._encodes_transposed(img):
            return self.encoder(img.transpose(-1, -2)).replace(image=img, transposed=True)
        return self.encoder(img)

    def encode_pair(
        self, img1: Float[Tensor, "B 3 H1 W1"], img2: Float[Tensor, "B 3 H2 W2"]
    ) -> tuple[EncodedFrame, EncodedFrame]:
        """Encode both views, in one encoder batch when they are encoded with the same shape
        (as the official first step does)."""
        t1, t2 = self._encodes_transposed(img1), self._encodes_transposed(img2)
        land1 = img1.transpose(-1, -2) if t1 else img1
        land2 = img2.transpose(-1, -2) if t2 else img2
        if land1.shape != land2.shape:
            return self.encode(img1), self.encode(img2)
        both = self.encoder(torch.cat((land1, land2)))
        b = img1.shape[0]
        return (
            both[:b].replace(image=img1, transposed=t1),
            both[b:].replace(image=img2, transposed=t2),
        )

    def decode(self, view1: EncodedFrame, view2: EncodedFrame) -> tuple[list[Tensor], list[Tensor]]:
        """Run the twin decoders on two encoded views.

        Returns:
            ``(dec1, dec2)``: each view's token list, entry 0 its input tokens, entry ``L`` the
            normed last layer.
        """
        extent = max(*view1.grid, *view2.grid)
        return self.decoder(view1.tokens, view2.tokens, view1.positions, view2.positions, extent)

    def predict_view1(self, dec1: list[Tensor], view1: EncodedFrame) -> HeadOutput:
        """Head 1 on view 1's decoder tokens (portrait transposition undone)."""
        return self._predict(self.head1, dec1, view1)

    def predict_view2(self, dec2: list[Tensor], view2: EncodedFrame) -> HeadOutput:
        """Head 2 on view 2's decoder tokens: view 2's points in view 1's camera frame."""
        return self._predict(self.head2, dec2, view2)

    def predict_pair(
        self, view1: EncodedFrame, view2: EncodedFrame, *, view2_head: bool = True
    ) -> PairDecoding:
        """Decode two encoded views and apply the heads.

        Args:
            view1: view 1 (for Spann3R: its tokens replaced by the memory read-out).
            view2: view 2.
            view2_head: run head 2 (``False`` leaves [PairDecoding.view2][
                spatialmem.models.PairDecoding.view2] ``None``).
        """
        dec1, dec2 = self.decode(view1, view2)
        res1 = self.predict_view1(dec1, view1)
        res2 = self.predict_view2(dec2, view2) if view2_head else None
        return PairDecoding(dec1, dec2, res1, res2)

    def _encodes_transposed(self, img: Tensor) -> bool:
        return img.shape[-2] > img.shape[-1] and self.config.portrait == "transpose"

    def _predict(self, head: nn.Module, tokens: list[Tensor], frame: EncodedFrame) -> HeadOutput:
        h, w = frame.image_hw
        # Portrait frames: "transpose" encoded a landscape image; "legacy_reshape" reads the
        # portrait grid as a landscape one. Either way the head works at (W, H) and its output
        # is transposed back.
        transposed = h > w and self.config.portrait != "native"
        out = head(tokens, (w, h) if transposed else (h, w))
        return _transpose_output(out) if transposed else out

    def forward(
        self, img1: Float[Tensor, "B 3 H1 W1"], img2: Float[Tensor, "B 3 H2 W2"]
    ) -> PairOutput:
        """Predict pointmaps and confidences for an image pair.

        Args:
            img1: view-1 images in [-1, 1] (``(u8 / 255 - 0.5) / 0.5``, see
                [`to_model_range`][spatialmem.data.to_model_range]), ``H1, W1`` multiples of
                the patch size, on the model's device. Any floating dtype is accepted and cast to
                the model's parameter dtype.
            img2: view-2 images, same batch size; may differ in size from ``img1``.

        Returns:
            [`PairOutput`][spatialmem.models.PairOutput] with both views' points in view 1's camera
            frame.

        Raises:
            TypeError: an input is not a floating tensor.
            ValueError: wrong shape, batch mismatch, an input on another device than the model,
                NaN/Inf values or values far outside [-1, 1] (the last two are value checks, see
                [`set_value_checks`][spatialmem.set_value_checks]).
        """
        p = self.config.patch_size
        img1 = match_module("img1", check_tensor("img1", img1, floating=True), self)
        img2 = match_module("img2", check_tensor("img2", img2, floating=True), self)
        check_images("img1", img1, p, pixel_range=True)
        check_images("img2", img2, p, pixel_range=True)
        check_same_batch(["img1", "img2"], [img1, img2])
        with internal_calls():
            out = self.predict_pair(*self.encode_pair(img1, img2))
        assert out.view2 is not None
        return PairOutput(view1=out.view1, view2=out.view2)
