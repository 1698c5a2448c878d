"""DPT prediction head (dense prediction transformer head as used by DUSt3R/CroCo).

Four hooked token lists are reshaped to the patch grid and resampled to 4x, 2x, 1x and 1/2x of
it, projected to a common width ``F`` and fused from the coarsest level to the finest with
residual fusion blocks; an output block brings the result to full resolution.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spatialmem._checks import check_positive, check_same_batch
from spatialmem._typing import Float
from spatialmem.heads.linear import (
    _check_four_channels,
    _check_token_list,
    _check_tokens,
    _grid_size,
    _param_dtype,
)
from spatialmem.heads.postprocess import ConfMode, DepthMode, HeadOutput, postprocess

__all__ = ["DPTHead", "FeatureFusionBlock", "ResidualConvUnit"]


def _upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """Residual unit ``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions.

    Args:
        features: channels ``F`` (input and output).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: Float[Tensor, "B F h w"]) -> Float[Tensor, "B F h w"]:
        """Apply the unit to ``[B, F, h, w]`` features."""
        # The inner ReLU may overwrite conv1's fresh output; the outer one must keep ``x``.
        return x + self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True))


class FeatureFusionBlock(nn.Module):
    """Fuses the running path with one level's features, then upsamples by 2.

    ``out = x0 + res_unit1(x1)`` (just ``x0`` without ``x1``), then ``res_unit2``, bilinear
    upsampling x2 with ``align_corners=True`` and a 1x1 convolution ``out_conv``.

    Args:
        features: channels ``F``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.res_unit1 = ResidualConvUnit(features)
        self.res_unit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)

    def forward(
        self, x0: Float[Tensor, "B F h w"], x1: Float[Tensor, "B F h w"] | None = None
    ) -> Float[Tensor, "B F H2 W2"]:
        """Fuse and upsample.

        Args:
            x0: running path ``[B, F, h, w]``.
            x1: this level's features, same shape; ``None`` for the coarsest level.

        Returns:
            ``[B, F, 2h, 2w]``.
        """
        out = x0 if x1 is None else x0 + self.res_unit1(x1)
        return self.out_conv(_upsample2x(self.res_unit2(out)))


class DPTHead(nn.Module):
    """DPT head: multi-level token features fused into a full-resolution raw output.

    For ``k = 0..3`` the tokens ``tokens[hooks[k]]`` (``[B, P, dim_tokens[k]]``, row-major
    ``h x w`` grid) become ``[B, dim_tokens[k], h, w]``, pass ``act_postprocess[k]`` (1x1 conv to
    ``layer_dims[k]``, then resampling to ``4h``, ``2h``, ``h``, ``ceil(h/2)``) and ``layer_rn[k]``
    (3x3 conv to ``feature_dim``). ``refinenet[3]`` (coarsest) to ``refinenet[0]`` (finest) fuse
    them; the coarsest output is cropped to the size of level 2. ``head`` maps the ``8h x 8w``
    result to ``[B, out_channels, 16h, 16w]``. The head computes in its parameter dtype (float32)
    with autocast disabled, as the official model does.

    Args:
        dim_tokens: widths of the four hooked token lists.
        hooks: four indices into the token list, whose entry 0 is the encoder output and
            entries ``1..L`` the decoder block outputs; the official models use
            ``(0, L*2//4, L*3//4, L)`` (see
            [`DUSt3RConfig.resolved_dpt_hooks`][spatialmem.models.DUSt3RConfig.resolved_dpt_hooks]).
        layer_dims: channels after ``act_postprocess`` per level.
        feature_dim: fusion width ``F``.
        last_dim: width of the last hidden conv; default ``feature_dim // 2``.
        patch_size: patch side; the resampling stack upsamples by exactly 16, so it must be 16.
        out_channels: raw output channels (4 = ``xyz`` + confidence).
        depth_mode: mapping of ``xyz`` used by [`forward`][spatialmem.heads.DPTHead.forward].
        conf_mode: mapping of the confidence used by [`forward`][spatialmem.heads.DPTHead.forward].
    """

    def __init__(
        self,
        dim_tokens: Sequence[int],
        hooks: Sequence[int],
        layer_dims: Sequence[int] = (96, 192, 384, 768),
        feature_dim: int = 256,
        last_dim: int | None = None,
        patch_size: int = 16,
        out_channels: int = 4,
        depth_mode: DepthMode = DepthMode(),  # noqa: B008 - frozen dataclass
        conf_mode: ConfMode = ConfMode(),  # noqa: B008 - frozen dataclass
    ) -> None:
        super().__init__()
        for name, seq in (("dim_tokens", dim_tokens), ("hooks", hooks), ("layer_dims", layer_dims)):
            if len(seq) != 4:
                raise ValueError(f"`{name}` must have 4 entries (one per level), got {list(seq)}")
        if any(d < 1 for d in (*dim_tokens, *layer_dims)):
            raise ValueError(
                f"`dim_tokens` and `layer_dims` must be positive, got {list(dim_tokens)}, "
                f"{list(layer_dims)}"
            )
        if any(h < 0 for h in hooks):
            raise ValueError(f"`hooks` must be non-negative indices, got {list(hooks)}")
        last_dim = feature_dim // 2 if last_dim is None else last_dim
        check_positive(feature_dim=feature_dim, last_dim=last_dim, out_channels=out_channels)
        if feature_dim < 2:
            raise ValueError(f"`feature_dim` must be >= 2, got {feature_dim}")
        if patch_size != 16:
            raise ValueError(
                f"`patch_size` must be 16 for DPTHead (its resampling stack upsamples the patch "
                f"grid by exactly 16), got {patch_size}"
            )
        self.dim_tokens = tuple(int(d) for d in dim_tokens)
        self.hooks = tuple(int(h) for h in hooks)
        self.layer_dims = tuple(int(d) for d in layer_dims)
        self.feature_dim = feature_dim
        self.last_dim = last_dim
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.depth_mode = depth_mode
        self.conf_mode = conf_mode

        d_in, dims = self.dim_tokens, self.layer_dims
        self.act_postprocess = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(d_in[0], dims[0], 1),
                    nn.ConvTranspose2d(dims[0], dims[0], kernel_size=4, stride=4),
                ),
                nn.Sequential(
                    nn.Conv2d(d_in[1], dims[1], 1),
                    nn.ConvTranspose2d(dims[1], dims[1], kernel_size=2, stride=2),
                ),
                nn.Sequential(nn.Conv2d(d_in[2], dims[2], 1)),
                nn.Sequential(
                    nn.Conv2d(d_in[3], dims[3], 1),
                    nn.Conv2d(dims[3], dims[3], 3, stride=2, padding=1),
                ),
            ]
        )
        self.layer_rn = nn.ModuleList(
            [nn.Conv2d(d, feature_dim, 3, padding=1, bias=False) for d in dims]
        )
        self.refinenet = nn.ModuleList([FeatureFusionBlock(feature_dim) for _ in range(4)])
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(inplace=True),  # on the previous conv's fresh output: no extra buffer
            nn.Conv2d(last_dim, out_channels, 1),
        )

    def forward_raw(
        self, tokens: Sequence[Tensor], image_hw: tuple[int, int]
    ) -> Float[Tensor, "B C_out H W"]:
        """Raw output before the depth/confidence mapping.

        Args:
            tokens: token lists, ``tokens[hooks[k]]`` of shape ``[B, P, dim_tokens[k]]`` with
                ``P = (H/16) * (W/16)`` (e.g. ``[encoder output, decoder block outputs...]``).
            image_hw: image size ``(H, W)``, multiples of 16.

        Returns:
            ``[B, out_channels, H, W]`` in the head's parameter dtype.
        """
        tokens = _check_token_list(tokens, max(self.hooks) + 1)
        grid = _grid_size(image_hw, self.patch_size)
        names = [f"tokens[{i}]" for i in self.hooks]
        selected = [
            _check_tokens(name, tokens[i], width, grid)
            for name, i, width in zip(names, self.hooks, self.dim_tokens, strict=True)
        ]
        check_same_batch(names, selected)
        dtype = _param_dtype(self)
        with torch.autocast(device_type=selected[0].device.type, enabled=False):
            layers = [
                rn(post(rearrange(t.to(dtype), "b (h w) c -> b c h w", h=grid[0], w=grid[1])))
                for t, post, rn in zip(selected, self.act_postprocess, self.layer_rn, strict=True)
            ]
            h2, w2 = layers[2].shape[-2:]
            path_4 = self.refinenet[3](layers[3])[:, :, :h2, :w2]
            path_3 = self.refinenet[2](path_4, layers[2])
            path_2 = self.refinenet[1](path_3, layers[1])
            path_1 = self.refinenet[0](path_2, layers[0])
            return self.head(path_1)

    def forward(self, tokens: Sequence[Tensor], image_hw: tuple[int, int]) -> HeadOutput:
        """Points and confidences of every pixel.

        Args:
            tokens: token lists, ``tokens[hooks[k]]`` of shape ``[B, P, dim_tokens[k]]``.
            image_hw: image size ``(H, W)``, multiples of 16.

        Returns:
            [`HeadOutput`][spatialmem.heads.HeadOutput] with ``pts3d [B, H, W, 3]`` and
            ``conf [B, H, W]``.
        """
        _check_four_channels(self.out_channels)
        return postprocess(self.forward_raw(tokens, image_hw), self.depth_mode, self.conf_mode)
