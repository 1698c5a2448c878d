"""Rigid and similarity transforms as ``[..., 4, 4]`` matrices (batch-first, any leading dims).

A rigid transform is ``[[R, t], [0, 1]]``; a similarity (Sim(3)) ``[[s R, t], [0, 1]]`` with
``s > 0``. Cameras use camera-to-world poses (OpenCV axes: x right, y down, z forward).
"""

import torch
from torch import Tensor

from spatialmem._checks import check_finite, check_tensor, value_checks_enabled
from spatialmem._typing import Float

__all__ = [
    "check_rigid",
    "compose",
    "invert_rigid",
    "invert_sim3",
    "rigid",
    "rotation_angle_deg",
    "sim3",
    "sim3_scale",
    "skew",
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


def skew(vectors: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """Cross-product matrices: ``skew(v) @ u = v x u`` (``torch.linalg.matrix_exp(skew(w))`` is
    the rotation by the rotation vector ``w``).

    Raises:
        ValueError: the last dimension of ``vectors`` is not 3.
    """
    check_tensor("vectors", vectors, floating=True, dims={-1: 3}, expected="*batch 3")
    zero = torch.zeros_like(vectors[..., 0])
    x, y, z = vectors.unbind(-1)
    rows = [torch.stack(r, -1) for r in ((zero, -z, y), (z, zero, -x), (-y, x, zero))]
    return torch.stack(rows, -2)


def sim3_scale(transform: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch"]:
    """The scale ``s`` of a similarity (``1`` for a rigid transform)."""
    return torch.linalg.det(transform[..., :3, :3]).abs().pow(1.0 / 3.0)


def check_rigid(name: str, transform: object, *, atol: float = 1e-3) -> Tensor:
    """Raise unless ``transform`` is a batch of rigid ``[..., 4, 4]`` transforms.

    The shape is always checked; the values (finite, ``R^T R = I`` and ``det R = 1`` within
    ``atol``, last row ``[0, 0, 0, 1]``) only when value checks are on
    ([`set_value_checks`][spatialmem.set_value_checks]), since reading them syncs with the GPU.

    Args:
        name: argument name for the error message.
        transform: the value to check.
        atol: absolute tolerance of the orthonormality and last-row tests.

    Returns:
        ``transform``, typed as a tensor.

    Raises:
        TypeError: not a floating tensor.
        ValueError: wrong shape, NaN/Inf, or a non-rigid (e.g. singular or scaled) transform.
    """
    x = check_tensor(name, transform, floating=True, expected="... 4 4")
    if x.ndim < 2 or tuple(x.shape[-2:]) != (4, 4):
        raise ValueError(f"`{name}` must be [..., 4, 4] transforms, got shape {tuple(x.shape)}")
    if not value_checks_enabled() or x.device.type == "meta" or not x.numel():
        return x
    check_finite(name, x)
    rot = x[..., :3, :3].double()
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
    ortho = (rot.transpose(-1, -2) @ rot - eye).abs().amax(dim=(-1, -2))
    det = torch.linalg.det(rot)
    last = x[..., 3, :].double() - torch.tensor([0.0, 0.0, 0.0, 1.0], device=x.device).double()
    bad = (ortho > atol) | ((det - 1).abs() > atol) | (last.abs().amax(-1) > atol)
    if bool(bad.any()):
        idx = torch.nonzero(bad.reshape(-1)).flatten().tolist()[:5]
        flat_det = det.reshape(-1)
        raise ValueError(
            f"`{name}` must be rigid [[R, t], [0, 1]] with R a rotation (R^T R = I, det R = 1); "
            f"transform(s) {idx} (flattened batch index) are not: det R = "
            f"{[round(float(flat_det[i]), 6) for i in idx]}, max |R^T R - I| = "
            f"{[round(float(ortho.reshape(-1)[i]), 6) for i in idx]}. A singular or scaled pose "
            "cannot be inverted as a camera pose"
        )
    return x


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
