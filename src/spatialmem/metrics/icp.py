"""Point-to-point ICP refinement (the last alignment step of the official Spann3R evaluation)."""

from dataclasses import dataclass

import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float
from spatialmem.geometry.alignment import umeyama
from spatialmem.geometry.transforms import transform_points
from spatialmem.metrics.neighbors import Backend, NeighborIndex, _check_cloud

__all__ = ["ICPResult", "icp"]


@dataclass(frozen=True, eq=False)
class ICPResult:
    """Outcome of [`icp`][spatialmem.metrics.icp]."""

    transform: Float[Tensor, "4 4"]
    """Float64 ``[[s R, t], [0, 1]]`` mapping the source onto the target (``init`` included)."""
    fitness: float
    """Fraction of source points with a target point within ``max_distance`` at the end."""
    inlier_rmse: float
    """Root mean square distance of those inlier pairs (NaN without inliers)."""
    iterations: int
    """Alignment updates performed."""


def _residuals(
    src: Tensor, index: NeighborIndex, max_distance: float
) -> tuple[Tensor, Tensor, Tensor, float, float]:
    dist, idx = index.query(src, 1)
    dist, idx = dist[:, 0], idx[:, 0]
    inlier = dist <= max_distance
    count = int(inlier.sum())
    fitness = count / max(src.shape[0], 1)
    rmse = float(dist[inlier].square().mean().sqrt()) if count else float("nan")
    return dist, idx, inlier, fitness, rmse


def _icp(
    source: Tensor,
    index: NeighborIndex,
    target: Tensor,
    *,
    max_distance: float,
    max_iterations: int,
    tolerance: float,
    init: Tensor,
    with_scale: bool,
) -> ICPResult:
    """ICP on float64 tensors with a prebuilt index of ``target`` (no argument checks)."""
    transform = init.to(torch.float64)
    current = transform_points(transform, source)
    _, idx, inlier, fitness, rmse = _residuals(current, index, max_distance)
    done = 0
    for _ in range(max_iterations):
        if int(inlier.sum()) < 3:
            break
        update = umeyama(current[inlier][None], target[idx[inlier]][None], with_scale=with_scale)[0]
        transform = update @ transform
        current = transform_points(transform, source)
        done += 1
        previous = (fitness, rmse)
        _, idx, inlier, fitness, rmse = _residuals(current, index, max_distance)
        if abs(fitness - previous[0]) < tolerance and (
            abs(rmse - previous[1]) < tolerance or rmse != rmse
        ):
            break
    return ICPResult(transform=transform, fitness=fitness, inlier_rmse=rmse, iterations=done)


def icp(
    source: Float[Tensor, "N 3"],
    target: Float[Tensor, "M 3"],
    *,
    max_distance: float,
    max_iterations: int = 30,
    tolerance: float = 1e-6,
    init: Float[Tensor, "4 4"] | None = None,
    with_scale: bool = False,
    backend: Backend = "auto",
    chunk: int = 2048,
    workers: int = -1,
) -> ICPResult:
    """Point-to-point iterative closest point: refine the transform mapping ``source`` onto
    ``target``.

    Each iteration pairs every transformed source point with its nearest target point, keeps
    the pairs closer than ``max_distance`` (inliers) and composes the least-squares
    [`umeyama`][spatialmem.geometry.alignment.umeyama] fit of those pairs onto the current
    transform. It stops after ``max_iterations`` updates, when fewer than 3 inliers remain, or
    when the fitness (inlier fraction) and the inlier RMSE both change by less than
    ``tolerance``: the criteria and defaults of Open3D's ``registration_icp`` with
    ``TransformationEstimationPointToPoint``, which the official Spann3R evaluation runs after
    its median scale-shift alignment (``max_distance`` 0.1 for 7-Scenes and NRGBD in metres,
    100 for DTU in millimetres).

    Args:
        source: ``[N, 3]`` points to move (the prediction).
        target: ``[M, 3]`` fixed points (the ground truth).
        max_distance: largest distance of an inlier pair, ``> 0``.
        max_iterations: most alignment updates.
        tolerance: convergence threshold on the fitness and RMSE changes.
        init: ``[4, 4]`` starting transform; ``None`` is the identity.
        with_scale: also fit a scale at each update (``False``: rigid updates, as Open3D).
        backend: nearest-neighbour backend (see
            [`NeighborIndex`][spatialmem.metrics.NeighborIndex]; ``"kdtree"`` needs SciPy, the
            ``eval`` extra).
        chunk: block size of the torch backend.
        workers: threads of the k-d tree queries (``-1``: all cores).

    Returns:
        The final transform (float64, ``init`` included), fitness, inlier RMSE and the number of
        updates.

    Raises:
        TypeError: non-floating inputs.
        ValueError: clouds not ``[*, 3]``, empty or not finite; ``init`` not ``[4, 4]``;
            non-positive ``max_distance`` or negative ``max_iterations``.

    Example:
        ```python
        import math
        import torch
        from spatialmem.geometry import rigid, transform_points
        from spatialmem.metrics import icp

        target = torch.rand(2000, 3)
        c, s = math.cos(0.05), math.sin(0.05)
        rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        moved = transform_points(rigid(rot, torch.tensor([0.02, 0.0, 0.01])), target)
        result = icp(moved, target, max_distance=0.1)
        aligned = transform_points(result.transform.float(), moved)
        assert (aligned - target).norm(dim=-1).max() < 1e-3
        ```
    """
    _check_cloud("source", source, "N")
    _check_cloud("target", target, "M")
    if not max_distance > 0:
        raise ValueError(f"`max_distance` must be positive, got {max_distance!r}")
    if max_iterations < 0:
        raise ValueError(f"`max_iterations` must be non-negative, got {max_iterations!r}")
    if init is None:
        init = torch.eye(4, dtype=torch.float64, device=source.device)
    else:
        check_tensor("init", init, ndim=2, floating=True, dims={0: 4, 1: 4}, expected="4 4")
    src = source.detach().to(torch.float64)
    tgt = target.detach().to(torch.float64)
    index = NeighborIndex(tgt, backend=backend, chunk=chunk, workers=workers)
    return _icp(
        src,
        index,
        tgt,
        max_distance=float(max_distance),
        max_iterations=int(max_iterations),
        tolerance=float(tolerance),
        init=init.to(device=source.device),
        with_scale=with_scale,
    )
