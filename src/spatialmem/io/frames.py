"""Per-frame ``.npz`` archives of a reconstruction: pointmap, confidence, image and camera.

One file per frame, ``frame_0000.npz``, ``frame_0001.npz``, ..., that any tool reads with
``np.load``; [`save_frames_npz`][spatialmem.io.save_frames_npz] lists the keys.
"""

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spatialmem._checks import check_bool_mask, check_tensor
from spatialmem._typing import Bool, Float, Shaped
from spatialmem.io._common import images_to_uint8, resolve_cameras, to_numpy

__all__ = ["load_frames_npz", "save_frames_npz"]

_PATTERN = "frame_{:04d}.npz"


def save_frames_npz(
    directory: str | os.PathLike[str],
    pts3d: Float[Tensor, "T H W 3"],
    conf: Float[Tensor, "T H W"],
    images: Shaped[Tensor, "T 3 H W"],
    K: Float[Tensor, "T 3 3"] | Float[Tensor, "3 3"] | None = None,  # noqa: N803
    cam_to_world: Float[Tensor, "T 4 4"] | None = None,
    *,
    valid: Bool[Tensor, "T H W"] | None = None,
    cameras: object | None = None,
    camera_index: int = 0,
    compress: bool = False,
) -> list[Path]:
    """Write one ``frame_XXXX.npz`` per frame (``frame_0000.npz``, ``frame_0001.npz``, ...).

    Each file holds these numpy arrays:

    | key | shape | dtype | meaning |
    | --- | --- | --- | --- |
    | ``pts3d`` | ``(H, W, 3)`` | float32 | world point of every pixel |
    | ``conf`` | ``(H, W)`` | float32 | confidence of every point |
    | ``image`` | ``(H, W, 3)`` | uint8 | RGB colour of every pixel |
    | ``K`` | ``(3, 3)`` | float32 | pinhole intrinsics (pixel centres at ``+0.5``) |
    | ``cam_to_world`` | ``(4, 4)`` | float32 | camera-to-world pose, OpenCV axes |
    | ``frame_index`` | ``()`` | int64 | position of the frame in the sequence |
    | ``valid`` | ``(H, W)`` | bool | only when ``valid`` is given |

    OpenCV axes: x right, y down, z forward.

    Args:
        directory: output folder (created).
        pts3d: ``[T, H, W, 3]`` world points of every pixel.
        conf: ``[T, H, W]`` confidence.
        images: ``[T, 3, H, W]`` frames, float in [-1, 1] or uint8.
        K: ``[T, 3, 3]`` intrinsics, or one ``[3, 3]`` shared by every frame.
        cam_to_world: ``[T, 4, 4]`` camera-to-world poses (OpenCV axes).
        valid: ``[T, H, W]`` optional validity mask, stored as ``valid``.
        cameras: instead of ``K`` and ``cam_to_world``, an object with ``K [B, T, 3, 3]``,
            ``cam_to_world [B, T, 4, 4]`` and ``image_size`` attributes (such as
            ``spatialmem.geometry.cameras.Cameras``).
        camera_index: the batch element of ``cameras`` to write.
        compress: write with ``np.savez_compressed`` (smaller, slower).

    Returns:
        The files written, in frame order (``frame_*.npz`` files already in the folder are
        removed first, so the folder holds exactly this sequence).

    Raises:
        ValueError: tensors of inconsistent shapes (the message names the argument).
        TypeError: a tensor of the wrong dtype.
    """
    pts3d = check_tensor("pts3d", pts3d, ndim=4, floating=True, dims={-1: 3}, expected="T H W 3")
    t, h, w = pts3d.shape[:3]
    check_tensor("conf", conf, ndim=3, floating=True, dims={0: t, 1: h, 2: w},
                 expected=f"T H W = {t} {h} {w}")  # fmt: skip
    check_tensor("images", images, ndim=4, dims={0: t, 1: 3, 2: h, 3: w},
                 expected=f"T 3 H W = {t} 3 {h} {w}")  # fmt: skip
    if valid is not None:
        check_bool_mask("valid", valid, (t, h, w), f"T H W = {t} {h} {w}")
    k, c2w, _ = resolve_cameras(K, cam_to_world, None, cameras, camera_index, num_frames=t)
    rgb = images_to_uint8(images)
    pts, cf = to_numpy(pts3d.float()), to_numpy(conf.float())
    ks, poses = k.float().numpy(), c2w.float().numpy()
    mask = None if valid is None else to_numpy(valid)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("frame_*.npz"):  # a shorter sequence must not inherit old frames
        stale.unlink()
    save = np.savez_compressed if compress else np.savez
    written = []
    for i in range(t):
        arrays = {
            "pts3d": pts[i], "conf": cf[i], "image": rgb[i], "K": ks[i],
            "cam_to_world": poses[i], "frame_index": np.int64(i),
        }  # fmt: skip
        if mask is not None:
            arrays["valid"] = mask[i]
        path = out / _PATTERN.format(i)
        save(path, **arrays)
        written.append(path)
    return written


def load_frames_npz(directory: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read the ``frame_*.npz`` files of a folder back, stacked along the frame axis.

    Args:
        directory: the folder written by [`save_frames_npz`][spatialmem.io.save_frames_npz].

    Returns:
        A dict of tensors: ``pts3d [T, H, W, 3]`` float32, ``conf [T, H, W]`` float32,
        ``images [T, 3, H, W]`` uint8, ``K [T, 3, 3]``, ``cam_to_world [T, 4, 4]`` (float32),
        ``frame_index [T]`` int64 and, when the files hold it, ``valid [T, H, W]`` bool. Frames
        are in ``frame_index`` order.

    Raises:
        FileNotFoundError: no ``frame_*.npz`` in ``directory``.
        ValueError: a file lacks a key or the frames differ in size.
    """
    folder = Path(directory)
    paths = sorted(folder.glob("frame_*.npz"))
    if not paths:
        raise FileNotFoundError(f"no frame_*.npz files in {folder}")
    required = ("pts3d", "conf", "image", "K", "cam_to_world")
    frames: list[dict[str, np.ndarray]] = []
    for path in paths:
        with np.load(path) as data:
            missing = [key for key in required if key not in data]
            if missing:
                raise ValueError(f"{path} has no {', '.join(missing)}")
            frames.append({key: data[key] for key in data.files})
    frames.sort(key=lambda f: int(f.get("frame_index", -1)))
    keys = {"pts3d": "pts3d", "conf": "conf", "image": "images", "K": "K",
            "cam_to_world": "cam_to_world"}  # fmt: skip
    if all("valid" in f for f in frames):
        keys["valid"] = "valid"
    out: dict[str, Tensor] = {}
    for key, name in keys.items():
        shapes = {f[key].shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"the frames in {folder} differ in `{key}` shape: {sorted(shapes)}")
        out[name] = torch.from_numpy(np.stack([f[key] for f in frames]))
    out["images"] = out["images"].permute(0, 3, 1, 2).contiguous()
    out["frame_index"] = torch.tensor(
        [int(f.get("frame_index", i)) for i, f in enumerate(frames)], dtype=torch.int64
    )
    return out
