"""Size of a scene: the diagonal of the bounding box of its valid points.

Errors reported "as a fraction of the scene's diameter" (the registration error, the results
page's Acc / diameter) all divide by this one number so that they stay comparable.
"""

import torch
from torch import Tensor

from spatialmem._checks import check_bool_mask, check_tensor
from spatialmem._typing import Bool, Float

__all__ = ["bounding_box_diagonal"]


def bounding_box_diagonal(
    points: Float[Tensor, "*B N 3"], valid: Bool[Tensor, "*B N"] | None = None
) -> Float[Tensor, "*B"]:
    """Length of the diagonal of the axis-aligned bounding box of each cloud's valid points.

    Args:
        points: ``N`` points per cloud, any leading batch shape ``*B``.
        valid: which points count (all when ``None``); every cloud needs at least one.

    Returns:
        ``[*B]`` diagonals, in the points' unit.

    Raises:
        TypeError: ``valid`` is not a bool tensor.
        ValueError: ``valid`` does not match ``points`` or leaves a cloud empty.
    """
    check_tensor("points", points, floating=True, dims={-1: 3}, expected="*B N 3")
    if points.ndim < 2:
        raise ValueError(f"`points` must be [*B, N, 3], got {tuple(points.shape)}")
    if valid is None:
        valid = torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)
    valid = check_bool_mask("valid", valid, tuple(points.shape[:-1]), "*B N")
    if not bool(valid.any(-1).all()):
        raise ValueError("every cloud needs at least one valid point")
    big = torch.finfo(points.dtype).max
    low = torch.where(valid[..., None], points, big).amin(-2)
    high = torch.where(valid[..., None], points, -big).amax(-2)
    return (high - low).norm(dim=-1)
