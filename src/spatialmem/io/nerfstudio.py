"""Cameras and images in Nerfstudio's ``transforms.json`` layout (for splatfacto, nerfacto, ...).

Nerfstudio stores camera-to-world matrices with OpenGL camera axes (x right, y up, z back, the
camera looks along ``-z``), while spatialmem uses OpenCV axes (x right, y down, z forward). The
two differ by flipping the camera's y and z axes, i.e. by the right-multiplication
``cam_to_world_gl = cam_to_world_cv @ diag(1, -1, -1, 1)`` (its own inverse); the world frame is
unchanged. Intrinsics need no change: Nerfstudio, like spatialmem, puts pixel centres at
``+0.5`` and measures ``cx, cy`` from the image corner.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float, Int, Shaped
from spatialmem.io._common import images_to_uint8, resolve_cameras, write_png
from spatialmem.io.ply import write_ply

__all__ = ["NerfstudioScene", "read_nerfstudio", "write_nerfstudio"]

_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
_UNSUPPORTED_MODELS = ("OPENCV_FISHEYE", "EQUIRECTANGULAR", "FISHEYE624", "OMNIDIRECTIONALSTEREO")


@dataclass(eq=False)
class NerfstudioScene:
    """Cameras read by [`read_nerfstudio`][spatialmem.io.read_nerfstudio]."""

    K: Float[Tensor, "T 3 3"]
    """Pinhole intrinsics of every frame (float32)."""
    cam_to_world: Float[Tensor, "T 4 4"]
    """Camera-to-world poses with OpenCV camera axes (converted from the file's OpenGL axes)."""
    image_sizes: Int[Tensor, "T 2"]
    """``(H, W)`` of every frame."""
    image_paths: list[Path]
    """The image file of every frame (``file_path`` resolved against the folder)."""
    ply_path: Path | None = None
    """The point cloud named by ``ply_file_path``, ``None`` without one."""

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` shared by every frame.

        Raises:
            ValueError: the frames differ in size.
        """
        sizes = {tuple(s) for s in self.image_sizes.tolist()}
        if len(sizes) != 1:
            raise ValueError(f"the frames differ in size: {sorted(sizes)}")
        h, w = sizes.pop()
        return int(h), int(w)


def write_nerfstudio(
    directory: str | os.PathLike[str],
    images: Shaped[Tensor, "T 3 H W"],
    K: Float[Tensor, "T 3 3"] | Float[Tensor, "3 3"] | None = None,  # noqa: N803
    cam_to_world: Float[Tensor, "T 4 4"] | None = None,
    image_size: Sequence[int] | None = None,
    *,
    points: Float[Tensor, "N 3"] | None = None,
    colors: Shaped[Tensor, "N 3"] | None = None,
    ply_name: str = "sparse_pc.ply",
    ply_file_path: str | os.PathLike[str] | None = None,
    cameras: object | None = None,
    camera_index: int = 0,
) -> Path:
    """Write ``transforms.json`` and the frames as ``images/frame_00000.png``, ... .

    Every frame of ``transforms.json`` has ``file_path``, ``transform_matrix`` (camera-to-world,
    OpenGL camera axes: the OpenCV pose times ``diag(1, -1, -1, 1)``), ``fl_x``, ``fl_y``,
    ``cx``, ``cy``, ``w`` and ``h``; the file also says ``"camera_model": "OPENCV"`` (no
    distortion) and, with a point cloud, ``ply_file_path`` (the initialisation of splatfacto).

    Args:
        directory: output folder (created).
        images: ``[T, 3, H, W]`` frames, float in [-1, 1] or uint8.
        K: ``[T, 3, 3]`` intrinsics, or one ``[3, 3]`` shared by every frame.
        cam_to_world: ``[T, 4, 4]`` camera-to-world poses with OpenCV axes (x right, y down,
            z forward).
        image_size: ``(H, W)``; optional, must match ``images`` when given.
        points: ``[N, 3]`` world points written as ``ply_name`` and named by ``ply_file_path``
            in the json.
        colors: ``[N, 3]`` colours of ``points``, float in [0, 1] or uint8.
        ply_name: file name of the written point cloud.
        ply_file_path: instead of ``points``, an existing PLY file to name in the json (stored
            relative to ``directory`` when it lies inside it).
        cameras: instead of ``K`` and ``cam_to_world``, an object with ``K [B, T, 3, 3]``,
            ``cam_to_world [B, T, 4, 4]`` and ``image_size`` attributes (such as
            ``spatialmem.geometry.cameras.Cameras``).
        camera_index: the batch element of ``cameras`` to write.

    Returns:
        The path of ``transforms.json``.

    Raises:
        ValueError: inconsistent shapes or sizes (the message names the argument), or both
            ``points`` and ``ply_file_path``.
        TypeError: a tensor of the wrong dtype.
    """
    rgb = images_to_uint8(images)
    t, h, w = rgb.shape[:3]
    k, c2w, size = resolve_cameras(K, cam_to_world, image_size, cameras, camera_index, t)
    if size is not None and size != (h, w):
        raise ValueError(f"`image_size` {size} does not match the images' (H, W) = {(h, w)}")
    if points is not None and ply_file_path is not None:
        raise ValueError("give either `points` or `ply_file_path`, not both")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    gl = (c2w @ _FLIP_YZ).tolist()
    frames = []
    for i in range(t):
        name = f"images/frame_{i:05d}.png"
        write_png(out / name, rgb[i])
        frames.append({
            "file_path": name,
            "transform_matrix": gl[i],
            "fl_x": float(k[i, 0, 0]), "fl_y": float(k[i, 1, 1]),
            "cx": float(k[i, 0, 2]), "cy": float(k[i, 1, 2]),
            "w": w, "h": h,
        })  # fmt: skip
    meta: dict[str, object] = {"camera_model": "OPENCV", "frames": frames}
    if points is not None:
        check_tensor("points", points, ndim=2, floating=True, dims={1: 3}, expected="N 3")
        write_ply(out / ply_name, points, colors)
        meta["ply_file_path"] = ply_name
    elif ply_file_path is not None:
        ply = Path(ply_file_path)
        if not ply.is_absolute():
            ply = out / ply
        try:
            meta["ply_file_path"] = ply.resolve().relative_to(out.resolve()).as_posix()
        except ValueError:
            meta["ply_file_path"] = str(ply.resolve())
    path = out / "transforms.json"
    path.write_text(json.dumps(meta, indent=2))
    return path


def read_nerfstudio(directory: str | os.PathLike[str]) -> NerfstudioScene:
    """Read the cameras of a Nerfstudio ``transforms.json`` (pinhole models).

    Intrinsics are read per frame, falling back to the file's top-level ``fl_x``, ``fl_y``,
    ``cx``, ``cy``, ``w``, ``h``; a missing ``cx``/``cy`` is the image centre. Poses are
    converted to OpenCV camera axes. Distortion coefficients are not returned.

    Args:
        directory: the folder holding ``transforms.json`` (or the json file itself).

    Returns:
        The [`NerfstudioScene`][spatialmem.io.NerfstudioScene].

    Raises:
        FileNotFoundError: no ``transforms.json``.
        ValueError: a frame lacks its pose, focal length or size, or the camera model is not a
            pinhole model.
    """
    path = Path(directory)
    if path.is_dir():
        path = path / "transforms.json"
    if not path.is_file():
        raise FileNotFoundError(f"no transforms.json at {path}")
    meta = json.loads(path.read_text())
    model = meta.get("camera_model", "OPENCV")
    if model in _UNSUPPORTED_MODELS:
        raise ValueError(f"{path}: camera_model {model!r} is not a pinhole model")
    frames = meta.get("frames")
    if not frames:
        raise ValueError(f"{path} has no frames")
    ks, poses, sizes, paths = [], [], [], []
    for i, frame in enumerate(frames):

        def get(key: str, frame: dict = frame, i: int = i) -> float:
            value = frame.get(key, meta.get(key))
            if value is None:
                raise ValueError(f"{path}: frame {i} has no `{key}` (nor does the file)")
            return float(value)

        h, w = get("h"), get("w")
        fx, fy = get("fl_x"), get("fl_y")
        cx = float(frame.get("cx", meta.get("cx", w / 2)))
        cy = float(frame.get("cy", meta.get("cy", h / 2)))
        ks.append([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        if "transform_matrix" not in frame or "file_path" not in frame:
            raise ValueError(f"{path}: frame {i} lacks `transform_matrix` or `file_path`")
        pose = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
        if pose.shape == (3, 4):
            pose = torch.cat([pose, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=pose.dtype)])
        if pose.shape != (4, 4):
            raise ValueError(f"{path}: frame {i} transform_matrix has shape {tuple(pose.shape)}")
        poses.append(pose @ _FLIP_YZ)
        sizes.append([int(h), int(w)])
        paths.append(path.parent / frame["file_path"])
    ply = meta.get("ply_file_path")
    return NerfstudioScene(
        K=torch.tensor(ks, dtype=torch.float32),
        cam_to_world=torch.stack(poses).float(),
        image_sizes=torch.tensor(sizes, dtype=torch.int64),
        image_paths=paths,
        ply_path=None if ply is None else path.parent / ply,
    )
