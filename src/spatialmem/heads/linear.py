"""Linear prediction head: one linear layer per token, then pixel shuffle (DUSt3R ``linear``)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from spatialmem._checks import check_positive, check_tensor
from spatialmem._typing import Float
from spatialmem.heads.postprocess import ConfMode, DepthMode, HeadOutput, postprocess

__all__ = ["LinearHead"]


def _check_token_list(tokens: object, need: int) -> Sequence[Tensor]:
    """Check that ``tokens`` is a list/tuple with at least ``need`` entries."""
    if isinstance(tokens, Tensor) or not isinstance(tokens, Sequence) or isinstance(tokens, str):
        raise TypeError(
            "`tokens` must be a list or tuple of token tensors [B, P, C] (e.g. the decoder "
            f"outputs); wrap a single tensor as [tokens], got {type(tokens).__name__}"
        )
    if len(tokens) < need:
        raise ValueError(f"`tokens` must hold at least {need} token tensors, got {len(tokens)}")
    return tokens


def _grid_size(image_hw: object, patch_size: int) -> tuple[int, int]:
    """Patch grid ``(h, w)`` of ``image_hw``, checking it is a pair of positive multiples."""
    ok = (
        isinstance(image_hw, tuple | list)
        and len(image_hw) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in image_hw)
    )
    if not ok:
        raise TypeError(f"`image_hw` must be a pair of ints (H, W), got {image_hw!r}")
    height, width = image_hw  # type: ignore[misc]
    if height <= 0 or width <= 0 or height % patch_size or width % patch_size:
        raise ValueError(
            f"`image_hw` must be positive multiples of the patch size {patch_size}, "
            f"got (H, W) = ({height}, {width})"
        )
    return height // patch_size, width // patch_size


def _check_tokens(name: str, x: object, width: int, grid: tuple[int, int]) -> Tensor:
    """Check one token tensor ``[B, h*w, width]``."""
    h, w = grid
    x = check_tensor(name, x, ndim=3, floating=True, dims={2: width}, expected=f"B P {width}")
    if x.shape[1] != h * w:
        raise ValueError(
            f"`{name}` has P={x.shape[1]} tokens, but `image_hw` gives a {h}x{w} patch grid "
            f"(P = {h * w}); got tensor of shape {tuple(x.shape)}"
        )
    return x


def _param_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _check_four_channels(out_channels: int) -> None:
    if out_channels != 4:
        raise ValueError(
            "forward() maps 4 raw channels (xyz + confidence), but this head has "
            f"out_channels={out_channels}; use forward_raw()"
        )


class LinearHead(nn.Module):
    """Per-token linear projection to a ``patch_size x patch_size`` block of outputs.

    Only the last entry of the token list is used. Each token of the ``h x w`` grid (row-major)
    is projected to ``out_channels * p * p`` features; feature ``c*p*p + dy*p + dx`` becomes
    channel ``c`` of pixel ``(y*p + dy, x*p + dx)`` (``pixel_shuffle``). The head computes in
    its parameter dtype (float32) with autocast disabled, as the official model does.

    Args:
        dim_in: token width ``C`` of the last token list.
        patch_size: patch side ``p`` in pixels.
        out_channels: raw output channels (4 = ``xyz`` + confidence).
        depth_mode: mapping of ``xyz`` used by [`forward`][spatialmem.heads.LinearHead.forward].
        conf_mode: mapping of the confidence used by
            [`forward`][spatialmem.heads.LinearHead.forward].
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 16,
        out_channels: int = 4,
        depth_mode: DepthMode = DepthMode(),  # noqa: B008 - frozen dataclass
        conf_mode: ConfMode = ConfMode(),  # noqa: B008 - frozen dataclass
    ) -> None:
        super().__init__()
        check_positive(dim_in=dim_in, patch_size=patch_size, out_channels=out_channels)
        self.dim_in = dim_in
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.depth_mode = depth_mode
        self.conf_mode = conf_mode
        self.proj = nn.Linear(dim_in, out_channels * patch_size**2)

    def forward_raw(
        self, tokens: Sequence[Float[Tensor, "B P _C"]], image_hw: tuple[int, int]
    ) -> Float[Tensor, "B C_out H W"]:
        """Raw output before the depth/confidence mapping.

        Args:
            tokens: token lists ``[B, P, C]``; only ``tokens[-1]`` (width ``dim_in``) is used.
            image_hw: image size ``(H, W)``, multiples of ``patch_size``; ``P = (H/p) * (W/p)``.

        Returns:
            ``[B, out_channels, H, W]`` in the head's parameter dtype.
        """
        tokens = _check_token_list(tokens, 1)
        grid = _grid_size(image_hw, self.patch_size)
        x = _check_tokens(f"tokens[{len(tokens) - 1}]", tokens[-1], self.dim_in, grid)
        with torch.autocast(device_type=x.device.type, enabled=False):
            feat = self.proj(x.to(_param_dtype(self)))
            feat = rearrange(feat, "b (h w) c -> b c h w", h=grid[0], w=grid[1])
            return F.pixel_shuffle(feat, self.patch_size)

    def forward(
        self, tokens: Sequence[Float[Tensor, "B P _C"]], image_hw: tuple[int, int]
    ) -> HeadOutput:
        """Points and confidences of every pixel.

        Args:
            tokens: token lists ``[B, P, C]``; only ``tokens[-1]`` is used.
            image_hw: image size ``(H, W)``, multiples of ``patch_size``.

        Returns:
            [`HeadOutput`][spatialmem.heads.HeadOutput] with ``pts3d [B, H, W, 3]`` and
            ``conf [B, H, W]``.
        """
        _check_four_channels(self.out_channels)
        return postprocess(self.forward_raw(tokens, image_hw), self.depth_mode, self.conf_mode)
