"""Photometric augmentation of training clips: colour jitter, one draw per clip.

The paper trains Spann3R with colour jitter. As in DUSt3R's sequence training, the jitter here is
drawn once per clip and applied identically to all of its frames (a clip keeps consistent
colours over time), and only the input frames change: the ground truth is geometric.

```python
import torch

from spatialmem.training.augment import jitter_colors

frames = torch.rand(2, 3, 3, 32, 32) * 2 - 1  # [B, T, 3, H, W] in [-1, 1]
jittered = jitter_colors(frames, 0.4, torch.Generator().manual_seed(0))
```
"""

import torch
from torch import Tensor

from spatialmem._typing import Float

__all__ = ["jitter_colors"]

# ITU-R 601 luma weights (what torchvision's rgb_to_grayscale uses).
_LUMA = (0.299, 0.587, 0.114)


def _gray(x: Tensor) -> Tensor:
    """Luma of ``[..., 3, H, W]`` images in [0, 1], as ``[..., 1, H, W]``."""
    weights = x.new_tensor(_LUMA).view(3, 1, 1)
    return (x * weights).sum(dim=-3, keepdim=True)


def jitter_colors(
    frames: Float[Tensor, "B T 3 H W"],
    strength: int | float,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "B T 3 H W"]:
    """Random brightness, contrast and saturation changes, one draw per clip.

    For every clip ``b`` three factors are drawn uniformly from ``[1 - strength, 1 + strength]``
    and applied, in this order and identically to all ``T`` frames of the clip, to the images
    mapped to [0, 1] (the operations of torchvision's ``ColorJitter``, each followed by a clamp
    to [0, 1]):

    * brightness ``x -> b x``;
    * contrast ``x -> m + c (x - m)``, ``m`` the mean luma of the frame;
    * saturation ``x -> g + s (x - g)``, ``g`` the pixel's luma.

    Hue is left alone. The result is mapped back to [-1, 1]. The draw depends only on
    ``generator`` (3 ``B`` uniform numbers, taken on the CPU), so a generator seeded from the
    training step makes the augmentation reproducible and independent of the device.

    Args:
        frames: clips in [-1, 1] (the models' input range).
        strength: jitter strength ``j`` in [0, 1]; ``0`` returns ``frames`` itself unchanged and
            draws nothing.
        generator: source of the random factors (CPU); ``None`` uses torch's global generator.

    Returns:
        The jittered clips, same shape, dtype and device, in [-1, 1].

    Raises:
        ValueError: ``strength`` outside [0, 1] or ``frames`` not ``[B, T, 3, H, W]``.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"`strength` must lie in [0, 1], got {strength!r}")
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"`frames` must be [B, T, 3, H, W], got {tuple(frames.shape)}")
    if strength == 0:
        return frames
    b = frames.shape[0]
    factors = 1.0 + (torch.rand(3, b, generator=generator) * 2.0 - 1.0) * float(strength)
    factors = factors.to(device=frames.device, dtype=torch.float32).view(3, b, 1, 1, 1, 1)
    brightness, contrast, saturation = factors.unbind(0)

    x = ((frames.float() + 1.0) * 0.5).clamp(0.0, 1.0)
    x = (x * brightness).clamp(0.0, 1.0)
    mean = _gray(x).mean(dim=(-2, -1), keepdim=True)
    x = (mean + contrast * (x - mean)).clamp(0.0, 1.0)
    gray = _gray(x)
    x = (gray + saturation * (x - gray)).clamp(0.0, 1.0)
    return (x * 2.0 - 1.0).to(frames.dtype)
