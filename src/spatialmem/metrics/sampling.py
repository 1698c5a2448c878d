"""Deterministic point-cloud subsampling for faster evaluation (indices, so attributes follow)."""

import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float, Int

__all__ = ["random_subset_indices", "voxel_downsample_indices"]


def voxel_downsample_indices(points: Float[Tensor, "N 3"], voxel_size: float) -> Int[Tensor, "K"]:
    """Indices of one point per occupied voxel: the first (lowest-index) point in each.

    The space is cut into cubes of side ``voxel_size`` aligned with the origin (voxel
    ``floor(p / voxel_size)``); every occupied cube keeps the point that comes first in
    ``points``. Unlike Open3D's ``voxel_down_sample`` (which averages the points of a voxel),
    the kept points are original points, so their normals, colours or correspondences can be
    taken with the same indices, and the result does not depend on the device or on floating
    point summation order.

    Args:
        points: ``[N, 3]`` points.
        voxel_size: side of the cubes, ``> 0``, in the units of ``points``.

    Returns:
        ``[K]`` int64 indices into ``points``, ascending (``K`` = number of occupied voxels).

    Raises:
        TypeError: ``points`` is not a floating tensor.
        ValueError: ``points`` not ``[N, 3]``, or ``voxel_size`` not positive and finite.
    """
    check_tensor("points", points, ndim=2, floating=True, dims={-1: 3}, expected="N 3")
    size = float(voxel_size)
    if not size > 0 or size == float("inf"):
        raise ValueError(f"`voxel_size` must be positive and finite, got {voxel_size!r}")
    n = points.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=points.device)
    cells = torch.floor(points.detach().to(torch.float64) / size).to(torch.int64)
    _, inverse = torch.unique(cells, dim=0, return_inverse=True)
    order = torch.arange(n, device=points.device)
    first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.int64, device=points.device)
    first = first.scatter_reduce(0, inverse, order, reduce="amin")
    return first.sort().values


def random_subset_indices(num_points: int, max_points: int, *, seed: int = 0) -> Int[Tensor, "K"]:
    """Ascending indices of a seeded uniform random subset of ``min(num_points, max_points)``.

    Deterministic: the same arguments give the same indices on every run and machine (a CPU
    ``torch.Generator`` seeded with ``seed``). When ``num_points <= max_points`` every index is
    returned.

    Args:
        num_points: size of the cloud.
        max_points: largest subset wanted, ``>= 1``.
        seed: seed of the generator.

    Returns:
        ``[K]`` int64 indices on the CPU, ``K = min(num_points, max_points)``.

    Raises:
        ValueError: negative ``num_points`` or ``max_points < 1``.
    """
    if num_points < 0:
        raise ValueError(f"`num_points` must be non-negative, got {num_points}")
    if max_points < 1:
        raise ValueError(f"`max_points` must be a positive integer, got {max_points}")
    if num_points <= max_points:
        return torch.arange(num_points)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(num_points, generator=gen)[:max_points].sort().values
