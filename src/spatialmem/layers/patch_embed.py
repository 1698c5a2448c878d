"""Patch embedding that returns tokens together with their integer grid positions."""

import torch
from torch import Tensor, nn

from spatialmem._checks import check_images, checks_active
from spatialmem._typing import Float, Int

__all__ = ["PatchEmbed", "grid_positions"]


def grid_positions(batch: int, h: int, w: int, device: torch.device) -> Int[Tensor, "B P 2"]:
    """Integer (row, column) positions of an ``h x w`` patch grid in row-major order.

    Returns:
        ``[batch, h*w, 2]`` int64 tensor; entry ``r*w + c`` holds ``(r, c)``.
    """
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    pos = torch.cartesian_prod(rows, cols).view(h * w, 2)
    return pos.unsqueeze(0).expand(batch, -1, -1)


class PatchEmbed(nn.Module):
    """Non-overlapping convolutional patch embedding.

    Args:
        patch_size: side of a square patch in pixels.
        in_chans: input channels.
        embed_dim: output token width ``C``.
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def grid_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Patch-grid size ``(h, w)`` of an image of size ``(H, W)``."""
        return image_hw[0] // self.patch_size, image_hw[1] // self.patch_size

    def forward(
        self, img: Float[Tensor, "B C_in H W"]
    ) -> tuple[Float[Tensor, "B P C"], Int[Tensor, "B P 2"]]:
        """Embed an image batch.

        Args:
            img: images whose height and width are multiples of ``patch_size`` (checked when
                called directly; the encoders that own this layer validate their input once).

        Returns:
            ``(tokens, positions)``: tokens ``[B, P, C]`` in row-major patch order and their
            integer (row, column) positions ``[B, P, 2]``, with ``P = (H/p) * (W/p)``.
        """
        if checks_active():
            check_images("img", img, self.patch_size, channels=self.in_chans)
        x = self.proj(img)
        b, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        return tokens, grid_positions(b, h, w, img.device)
