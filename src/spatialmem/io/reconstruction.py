"""Every export of a reconstructed sequence in one folder (what ``spatialmem reconstruct``
writes)."""

import os
from pathlib import Path

import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float, Shaped
from spatialmem.io._common import images_to_uint8, resolve_cameras
from spatialmem.io.colmap import write_colmap_text
from spatialmem.io.frames import save_frames_npz
from spatialmem.io.nerfstudio import write_nerfstudio
from spatialmem.io.ply import write_ply

__all__ = ["write_reconstruction"]


def write_reconstruction(
    out_dir: str | os.PathLike[str],
    *,
    pts3d: Float[Tensor, "T H W 3"],
    conf: Float[Tensor, "T H W"],
    images: Shaped[Tensor, "T 3 H W"],
    K: Float[Tensor, "T 3 3"] | Float[Tensor, "3 3"] | None = None,  # noqa: N803
    cam_to_world: Float[Tensor, "T 4 4"] | None = None,
    conf_threshold: float | None = None,
    max_points: int | None = None,
    cameras: object | None = None,
    camera_index: int = 0,
) -> dict[str, Path]:
    """Write the point cloud, per-frame archives, Nerfstudio and COLMAP files of a sequence.

    The folder gets:

    ```text
    out_dir/
      scene.ply                 points, colours, confidence          (write_ply)
      frames/frame_0000.npz ... every pixel, with `valid`          (save_frames_npz)
      transforms.json           Nerfstudio cameras, ply_file_path -> scene.ply
      images/frame_00000.png... the frames                         (write_nerfstudio)
      colmap/cameras.txt, images.txt, points3D.txt                 (write_colmap_text)
    ```

    The point clouds (``scene.ply``, ``points3D.txt``) hold the finite points with
    ``conf >= conf_threshold``, at most ``max_points`` of them (a deterministic random subset,
    kept in pixel order); the ``.npz`` files hold every pixel with that selection as ``valid``
    (before the ``max_points`` subsampling).

    Args:
        out_dir: output folder (created).
        pts3d: ``[T, H, W, 3]`` world points of every pixel.
        conf: ``[T, H, W]`` confidence.
        images: ``[T, 3, H, W]`` frames, float in [-1, 1] or uint8.
        K: ``[T, 3, 3]`` intrinsics, or one ``[3, 3]`` shared by every frame.
        cam_to_world: ``[T, 4, 4]`` camera-to-world poses, OpenCV axes (x right, y down,
            z forward).
        conf_threshold: lowest confidence kept in the point clouds; ``None`` keeps all.
        max_points: cap on the points of the clouds; ``None`` keeps all.
        cameras: instead of ``K`` and ``cam_to_world``, an object with ``K [B, T, 3, 3]``,
            ``cam_to_world [B, T, 4, 4]`` and ``image_size`` attributes (such as
            ``spatialmem.geometry.cameras.Cameras``).
        camera_index: the batch element of ``cameras`` to write.

    Returns:
        The paths written: ``"ply"`` (file), ``"frames"`` (folder), ``"transforms"`` (file),
        ``"images"`` (folder) and ``"colmap"`` (folder).

    Raises:
        ValueError: inconsistent shapes (the message names the argument) or ``max_points < 1``.
        TypeError: a tensor of the wrong dtype.

    Example:
        ```python
        import tempfile
        from spatialmem.data.scenes import synthetic_clip
        from spatialmem.io import read_colmap_text, write_reconstruction

        clip = synthetic_clip(num_frames=3, height=32, width=48, seed=0)
        written = write_reconstruction(
            tempfile.mkdtemp(), pts3d=clip.pts3d, conf=clip.valid.float() + 1,
            images=clip.images, K=clip.intrinsics, cam_to_world=clip.camera_pose,
            conf_threshold=1.5, max_points=2000,
        )
        model = read_colmap_text(written["colmap"])
        model.points.shape                     # torch.Size([2000, 3])
        ```
    """
    pts3d = check_tensor("pts3d", pts3d, ndim=4, floating=True, dims={-1: 3}, expected="T H W 3")
    t, h, w = pts3d.shape[:3]
    check_tensor("conf", conf, ndim=3, floating=True, dims={0: t, 1: h, 2: w},
                 expected=f"T H W = {t} {h} {w}")  # fmt: skip
    check_tensor("images", images, ndim=4, dims={0: t, 1: 3, 2: h, 3: w},
                 expected=f"T 3 H W = {t} 3 {h} {w}")  # fmt: skip
    if max_points is not None and max_points < 1:
        raise ValueError(f"`max_points` must be >= 1 or None, got {max_points}")
    k, c2w, _ = resolve_cameras(K, cam_to_world, (h, w), cameras, camera_index, num_frames=t)
    pts3d, conf = pts3d.detach().cpu(), conf.detach().cpu()
    valid = torch.isfinite(pts3d).all(-1)
    if conf_threshold is not None:
        valid &= conf >= conf_threshold
    index = valid.reshape(-1).nonzero().squeeze(1)
    if max_points is not None and index.numel() > max_points:
        generator = torch.Generator().manual_seed(0)
        pick = torch.randperm(index.numel(), generator=generator)[:max_points]
        index = index[pick.sort().values]
    points = pts3d.reshape(-1, 3)[index].float()
    rgb = torch.from_numpy(images_to_uint8(images)).reshape(-1, 3)[index]
    point_conf = conf.reshape(-1)[index].float()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ply = write_ply(out / "scene.ply", points, rgb, point_conf)
    save_frames_npz(out / "frames", pts3d, conf, images, k, c2w, valid=valid)
    transforms = write_nerfstudio(out, images, k, c2w, (h, w), ply_file_path=ply)
    # image names default to write_nerfstudio's images/frame_00000.png, ...
    write_colmap_text(out / "colmap", k, c2w, (h, w), None, points.double(), rgb)
    return {
        "ply": ply,
        "frames": out / "frames",
        "transforms": transforms,
        "images": out / "images",
        "colmap": out / "colmap",
    }
