"""Readers for the paper's evaluation datasets: 7-Scenes, NRGBD and DTU (paper Sec. 4).

Each reader turns one scene folder, in the layout the dataset is distributed in, into an
[EvalSequence][spatialmem.data.eval_datasets.EvalSequence]: model-ready frames plus the ground
truth the metrics need (the back-projected depth of every pixel, its validity, the cameras).

Protocol (paper Sec. 4, "Metrics"): the predicted pointmap is compared with the back-projected
per-pixel depth, invalid pixels excluded; inputs are made ``size x size`` (224 for the published
model) by resizing the short side to ``size`` and cropping the centre. Depth maps follow the same
resize (nearest neighbour, so no depth is invented across edges) and crop; the intrinsics are
scaled and shifted to match. ``stride`` keeps every ``stride``-th frame (the paper does not state
the stride; 20 is a common choice for 7-Scenes and NRGBD at this frame rate, and all DTU views
are kept by default).

Layouts read (as distributed; only the files listed are touched):

- **7-Scenes**: ``<scene>/<seq-XX>/frame-NNNNNN.color.png``, ``frame-NNNNNN.depth.png`` (uint16
  millimetres, 65535 invalid), ``frame-NNNNNN.pose.txt`` (4x4 camera-to-world); the depth
  camera's intrinsics (focal 585, principal point (320, 240) at 640x480).
- **NRGBD**: ``<scene>/images/img{i}.png``, ``depth/depth{i}.png`` (uint16 millimetres),
  ``poses.txt`` (one 4x4 camera-to-world per frame, OpenGL axes), ``focal.txt``.
- **DTU** (MVSNet test layout): ``<scan>/images/NNNNNNNN.{jpg,png}``, ``depths/NNNNNNNN.pfm``
  (float, millimetres), optional ``masks/NNNNNNNN.png``, ``cams/NNNNNNNN_cam.txt``
  (world-to-camera ``extrinsic`` and ``intrinsic``).

Reading PNG/JPEG files needs Pillow (installed with the ``eval`` extra, through matplotlib).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spatialmem._typing import Bool, Float
from spatialmem.data.synthetic import to_model_range
from spatialmem.geometry import depth_to_points
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = [
    "EvalSequence",
    "load_dtu",
    "load_nrgbd",
    "load_sequence",
    "load_seven_scenes",
    "read_pfm",
    "resize_and_crop",
]

_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass(eq=False)
class EvalSequence(TensorDataclass):
    """One evaluation sequence: model input and ground truth, frames in capture order."""

    images: Float[Tensor, "T 3 H W"]
    """Frames in [-1, 1] (the models' input range)."""
    pts3d: Float[Tensor, "T H W 3"]
    """Ground-truth world point of every pixel (back-projected depth)."""
    valid: Bool[Tensor, "T H W"]
    """Pixels with ground truth (finite, positive depth inside the mask)."""
    intrinsics: Float[Tensor, "T 3 3"]
    """Pinhole ``K`` of every frame, after resizing and cropping."""
    camera_pose: Float[Tensor, "T 4 4"]
    """Camera-to-world pose of every frame (OpenCV axes)."""
    frame_ids: list[str]
    """File stem of every frame (for reports)."""
    name: str
    """``"<dataset>/<scene>"``."""

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return self.images.shape[0]


def _pil_image(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow comes with the eval extra
        raise ImportError(
            "reading dataset images needs Pillow: pip install 'spatialmem[eval]'"
        ) from err
    try:
        with Image.open(path) as img:
            return np.array(img)
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def read_pfm(path: str | Path) -> Float[Tensor, "H W"]:
    """Read a single-channel PFM file (the depth format of the MVSNet DTU layout).

    Raises:
        ValueError: not a single-channel PFM file.
    """
    with open(path, "rb") as f:
        header = f.readline().decode("latin-1").strip()
        if header != "Pf":
            raise ValueError(f"{path} is not a single-channel PFM file (header {header!r})")
        dims = f.readline().decode("latin-1").split()
        width, height = int(dims[0]), int(dims[1])
        scale = float(f.readline().decode("latin-1").strip())
        dtype = "<f4" if scale < 0 else ">f4"
        data = np.frombuffer(f.read(width * height * 4), dtype=dtype)
    if data.size != width * height:
        raise ValueError(f"{path} is truncated: {data.size} of {width * height} values")
    return torch.from_numpy(np.flipud(data.reshape(height, width)).astype(np.float32).copy())


def resize_and_crop(
    image: Float[Tensor, "3 H W"] | None,
    depth: Float[Tensor, "H W"],
    intrinsics: Float[Tensor, "3 3"],
    size: int,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """Resize the short side to ``size`` and crop the centre ``size x size`` (paper Sec. 4).

    The image is resized bilinearly (antialiased), the depth with nearest neighbour; ``K`` is
    scaled and shifted to match. ``image`` may have another resolution than ``depth`` (7-Scenes
    colour and depth are both 640x480; if they differ the image is resized to the depth's size
    first).

    Returns:
        ``(image [3, size, size] or None, depth [size, size], K [3, 3])``.
    """
    h, w = depth.shape
    if image is not None and tuple(image.shape[-2:]) != (h, w):
        image = F.interpolate(image[None], size=(h, w), mode="bilinear", antialias=True)[0]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    depth = F.interpolate(depth[None, None], size=(nh, nw), mode="nearest")[0, 0]
    if image is not None:
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    depth = depth[top : top + size, left : left + size]
    if image is not None:
        image = image[:, top : top + size, left : left + size]
    k = intrinsics.clone()
    k[0, :] *= nw / w
    k[1, :] *= nh / h
    k[0, 2] -= left
    k[1, 2] -= top
    return image, depth, k


def _assemble(
    name: str,
    ids: Sequence[str],
    images: list[Tensor],
    depths: list[Tensor],
    intrinsics: list[Tensor],
    poses: list[Tensor],
    masks: list[Tensor] | None,
    size: int,
) -> EvalSequence:
    if not ids:
        raise ValueError(f"{name}: no frame found")
    out_img, out_depth, out_k = [], [], []
    for i, (img, depth, k) in enumerate(zip(images, depths, intrinsics, strict=True)):
        if masks is not None:
            depth = torch.where(masks[i], depth, torch.zeros_like(depth))
        img_r, depth_r, k_r = resize_and_crop(img, depth, k, size)
        assert img_r is not None
        out_img.append(img_r)
        out_depth.append(depth_r)
        out_k.append(k_r)
    depth = torch.stack(out_depth)
    k = torch.stack(out_k)
    pose = torch.stack(poses).float()
    valid = (
        torch.isfinite(depth) & (depth > 0) & torch.isfinite(pose).all(dim=(-2, -1))[:, None, None]
    )
    pts = depth_to_points(
        torch.where(valid, depth, torch.ones_like(depth)), k, torch.nan_to_num(pose)
    )
    return EvalSequence(
        images=torch.stack(out_img).clamp(-1.0, 1.0),
        pts3d=pts,
        valid=valid,
        intrinsics=k,
        camera_pose=pose,
        frame_ids=list(ids),
        name=name,
    )


def _rgb(path: Path) -> Tensor:
    arr = _pil_image(path)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return to_model_range(torch.from_numpy(np.ascontiguousarray(arr[..., :3])))


def _depth_png(path: Path, invalid: int | None) -> Tensor:
    arr = _pil_image(path).astype(np.float32)
    depth = torch.from_numpy(arr)
    if invalid is not None:
        depth = torch.where(depth == invalid, torch.zeros_like(depth), depth)
    return depth / 1000.0  # millimetres -> metres


def _check_stride(stride: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"`stride` must be a positive int, got {stride!r}")


def _scene_dir(root: str | Path, scene: str) -> Path:
    path = Path(root) / scene
    if not path.is_dir():
        raise FileNotFoundError(f"scene folder {path} does not exist")
    return path


def load_seven_scenes(
    root: str | Path,
    scene: str,
    sequence: str = "seq-01",
    *,
    stride: int = 20,
    size: int = 224,
    max_frames: int | None = None,
) -> EvalSequence:
    """One 7-Scenes sequence (``<root>/<scene>/<sequence>/frame-*.{color,depth}.png``, poses).

    Depth is in millimetres (65535 invalid); the depth camera's intrinsics (focal 585, principal
    point (320, 240) at 640x480) are used for colour and depth, as is common practice.

    Args:
        root: folder holding the scene folders (e.g. ``chess``, ``office``).
        scene: scene name.
        sequence: sequence folder, e.g. ``seq-01``.
        stride: keep every ``stride``-th frame.
        size: output side (square frames).
        max_frames: keep at most this many frames (after the stride).
    """
    _check_stride(stride)
    folder = _scene_dir(root, scene) / sequence
    colour = sorted(folder.glob("frame-*.color.png"))[::stride][:max_frames]
    ids = [p.name.split(".")[0] for p in colour]
    k = torch.tensor([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
    images, depths, poses = [], [], []
    for p, frame in zip(colour, ids, strict=True):
        images.append(_rgb(p))
        depths.append(_depth_png(folder / f"{frame}.depth.png", invalid=65535))
        poses.append(torch.from_numpy(np.loadtxt(folder / f"{frame}.pose.txt", dtype=np.float32)))
    intr = [k] * len(ids)
    return _assemble(f"7scenes/{scene}/{sequence}", ids, images, depths, intr, poses, None, size)


def load_nrgbd(
    root: str | Path,
    scene: str,
    *,
    stride: int = 20,
    size: int = 224,
    max_frames: int | None = None,
) -> EvalSequence:
    """One NRGBD scene (``images/img{i}.png``, ``depth/depth{i}.png``, ``poses.txt``,
    ``focal.txt``).

    ``poses.txt`` holds one 4x4 camera-to-world matrix per frame in OpenGL axes (x right, y up,
    z backwards), converted here to OpenCV axes; frames whose pose is not finite (the dataset
    marks lost tracking with NaN) get no valid pixel.
    """
    _check_stride(stride)
    folder = _scene_dir(root, scene)
    poses_all = np.loadtxt(folder / "poses.txt", dtype=np.float32).reshape(-1, 4, 4)
    focal = float(np.loadtxt(folder / "focal.txt"))
    index = list(range(len(poses_all)))[::stride][:max_frames]
    images, depths, poses, intr, ids = [], [], [], [], []
    for i in index:
        img = _rgb(folder / "images" / f"img{i}.png")
        depth = _depth_png(folder / "depth" / f"depth{i}.png", invalid=None)
        h, w = depth.shape
        intr.append(torch.tensor([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]]))
        images.append(img)
        depths.append(depth)
        poses.append(torch.from_numpy(poses_all[i]) @ _OPENGL_TO_OPENCV)
        ids.append(f"img{i}")
    return _assemble(f"nrgbd/{scene}", ids, images, depths, intr, poses, None, size)


def _read_mvsnet_cam(path: Path) -> tuple[Tensor, Tensor]:
    text = path.read_text().split()
    try:
        ext = text.index("extrinsic")
        intr = text.index("intrinsic")
        world_to_cam = torch.tensor([float(v) for v in text[ext + 1 : ext + 17]]).view(4, 4)
        k = torch.tensor([float(v) for v in text[intr + 1 : intr + 10]]).view(3, 3)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is not an MVSNet camera file: {err}") from err
    return k, torch.linalg.inv(world_to_cam)


def load_dtu(
    root: str | Path,
    scene: str,
    *,
    stride: int = 1,
    size: int = 224,
    max_frames: int | None = None,
    depth_scale: float = 1.0,
) -> EvalSequence:
    """One DTU scan in the MVSNet test layout (``images/``, ``cams/``, ``depths/``,
    optional ``masks/``).

    Args:
        root: folder holding the scans (``scan1``, ...).
        scene: scan folder name.
        stride: keep every ``stride``-th view.
        size: output side.
        max_frames: keep at most this many views.
        depth_scale: multiply depths and camera translations by this (DTU is in millimetres;
            ``1.0`` keeps them, as the paper's DTU table does).
    """
    _check_stride(stride)
    folder = _scene_dir(root, scene)
    views = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in {".jpg", ".png"})
    views = views[::stride][:max_frames]
    images, depths, poses, intr, masks, ids = [], [], [], [], [], []
    for p in views:
        stem = p.stem
        k, pose = _read_mvsnet_cam(folder / "cams" / f"{stem}_cam.txt")
        pose[:3, 3] *= depth_scale
        depth = read_pfm(folder / "depths" / f"{stem}.pfm") * depth_scale
        mask_path = folder / "masks" / f"{stem}.png"
        mask = torch.ones_like(depth, dtype=torch.bool)
        if mask_path.exists():
            m = torch.from_numpy(_pil_image(mask_path))
            mask = (m[..., 0] if m.ndim == 3 else m) > 127
        images.append(_rgb(p))
        depths.append(depth)
        poses.append(pose)
        intr.append(k)
        masks.append(mask)
        ids.append(stem)
    return _assemble(f"dtu/{scene}", ids, images, depths, intr, poses, masks, size)


_LOADERS = {"7scenes": load_seven_scenes, "nrgbd": load_nrgbd, "dtu": load_dtu}


def load_sequence(dataset: str, root: str | Path, scene: str, **kwargs: object) -> EvalSequence:
    """Dispatch to the reader of ``dataset`` (``"7scenes"``, ``"nrgbd"`` or ``"dtu"``).

    ``scene`` may be ``"<scene>/<sequence>"`` for 7-Scenes.
    """
    key = dataset.lower().replace("-", "").replace("_", "")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(_LOADERS)}")
    if key == "7scenes" and "/" in scene:
        scene, sequence = scene.split("/", 1)
        kwargs["sequence"] = sequence
    return _LOADERS[key](root, scene, **kwargs)  # type: ignore[operator]
