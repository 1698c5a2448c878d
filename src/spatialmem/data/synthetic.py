"""Deterministic synthetic image sequences: a camera sliding over a procedural texture."""

import math

import torch
from torch import Tensor

from spatialmem._typing import Float

__all__ = ["synthetic_sequence", "to_model_range"]


def to_model_range(images_u8: Tensor) -> Float[Tensor, "... 3 H W"]:
    """Convert ``uint8`` images ``[..., H, W, 3]`` to the models' float range.

    Uses the published normalisation ``(u8 / 255 - 0.5) / 0.5``, so values lie in [-1, 1].
    """
    if images_u8.dtype != torch.uint8 or images_u8.shape[-1] != 3:
        raise ValueError(
            f"`images_u8` must be uint8 with 3 channels last, got {tuple(images_u8.shape)} "
            f"{images_u8.dtype}"
        )
    x = images_u8.movedim(-1, -3).float() / 255
    return (x - 0.5) / 0.5


def synthetic_sequence(
    num_frames: int = 2,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    step: tuple[int, int] = (1, 4),
) -> Float[Tensor, "T 3 H W"]:
    """Frames of a smooth random texture seen by a camera that slides by ``step`` pixels.

    Each frame is an integer-offset crop of one canvas (sums of low-frequency sinusoids per
    channel), so consecutive frames overlap like a panning video. Quantised to ``uint8`` and
    normalised with [`to_model_range`][spatialmem.data.to_model_range].

    Args:
        num_frames: number of frames ``T``.
        height: frame height ``H``.
        width: frame width ``W``.
        seed: random seed of the texture.
        step: ``(dy, dx)`` pixel offset between consecutive frames.

    Returns:
        ``[T, 3, H, W]`` float32 images in [-1, 1].
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(
            f"need num_frames, height, width >= 1, got {num_frames}, {height}, {width}"
        )
    gen = torch.Generator().manual_seed(seed)
    canvas_h = height + abs(step[0]) * (num_frames - 1)
    canvas_w = width + abs(step[1]) * (num_frames - 1)
    ys = torch.arange(canvas_h, dtype=torch.float32)[:, None]
    xs = torch.arange(canvas_w, dtype=torch.float32)[None, :]
    n_sines = 6
    canvas = torch.zeros(3, canvas_h, canvas_w)
    for c in range(3):
        for _ in range(n_sines):
            amp, fy, fx, phase = torch.rand(4, generator=gen).tolist()
            freq_y = (fy * 5 - 2.5) / 64
            freq_x = (fx * 5 - 2.5) / 64
            wave = torch.sin(2 * math.pi * (freq_y * ys + freq_x * xs) + phase * 2 * math.pi)
            canvas[c] += (0.3 + 0.7 * amp) * wave
    canvas = 0.5 + 0.5 * torch.tanh(0.8 * canvas / math.sqrt(n_sines / 2))
    u8 = (canvas * 255).round().clamp(0, 255).to(torch.uint8)
    frames = []
    for t in range(num_frames):
        y0 = t * step[0] if step[0] >= 0 else (num_frames - 1 - t) * -step[0]
        x0 = t * step[1] if step[1] >= 0 else (num_frames - 1 - t) * -step[1]
        frames.append(u8[:, y0 : y0 + height, x0 : x0 + width])
    return to_model_range(torch.stack(frames).permute(0, 2, 3, 1))
