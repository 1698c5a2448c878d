"""Surface normals of pointmaps from finite differences on the pixel grid."""

import torch
from torch import Tensor

from spatialmem._checks import check_bool_mask, check_tensor
from spatialmem._typing import Bool, Float

__all__ = ["normals_from_pointmap"]

_DEGENERATE = 1e-6


def normals_from_pointmap(
    pts: Float[Tensor, "B H W 3"], valid: Bool[Tensor, "B H W"] | None = None
) -> tuple[Float[Tensor, "B H W 3"], Bool[Tensor, "B H W"]]:
    """Unit normals of a pointmap from central differences on the pixel grid.

    At pixel ``(v, u)`` the tangents are ``du = P[v, u+1] - P[v, u-1]`` (along the row) and
    ``dv = P[v+1, u] - P[v-1, u]`` (along the column), and the normal is
    ``normalise(dv x du)``.

    Orientation: for a pointmap taken by a pinhole camera (OpenCV axes, pixel ``u`` to the right
    and ``v`` down) of the surfaces it sees, ``dv x du`` points towards that camera (a
    fronto-parallel plane in the camera frame gets ``(0, 0, -1)``). The orientation comes from
    the pixel grid, so it needs no pose and holds in any frame the pointmap is expressed in (world
    or camera) under rotations and translations.

    Args:
        pts: ``[B, H, W, 3]`` points of each pixel (any frame).
        valid: ``[B, H, W]`` bool, pixels with a point; ``None`` treats every finite point as
            valid.

    Returns:
        ``(normals [B, H, W, 3], valid [B, H, W])``: unit normals, zero where invalid. A normal
        is valid where the pixel and its four neighbours are valid and finite, and the tangents
        are not degenerate (``|dv x du| > 1e-6 |dv| |du|``: not parallel, not zero). Border
        pixels (first and last row and column) are invalid. Depth discontinuities are not
        detected: a pixel whose neighbours lie on different surfaces gets a mixed normal.

    Raises:
        TypeError: ``pts`` not floating, or ``valid`` not bool.
        ValueError: ``pts`` not ``[B, H, W, 3]`` or ``valid`` not ``[B, H, W]``.
    """
    check_tensor("pts", pts, ndim=4, floating=True, dims={-1: 3}, expected="B H W 3")
    b, h, w, _ = pts.shape
    finite = torch.isfinite(pts).all(-1)
    if valid is None:
        ok = finite
    else:
        check_bool_mask("valid", valid, (b, h, w), f"B H W = {b} {h} {w}")
        ok = valid & finite
    normals = torch.zeros_like(pts)
    out_valid = torch.zeros_like(ok)
    if h < 3 or w < 3:
        return normals, out_valid
    safe = torch.where(ok[..., None], pts, 0.0)
    du = safe[:, 1:-1, 2:] - safe[:, 1:-1, :-2]
    dv = safe[:, 2:, 1:-1] - safe[:, :-2, 1:-1]
    cross = torch.linalg.cross(dv, du, dim=-1)
    norm = torch.linalg.vector_norm(cross, dim=-1)
    scale = torch.linalg.vector_norm(du, dim=-1) * torch.linalg.vector_norm(dv, dim=-1)
    inner = (
        ok[:, 1:-1, 1:-1]
        & ok[:, 1:-1, 2:]
        & ok[:, 1:-1, :-2]
        & ok[:, 2:, 1:-1]
        & ok[:, :-2, 1:-1]
        & (norm > _DEGENERATE * scale)
        & (norm > 0)
    )
    unit = cross / norm.clamp_min(torch.finfo(norm.dtype).tiny)[..., None]
    normals[:, 1:-1, 1:-1] = torch.where(inner[..., None], unit, 0.0)
    out_valid[:, 1:-1, 1:-1] = inner
    return normals, out_valid
