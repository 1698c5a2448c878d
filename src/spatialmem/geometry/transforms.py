"""Rigid and similarity transforms as ``[..., 4, 4]`` matrices (batch-first, any leading dims).

A rigid transform is ``[[R, t], [0, 1]]``; a similarity (Sim(3)) ``[[s R, t], [0, 1]]`` with
``s > 0``. Cameras use camera-to-world poses (OpenCV axes: x right, y down, z forward).
"""

import torch
from torch import Tensor

from spatialmem._typing import Float

__all__ = [
    "compose",
    "invert_rigid",
    "invert_sim3",
    "rigid",
    "rotation_angle_deg",
    "sim3",
    "sim3_scale",
    "transform_points",
]


def rigid(
    rotation: Float[Tensor, "*batch 3 3"], translation: Float[Tensor, "*batch 3"]
) -> Float[Tensor, "*batch 4 4"]:
    """Assemble ``[[R, t], [0, 1]]``."""
    return sim3(torch.ones_like(translation[..., 0]), rotation, translation)


def sim3(
    scale: Float[Tensor, "*batch"],
    rotation: Float[Tensor, "*batch 3 3"],
    translation: Float[Tensor, "*batch 3"],
) -> Float[Tensor, "*batch 4 4"]:
    """Assemble ``[[s R, t], [0, 1]]``."""
    batch = translation.shape[:-1]
    out = torch.zeros(*batch, 4, 4, dtype=translation.dtype, device=translation.device)
    out[..., :3, :3] = scale[..., None, None] * rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def sim3_scale(transform: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch"]:
    """The scale ``s`` of a similarity (``1`` for a rigid transform)."""
    return torch.linalg.det(transform[..., :3, :3]).abs().pow(1.0 / 3.0)


def invert_rigid(transform: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Inverse of a rigid transform, ``[[R^T, -R^T t], [0, 1]]`` (exact, no matrix inverse)."""
    rot_t = transform[..., :3, :3].transpose(-1, -2)
    trans = -(rot_t @ transform[..., :3, 3:4])[..., 0]
    return rigid(rot_t, trans)


def invert_sim3(transform: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Inverse of a similarity ``[[s R, t], [0, 1]]``: ``[[R^T / s, -R^T t / s], [0, 1]]``."""
    s = sim3_scale(transform)
    rot = transform[..., :3, :3] / s[..., None, None]
    rot_t = rot.transpose(-1, -2)
    trans = -(rot_t @ transform[..., :3, 3:4])[..., 0] / s[..., None]
    return sim3(1.0 / s, rot_t, trans)


def compose(*transforms: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """``compose(A, B, C) = A @ B @ C``: apply ``C`` first."""
    if not transforms:
        raise ValueError("compose() needs at least one transform")
    out = transforms[0]
    for t in transforms[1:]:
        out = out @ t
    return out


def transform_points(
    transform: Float[Tensor, "*batch 4 4"], points: Float[Tensor, "..."]
) -> Float[Tensor, "..."]:
    """Apply ``transform`` to points.

    Args:
        transform: ``[*batch, 4, 4]`` (rigid, similarity or any affine map).
        points: ``[*batch, *rest, 3]``: every point of a batch element gets that element's
            transform (e.g. ``[B, 4, 4]`` with ``[B, N, 3]`` or ``[B, H, W, 3]``).

    Returns:
        The transformed points, shaped like ``points``.
    """
    nb = transform.ndim - 2
    if tuple(points.shape[:nb]) != tuple(transform.shape[:nb]):
        raise ValueError(
            f"`points` {tuple(points.shape)} must start with the batch dims of `transform` "
            f"{tuple(transform.shape)}"
        )
    flat = points.reshape(*points.shape[:nb], -1, 3)
    out = flat @ transform[..., :3, :3].transpose(-1, -2) + transform[..., None, :3, 3]
    return out.reshape(points.shape)


def rotation_angle_deg(
    rot_a: Float[Tensor, "*batch 3 3"], rot_b: Float[Tensor, "*batch 3 3"]
) -> Float[Tensor, "*batch"]:
    """Geodesic angle in degrees between two rotations (of ``R_a^T R_b``)."""
    rel = rot_a.transpose(-1, -2) @ rot_b
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))
