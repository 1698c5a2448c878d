"""Cameras and points as a COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``).

COLMAP stores world-to-camera poses with OpenCV camera axes (x right, y down, z forward) as a
unit quaternion ``QW QX QY QZ`` (Hamilton convention, ``QW >= 0`` here) and a translation
``TX TY TZ``: a world point ``X`` is at ``R X + t`` in the camera. Its pixel convention (centre of
the top-left pixel at ``(0.5, 0.5)``) is spatialmem's, so ``K`` is written as is, as a
``PINHOLE`` camera ``fx fy cx cy``. The model has no 2-D observations: every image's point line
is empty and every 3-D point has an empty track, which COLMAP, its ``read_write_model.py`` and
Gaussian-splatting loaders accept.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spatialmem._checks import check_finite, check_tensor
from spatialmem._typing import Float, Int, Shaped
from spatialmem.io._common import colors_to_uint8, resolve_cameras, to_numpy

__all__ = ["ColmapModel", "read_colmap_text", "write_colmap_text"]


def _rotation_to_quaternion(rotation: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 4"]:
    """Unit quaternions ``(w, x, y, z)`` with ``w >= 0`` of rotation matrices.

    Each component is computed from the largest of ``1 +- trace terms`` (Shepperd's method), so
    the result is accurate for every rotation, including half turns.
    """
    m = rotation
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2)
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                      1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)  # fmt: skip
    # row i: 4 * q_i * (w, x, y, z)
    rows = torch.stack([
        torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, sq[..., 3]], dim=-1),
    ], dim=-2)  # fmt: skip
    best = sq.argmax(dim=-1, keepdim=True)
    q = torch.take_along_dim(rows, best[..., None], dim=-2).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def _quaternion_to_rotation(quaternion: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrices of quaternions ``(w, x, y, z)`` (normalised first)."""
    w, x, y, z = (quaternion / quaternion.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], dim=-2)  # fmt: skip


@dataclass(eq=False)
class ColmapModel:
    """A COLMAP text model read by [`read_colmap_text`][spatialmem.io.read_colmap_text], images in
    ``IMAGE_ID`` order."""

    K: Float[Tensor, "T 3 3"]
    """Pinhole intrinsics of every image (float64)."""
    cam_to_world: Float[Tensor, "T 4 4"]
    """Camera-to-world poses, OpenCV camera axes (float64; the file stores world-to-camera)."""
    image_sizes: Int[Tensor, "T 2"]
    """``(H, W)`` of every image."""
    image_names: list[str]
    """``NAME`` of every image."""
    image_ids: Int[Tensor, " T"]
    """``IMAGE_ID`` of every image."""
    camera_ids: Int[Tensor, " T"]
    """``CAMERA_ID`` of every image."""
    points: Float[Tensor, "N 3"]
    """3-D points (float64)."""
    colors: Shaped[Tensor, "N 3"]
    """RGB of the points, uint8."""
    point_errors: Float[Tensor, " N"]
    """``ERROR`` (mean reprojection error in pixels, ``-1`` when unknown) of the points."""
    point_ids: Int[Tensor, " N"]
    """``POINT3D_ID`` of the points."""


def _check_names(names: Sequence[str], t: int) -> list[str]:
    if isinstance(names, str) or len(names) != t:
        raise ValueError(f"`image_names` must be a sequence of {t} names, got {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n or any(c.isspace() for c in n)]
    if bad:
        raise ValueError(f"`image_names` must be non-empty names without whitespace, got {bad}")
    if len(set(names)) != t:
        raise ValueError("`image_names` must be distinct")
    return list(names)


def write_colmap_text(
    directory: str | os.PathLike[str],
    K: Float[Tensor, "T 3 3"] | Float[Tensor, "3 3"] | None = None,  # noqa: N803
    cam_to_world: Float[Tensor, "T 4 4"] | None = None,
    image_size: Sequence[int] | None = None,
    image_names: Sequence[str] | None = None,
    points: Float[Tensor, "N 3"] | None = None,
    colors: Shaped[Tensor, "N 3"] | None = None,
    *,
    point_errors: Float[Tensor, " N"] | None = None,
    cameras: object | None = None,
    camera_index: int = 0,
) -> dict[str, Path]:
    """Write a COLMAP text model: ``cameras.txt``, ``images.txt`` and ``points3D.txt``.

    ``cameras.txt`` holds one ``PINHOLE`` camera (``fx fy cx cy``) shared by every image when
    all intrinsics are equal, else one per image. ``images.txt`` holds, per image,
    ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (the world-to-camera rotation as a unit
    quaternion and its translation) followed by an empty line of 2-D points. ``points3D.txt``
    holds ``POINT3D_ID X Y Z R G B ERROR`` with an empty track. Ids start at 1.

    Args:
        directory: output folder (created), e.g. ``sparse/0``.
        K: ``[T, 3, 3]`` intrinsics, or one ``[3, 3]`` shared by every frame.
        cam_to_world: ``[T, 4, 4]`` camera-to-world poses, OpenCV axes (x right, y down,
            z forward).
        image_size: ``(H, W)`` of the images.
        image_names: ``T`` file names (relative to COLMAP's image folder, no whitespace);
            ``None`` names them ``frame_00000.png``, ... as
            [`write_nerfstudio`][spatialmem.io.write_nerfstudio] does.
        points: ``[N, 3]`` world points; ``None`` writes an empty ``points3D.txt``.
        colors: ``[N, 3]`` colours, float in [0, 1] or uint8; ``None`` writes grey (128).
        point_errors: ``[N]`` reprojection errors; ``None`` writes ``-1`` (unknown, COLMAP's
            default).
        cameras: instead of ``K``, ``cam_to_world`` and ``image_size``, an object with those
            attributes (``K [B, T, 3, 3]``, such as ``spatialmem.geometry.cameras.Cameras``).
        camera_index: the batch element of ``cameras`` to write.

    Returns:
        The paths written, under the keys ``"cameras"``, ``"images"`` and ``"points3D"``.

    Raises:
        ValueError: inconsistent shapes (the message names the argument), a missing
            ``image_size``, or bad image names.
        TypeError: a tensor of the wrong dtype.
    """
    k, c2w, size = resolve_cameras(K, cam_to_world, image_size, cameras, camera_index)
    if size is None:
        raise ValueError("`image_size` (H, W) is required")
    h, w = size
    t = c2w.shape[0]
    names = [f"frame_{i:05d}.png" for i in range(t)] if image_names is None else image_names
    names = _check_names(names, t)
    if points is None:
        pts = np.zeros((0, 3))
    else:
        check_tensor("points", points, ndim=2, floating=True, dims={1: 3}, expected="N 3")
        check_finite("points", points)
        pts = to_numpy(points.double())
    n = pts.shape[0]
    rgb = np.full((n, 3), 128, np.uint8) if colors is None else colors_to_uint8(colors, n)
    if point_errors is None:
        errors = np.full(n, -1.0)
    else:
        check_tensor("point_errors", point_errors, ndim=1, floating=True, dims={0: n},
                     expected="N")  # fmt: skip
        errors = to_numpy(point_errors.double())

    shared = bool((k == k[:1]).all())
    camera_ids = [1] * t if shared else list(range(1, t + 1))
    cam_lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {1 if shared else t}",
    ]
    for i in range(1 if shared else t):
        fx, fy, cx, cy = (float(v) for v in (k[i, 0, 0], k[i, 1, 1], k[i, 0, 2], k[i, 1, 2]))
        cam_lines.append(f"{i + 1} PINHOLE {w} {h} {fx!r} {fy!r} {cx!r} {cy!r}")

    rot_wc = c2w[:, :3, :3].transpose(1, 2)
    trans_wc = -(rot_wc @ c2w[:, :3, 3:]).squeeze(-1)
    quats = _rotation_to_quaternion(rot_wc)
    img_lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {t}, mean observations per image: 0",
    ]
    for i in range(t):
        values = " ".join(repr(float(v)) for v in [*quats[i].tolist(), *trans_wc[i].tolist()])
        img_lines += [f"{i + 1} {values} {camera_ids[i]} {names[i]}", ""]

    pt_lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {n}, mean track length: 0",
    ]
    pt_lines += [
        f"{j + 1} {x!r} {y!r} {z!r} {r} {g} {b} {e!r}"
        for j, ((x, y, z), (r, g, b), e) in enumerate(
            zip(pts.tolist(), rgb.tolist(), errors.tolist(), strict=True)
        )
    ]
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, lines in (("cameras", cam_lines), ("images", img_lines), ("points3D", pt_lines)):
        written[key] = out / f"{key}.txt"
        written[key].write_text("\n".join(lines) + "\n")
    return written


def _data_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} at {path}")
    return path.read_text().splitlines()


def read_colmap_text(directory: str | os.PathLike[str]) -> ColmapModel:
    """Read a COLMAP text model (``cameras.txt``, ``images.txt``, ``points3D.txt``).

    Camera models ``SIMPLE_PINHOLE`` and ``PINHOLE`` are read; ``SIMPLE_RADIAL``, ``RADIAL`` and
    ``OPENCV`` only when their distortion coefficients are zero. 2-D observations and tracks are
    not returned.

    Args:
        directory: the folder of the three files (e.g. ``sparse/0``).

    Returns:
        The [`ColmapModel`][spatialmem.io.ColmapModel], images in ``IMAGE_ID`` order and
        points in ``POINT3D_ID`` order.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a malformed line, an unsupported camera model, or an image whose camera is
            not listed.
    """
    folder = Path(directory)
    cams: dict[int, tuple[list[float], int, int]] = {}
    for line in _data_lines(folder / "cameras.txt"):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 5:
            raise ValueError(f"{folder / 'cameras.txt'}: malformed line {line!r}")
        cam_id, model, width, height = int(words[0]), words[1], int(words[2]), int(words[3])
        params = [float(v) for v in words[4:]]
        layout = {"SIMPLE_PINHOLE": (1, 3), "PINHOLE": (2, 4), "SIMPLE_RADIAL": (1, 4),
                  "RADIAL": (1, 5), "OPENCV": (2, 8)}  # fmt: skip
        if model not in layout:
            raise ValueError(f"{folder / 'cameras.txt'}: camera model {model} is not supported")
        focals, count = layout[model]
        if len(params) != count or any(p != 0 for p in params[focals + 2 :]):
            raise ValueError(
                f"{folder / 'cameras.txt'}: camera {cam_id} ({model}) needs {count} parameters "
                f"with zero distortion, got {params}"
            )
        fx, fy = (params[0], params[0]) if focals == 1 else (params[0], params[1])
        cx, cy = params[focals], params[focals + 1]
        cams[cam_id] = ([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], height, width)

    images = []
    lines = _data_lines(folder / "images.txt")
    i = 0
    while i < len(lines):
        words = lines[i].split()
        i += 1
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 10:
            raise ValueError(f"{folder / 'images.txt'}: malformed image line {lines[i - 1]!r}")
        i += 1  # the line of 2-D points
        cam_id = int(words[8])
        if cam_id not in cams:
            raise ValueError(f"{folder / 'images.txt'}: image {words[0]} has unknown camera "
                             f"{cam_id}")  # fmt: skip
        qt = [float(v) for v in words[1:8]]
        images.append((int(words[0]), qt, cam_id, " ".join(words[9:])))
    images.sort(key=lambda item: item[0])
    qt = torch.tensor([item[1] for item in images], dtype=torch.float64).reshape(-1, 7)
    rot_wc = _quaternion_to_rotation(qt[:, :4])
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(images), 1, 1)
    c2w[:, :3, :3] = rot_wc.transpose(1, 2)
    c2w[:, :3, 3] = -(rot_wc.transpose(1, 2) @ qt[:, 4:, None]).squeeze(-1)

    rows = []
    for line in _data_lines(folder / "points3D.txt"):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) < 8:
            raise ValueError(f"{folder / 'points3D.txt'}: malformed line {line!r}")
        rows.append([float(v) for v in words[:8]])
    table = torch.tensor(rows, dtype=torch.float64).reshape(-1, 8)
    table = table[table[:, 0].argsort()]
    k = torch.tensor([cams[c][0] for *_, c, _ in images], dtype=torch.float64).view(-1, 3, 3)
    sizes = torch.tensor([cams[c][1:] for *_, c, _ in images], dtype=torch.int64).view(-1, 2)
    return ColmapModel(
        K=k,
        cam_to_world=c2w,
        image_sizes=sizes,
        image_names=[name for *_, name in images],
        image_ids=torch.tensor([item[0] for item in images], dtype=torch.int64),
        camera_ids=torch.tensor([item[2] for item in images], dtype=torch.int64),
        points=table[:, 1:4].contiguous(),
        colors=table[:, 4:7].round().to(torch.uint8),
        point_errors=table[:, 7].contiguous(),
        point_ids=table[:, 0].to(torch.int64),
    )
