"""Pinhole camera maths: pixel grids, intrinsics, depth <-> pointmap, projection.

Conventions (those of [SyntheticScene][spatialmem.data.scenes.SyntheticScene] and DUSt3R):
OpenCV camera axes (x right, y down, z forward), camera-to-world poses, pixel ``(u, v)`` of the
pixel in column ``u`` and row ``v`` measured at its centre (``u + 0.5``), principal point at the
image centre ``(W / 2, H / 2)`` unless given otherwise.
"""

import torch
from torch import Tensor

from spatialmem._checks import checks_active
from spatialmem._typing import Float
from spatialmem.geometry.transforms import check_rigid, invert_rigid, transform_points

__all__ = [
    "depth_to_points",
    "intrinsics_from_focal",
    "pixel_grid",
    "points_in_camera",
    "points_to_depth",
    "project",
]


def pixel_grid(
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, "H W 2"]:
    """Pixel-centre coordinates ``(u, v) = (column + 0.5, row + 0.5)``."""
    v = torch.arange(height, device=device, dtype=dtype) + 0.5
    u = torch.arange(width, device=device, dtype=dtype) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack((uu, vv), dim=-1)


def intrinsics_from_focal(
    focal: Float[Tensor, "*batch"], height: int, width: int
) -> Float[Tensor, "*batch 3 3"]:
    """``K`` with square pixels of focal ``focal`` and the principal point at the centre."""
    k = torch.zeros(*focal.shape, 3, 3, dtype=focal.dtype, device=focal.device)
    k[..., 0, 0] = focal
    k[..., 1, 1] = focal
    k[..., 0, 2] = width / 2
    k[..., 1, 2] = height / 2
    k[..., 2, 2] = 1.0
    return k


def depth_to_points(
    depth: Float[Tensor, "B H W"],
    intrinsics: Float[Tensor, "B 3 3"],
    cam_to_world: Float[Tensor, "B 4 4"] | None = None,
) -> Float[Tensor, "B H W 3"]:
    """Back-project a depth map (camera ``z``) to a pointmap.

    Args:
        depth: depth of every pixel.
        intrinsics: pinhole ``K`` per batch element.
        cam_to_world: pose; ``None`` returns the points in the camera frame.
    """
    h, w = depth.shape[-2:]
    uv = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    cx, cy = intrinsics[:, 0, 2], intrinsics[:, 1, 2]
    x = (uv[..., 0] - cx[:, None, None]) / fx[:, None, None] * depth
    y = (uv[..., 1] - cy[:, None, None]) / fy[:, None, None] * depth
    pts = torch.stack((x, y, depth), dim=-1)
    return pts if cam_to_world is None else transform_points(cam_to_world, pts)


def points_in_camera(
    points: Float[Tensor, "B *rest 3"], cam_to_world: Float[Tensor, "B 4 4"]
) -> Float[Tensor, "B *rest 3"]:
    """Map world points into a camera's frame (the inverse of its camera-to-world pose).

    Uses the exact rigid inverse ([`invert_rigid`][spatialmem.geometry.transforms.invert_rigid]),
    so ``cam_to_world`` must be rigid (rotation and translation). The losses use it to express the
    ground truth of a sequence in frame 0's camera
    ([`gt_in_camera0`][spatialmem.losses.gt_in_camera0]).

    Args:
        points: ``[B, ..., 3]`` world points, e.g. ``[B, T, H, W, 3]`` (every point of batch
            element ``b`` is mapped with pose ``b``).
        cam_to_world: ``[B, 4, 4]`` camera-to-world pose of each batch element.

    Returns:
        ``inverse(cam_to_world[b]) @ [points[b], 1]``, shaped like ``points`` (a new tensor).

    Raises:
        ValueError: ``cam_to_world`` is not rigid, e.g. singular (the values are read only when
            value checks are on, see [`check_rigid`][spatialmem.geometry.transforms.check_rigid]).
    """
    if checks_active():
        check_rigid("cam_to_world", cam_to_world)
    return transform_points(invert_rigid(cam_to_world), points)


def points_to_depth(
    points: Float[Tensor, "B H W 3"], cam_to_world: Float[Tensor, "B 4 4"]
) -> Float[Tensor, "B H W"]:
    """Depth (camera ``z``) of world points seen from the given cameras (``cam_to_world`` must
    be rigid, see [`points_in_camera`][spatialmem.geometry.camera.points_in_camera])."""
    if checks_active():
        check_rigid("cam_to_world", cam_to_world)
    return transform_points(invert_rigid(cam_to_world), points)[..., 2]


def project(
    points: Float[Tensor, "B N 3"],
    intrinsics: Float[Tensor, "B 3 3"],
    cam_to_world: Float[Tensor, "B 4 4"],
) -> tuple[Float[Tensor, "B N 2"], Float[Tensor, "B N"]]:
    """Project world points into the cameras.

    Returns:
        ``(uv, z)``: pixel coordinates (centre convention of
        [pixel_grid][spatialmem.geometry.camera.pixel_grid]) and depth; ``uv`` is meaningless
        where ``z <= 0``.
    """
    cam = transform_points(invert_rigid(cam_to_world), points)
    z = cam[..., 2]
    uvw = cam @ intrinsics.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3], z
