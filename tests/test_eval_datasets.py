"""Dataset readers on small folders written in each dataset's on-disk layout."""

from pathlib import Path

import numpy as np
import pytest
import torch

from spatialmem.data.eval_datasets import (
    load_dtu,
    load_nrgbd,
    load_sequence,
    load_seven_scenes,
    read_pfm,
    resize_and_crop,
)
from spatialmem.data.scenes import synthetic_clip
from spatialmem.geometry import invert_rigid, project, transform_points

Image = pytest.importorskip("PIL.Image")


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _rgb_u8(images: torch.Tensor) -> np.ndarray:  # [3, H, W] in [-1, 1] -> [H, W, 3] uint8
    return ((images.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()


def _write_pfm(path: Path, depth: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = depth.shape
    with open(path, "wb") as f:
        f.write(f"Pf\n{w} {h}\n-1.0\n".encode())
        f.write(np.flipud(depth).astype("<f4").tobytes())


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(num_frames=3, height=48, width=48, seed=5)


def test_seven_scenes_plane_known_answer(tmp_path: Path) -> None:
    seq = tmp_path / "chess" / "seq-01"
    depth_mm = np.full((480, 640), 2000, dtype=np.uint16)
    depth_mm[:10, :10] = 65535  # invalid
    pose = np.eye(4, dtype=np.float32)
    pose[:3, 3] = [0.5, -0.2, 1.0]
    for i in range(4):
        _png(seq / f"frame-{i:06d}.color.png", np.full((480, 640, 3), 60 * i, dtype=np.uint8))
        _png(seq / f"frame-{i:06d}.depth.png", depth_mm)
        np.savetxt(seq / f"frame-{i:06d}.pose.txt", pose)
    out = load_seven_scenes(tmp_path, "chess", "seq-01", stride=2, size=32)
    assert out.num_frames == 2 and out.frame_ids == ["frame-000000", "frame-000002"]
    assert out.images.shape == (2, 3, 32, 32) and out.pts3d.shape == (2, 32, 32, 3)
    cam = transform_points(invert_rigid(out.camera_pose), out.pts3d)
    torch.testing.assert_close(cam[..., 2][out.valid], torch.full_like(cam[..., 2][out.valid], 2.0))
    # Resize 480 -> 32 (scale 1/15) then a centre crop of 32 of the 43 columns: K follows.
    k = out.intrinsics[0]
    torch.testing.assert_close(k[0, 0], torch.tensor(585.0 / 15), rtol=2e-2, atol=0)
    assert abs(float(k[0, 2]) - 16.0) < 0.6 and abs(float(k[1, 2]) - 16.0) < 0.6
    assert out.valid.float().mean() > 0.95
    assert (out.images[1] > out.images[0]).all()  # frame 2 is brighter than frame 0


def test_nrgbd_recovers_the_synthetic_scene(tmp_path: Path, clip) -> None:
    scene = tmp_path / "kitchen"
    depth = clip.depth()
    focal = float(clip.intrinsics[0, 0])
    poses = []
    for i in range(clip.num_frames):
        _png(scene / "images" / f"img{i}.png", _rgb_u8(clip.images[i]))
        mm = (depth[i] * 1000).round().clamp(0, 65534).numpy().astype(np.uint16)
        _png(scene / "depth" / f"depth{i}.png", mm)
        gl = clip.camera_pose[i] @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
        poses.append(gl.numpy())
    np.savetxt(scene / "poses.txt", np.concatenate(poses))
    np.savetxt(scene / "focal.txt", [focal])
    out = load_nrgbd(tmp_path, "kitchen", stride=1, size=48)
    valid = out.valid & clip.valid
    assert valid.float().mean() > 0.8
    err = (out.pts3d - clip.pts3d).norm(dim=-1)[valid]
    assert float(err.max()) < 5e-3  # millimetre quantisation of the depth
    torch.testing.assert_close(out.camera_pose, clip.camera_pose)


def test_dtu_with_masks_and_pfm_depth(tmp_path: Path, clip) -> None:
    scan = tmp_path / "scan1"
    depth = clip.depth()
    for i in range(clip.num_frames):
        stem = f"{i:08d}"
        _png(scan / "images" / f"{stem}.png", _rgb_u8(clip.images[i]))
        _write_pfm(scan / "depths" / f"{stem}.pfm", depth[i].numpy())
        mask = np.full((48, 48), 255, dtype=np.uint8)
        mask[:, :8] = 0
        _png(scan / "masks" / f"{stem}.png", mask)
        w2c = torch.linalg.inv(clip.camera_pose[i]).numpy()
        k = clip.intrinsics.numpy()
        text = "extrinsic\n" + "\n".join(" ".join(f"{v:.9f}" for v in r) for r in w2c)
        text += "\n\nintrinsic\n" + "\n".join(" ".join(f"{v:.9f}" for v in r) for r in k)
        text += "\n\n425 2.5\n"
        (scan / "cams").mkdir(exist_ok=True)
        (scan / "cams" / f"{stem}_cam.txt").write_text(text)
    out = load_sequence("DTU", tmp_path, "scan1", size=48)
    assert not out.valid[:, :, :8].any()
    valid = out.valid & clip.valid
    err = (out.pts3d - clip.pts3d).norm(dim=-1)[valid]
    assert float(err.max()) < 1e-3
    uv, z = project(out.pts3d.flatten(1, 2), out.intrinsics, out.camera_pose)
    assert (z[valid.flatten(1)] > 0).all()
    grid = torch.cartesian_prod(torch.arange(48.0), torch.arange(48.0))[:, [1, 0]] + 0.5
    err_px = (uv - grid)[valid.flatten(1)].norm(dim=-1)
    assert float(err_px.max()) < 1e-2


def test_resize_and_crop_keeps_rays(tmp_path: Path) -> None:
    # A pixel of the output sees the same ray as the input location it was resampled from.
    k = torch.tensor([[100.0, 0.0, 40.0], [0.0, 100.0, 30.0], [0.0, 0.0, 1.0]])
    depth = torch.ones(60, 80)
    _, out_depth, k2 = resize_and_crop(None, depth, k, 30)
    assert out_depth.shape == (30, 30)
    # Output pixel centre (15, 15) is input (15 + 5, 15) * 2 (scale 2, 5 columns cropped).
    ray_out = torch.linalg.solve(k2, torch.tensor([15.0, 15.0, 1.0]))
    ray_in = torch.linalg.solve(k, torch.tensor([40.0, 30.0, 1.0]))
    torch.testing.assert_close(ray_out, ray_in)


def test_readers_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="scene folder"):
        load_nrgbd(tmp_path, "missing")
    (tmp_path / "empty" / "seq-01").mkdir(parents=True)
    with pytest.raises(ValueError, match="no frame"):
        load_seven_scenes(tmp_path, "empty")
    with pytest.raises(ValueError, match="stride"):
        load_dtu(tmp_path, "empty", stride=0)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_sequence("scannet", tmp_path, "x")
    bad = tmp_path / "bad.pfm"
    bad.write_bytes(b"PF\n1 1\n-1\n" + b"\0" * 12)
    with pytest.raises(ValueError, match="single-channel PFM"):
        read_pfm(bad)
