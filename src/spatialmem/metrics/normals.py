"""Surface normals of an unstructured point cloud: PCA of each point's k nearest neighbours."""

import torch
from torch import Tensor

from spatialmem._checks import check_finite, check_tensor
from spatialmem._typing import Float
from spatialmem.metrics.neighbors import Backend, NeighborIndex

__all__ = ["estimate_normals"]


def estimate_normals(
    points: Float[Tensor, "N 3"],
    *,
    k: int = 30,
    backend: Backend = "auto",
    chunk: int = 2048,
    workers: int = -1,
) -> Float[Tensor, "N 3"]:
    """Unit normals of a point cloud from the covariance of each point's neighbourhood.

    For every point, the ``k`` nearest points of the cloud (the point itself included) are
    found, their 3×3 covariance is formed, and the normal is its eigenvector of smallest
    eigenvalue: the direction in which the neighbourhood is thinnest. This is what Open3D's
    ``PointCloud.estimate_normals()`` computes with its default search (30 nearest neighbours),
    which the official Spann3R evaluation calls before measuring normal consistency.

    The sign of each normal is arbitrary (a cloud has no inside or viewpoint); normal
    consistency uses the absolute cosine, so it does not matter there. For pointmaps,
    [`normals_from_pointmap`][spatialmem.geometry.normals.normals_from_pointmap] is a cheaper
    alternative that uses the pixel grid instead of a neighbour search.

    Points are processed in blocks of ``chunk`` (neighbour indices, gathered neighbourhoods and
    the batched ``torch.linalg.eigh`` of the block), so memory stays ``O(chunk · k)`` besides
    the search structure. Computed in float64, returned in the dtype of ``points``.

    Args:
        points: ``[N, 3]`` finite points, ``N >= 3``.
        k: neighbourhood size (clipped to ``N``), at least 3.
        backend: nearest-neighbour backend, see
            [`NeighborIndex`][spatialmem.metrics.NeighborIndex] (``"kdtree"`` needs SciPy, the
            ``eval`` extra).
        chunk: points per block (also the torch backend's block size).
        workers: threads of the k-d tree queries (``-1``: all cores).

    Returns:
        ``[N, 3]`` unit normals (unoriented). A neighbourhood whose points are collinear or
        identical has no unique normal; one of the valid directions is returned.

    Raises:
        TypeError: ``points`` is not a floating tensor.
        ValueError: ``points`` not ``[N, 3]``, fewer than 3 points, NaN/Inf, or ``k < 3``.

    Example:
        ```python
        import torch
        from spatialmem.metrics import estimate_normals

        xy = torch.rand(500, 2)
        plane = torch.cat([xy, torch.full((500, 1), 2.0)], dim=1)   # the plane z = 2
        normals = estimate_normals(plane, k=10)
        assert torch.allclose(normals[:, 2].abs(), torch.ones(500), atol=1e-5)
        ```
    """
    check_tensor("points", points, ndim=2, floating=True, dims={-1: 3}, expected="N 3")
    n = points.shape[0]
    if n < 3:
        raise ValueError(
            "`points` must hold at least 3 points to estimate normals, got shape "
            f"{tuple(points.shape)}"
        )
    check_finite("points", points)
    if isinstance(k, bool) or not isinstance(k, int) or k < 3:
        raise ValueError(f"`k` must be an integer >= 3, got {k!r}")
    index = NeighborIndex(points, backend=backend, chunk=chunk, workers=workers)
    return _pca_normals(points.detach().to(torch.float64), index, k, chunk).to(points.dtype)


def _pca_normals(points: Tensor, index: NeighborIndex, k: int, chunk: int) -> Tensor:
    """PCA normals of float64 ``points`` with a prebuilt index over them (no argument checks)."""
    k = min(k, points.shape[0])
    out = torch.empty_like(points)
    for start in range(0, points.shape[0], chunk):
        _, idx = index.query(points[start : start + chunk], k)
        nb = points[idx]  # c k 3
        centred = nb - nb.mean(dim=1, keepdim=True)
        _, vecs = torch.linalg.eigh(centred.transpose(1, 2) @ centred / k)  # ascending
        out[start : start + chunk] = vecs[:, :, 0]
    return out
