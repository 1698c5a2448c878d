"""Per-pixel error of a reconstruction after one similarity fit: how well frames are registered.

Accuracy and completion (nearest neighbours) forgive a frame placed in the wrong spot as long
as its points land near some surface; with pixel correspondences the error can be measured
directly. One Sim(3) per sequence (Umeyama on all valid pixels) removes the gauge freedom of a
reconstruction in frame 0's coordinates, so what remains is depth error plus misregistration.
"""

import torch
from torch import Tensor

from spatialmem._checks import check_bool_mask, check_tensor
from spatialmem._typing import Bool, Float
from spatialmem.geometry.alignment import umeyama
from spatialmem.geometry.transforms import transform_points
from spatialmem.metrics.extent import bounding_box_diagonal

__all__ = ["aligned_point_error"]


def aligned_point_error(
    pred: Float[Tensor, "B T H W 3"],
    gt: Float[Tensor, "B T H W 3"],
    valid: Bool[Tensor, "B T H W"],
) -> Float[Tensor, "B"]:
    """Mean distance between predicted and true points of the same pixels after the best Sim(3)
    per sequence, as a fraction of the ground truth's diameter
    ([`bounding_box_diagonal`][spatialmem.metrics.bounding_box_diagonal]).

    Args:
        pred: predicted points of every pixel of ``T`` frames, in any one frame (e.g. frame 0's).
        gt: true points of the same pixels in any frame (e.g. the world's).
        valid: pixels to use; every sequence needs at least 3.

    Returns:
        ``[B]`` errors (0: a perfect reconstruction up to similarity; a prediction that puts
        every frame in its own camera frame scores roughly the camera motion over the diameter).

    Raises:
        TypeError: ``valid`` is not a bool tensor.
        ValueError: shapes that differ, or a sequence with fewer than 3 valid pixels.
    """
    check_tensor("pred", pred, ndim=5, floating=True, dims={4: 3}, expected="B T H W 3")
    check_tensor("gt", gt, ndim=5, floating=True, dims={4: 3}, expected="B T H W 3")
    check_bool_mask("valid", valid, None, "B T H W")
    if gt.shape != pred.shape or valid.shape != pred.shape[:-1]:
        raise ValueError(
            f"`pred` {tuple(pred.shape)}, `gt` {tuple(gt.shape)} and `valid` "
            f"{tuple(valid.shape)} must describe the same pixels ([B, T, H, W, 3] and [B, T, H, W])"
        )
    b = pred.shape[0]
    mask = valid.reshape(b, -1)
    counts = mask.sum(1)
    if bool((counts < 3).any()):
        raise ValueError(f"every sequence needs >= 3 valid pixels, got counts {counts.tolist()}")
    src, dst = pred.reshape(b, -1, 3).float(), gt.reshape(b, -1, 3).float()
    aligned = transform_points(umeyama(src, dst, mask=mask), src)
    dist = torch.where(mask, (aligned - dst).norm(dim=-1), 0.0).sum(1) / counts
    diameter = bounding_box_diagonal(dst, mask)
    return dist / diameter.clamp_min(torch.finfo(dst.dtype).tiny)
