"""Exports and their readers: PLY, per-frame npz, Nerfstudio, COLMAP text, the whole folder."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spatialmem.data.scenes import synthetic_clip
from spatialmem.geometry.camera import pixel_grid, project
from spatialmem.io import (
    load_frames_npz,
    read_colmap_text,
    read_nerfstudio,
    read_ply,
    save_frames_npz,
    write_colmap_text,
    write_nerfstudio,
    write_ply,
    write_reconstruction,
)
from spatialmem.io._common import png_bytes
from spatialmem.io.colmap import _quaternion_to_rotation, _rotation_to_quaternion

torchvision_io = pytest.importorskip("torchvision.io")
# the tests decode PNGs with torchvision, whose image codecs announce their deprecation
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    return q * torch.sign(torch.linalg.det(q))[:, None, None]  # proper rotations


def _poses(n: int, seed: int = 0) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    pose[:, :3, :3] = _random_rotations(n, seed)
    pose[:, :3, 3] = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed + 1),
                                 dtype=torch.float64)  # fmt: skip
    return pose.float()


def _reprojection_error(
    pts3d: torch.Tensor, valid: torch.Tensor, k: torch.Tensor, c2w: torch.Tensor
) -> float:
    """Largest distance between the projection of each valid pixel's world point and the pixel
    centre, over every frame."""
    t, h, w = valid.shape
    grid = pixel_grid(h, w, dtype=torch.float64)
    worst = 0.0
    for i in range(t):
        uv, z = project(pts3d[i][valid[i]][None].double(), k[i : i + 1].double(),
                        c2w[i : i + 1].double())  # fmt: skip
        assert bool((z > 0).all())
        worst = max(worst, float((uv[0] - grid[valid[i]]).norm(dim=-1).max()))
    return worst


# ----------------------------------------------------------------------------------------- PLY


def test_ply_round_trip_float_and_uint8_colours(tmp_path: Path) -> None:
    pts = torch.randn(50, 3)
    colours = torch.rand(50, 3)
    conf = torch.rand(50) * 3
    normals = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    labels = torch.randint(0, 255, (50,), dtype=torch.uint8)
    path = write_ply(
        tmp_path / "a.ply", pts, colours, conf,
        properties={"nx": normals[:, 0], "ny": normals[:, 1], "nz": normals[:, 2], "label": labels},
    )  # fmt: skip
    cloud = read_ply(path)
    assert len(cloud) == 50
    torch.testing.assert_close(cloud.points, pts)
    assert cloud.colors is not None and cloud.colors.dtype == torch.uint8
    torch.testing.assert_close(cloud.colors, (colours * 255).round().to(torch.uint8))
    assert cloud.confidence is not None
    torch.testing.assert_close(cloud.confidence, conf)
    assert list(cloud.properties) == ["nx", "ny", "nz", "label"]
    torch.testing.assert_close(cloud.properties["ny"], normals[:, 1])
    torch.testing.assert_close(cloud.properties["label"], labels)

    rgb8 = torch.randint(0, 256, (50, 3), dtype=torch.uint8)
    cloud = read_ply(write_ply(tmp_path / "b.ply", pts, rgb8))
    torch.testing.assert_close(cloud.colors, rgb8)
    assert cloud.confidence is None and cloud.properties == {}

    bare = read_ply(write_ply(tmp_path / "c.ply", pts))
    assert bare.colors is None and bare.confidence is None


def test_ply_confidence_threshold(tmp_path: Path) -> None:
    pts = torch.randn(40, 3)
    conf = torch.linspace(0, 2, 40)
    colours = torch.rand(40, 3)
    cloud = read_ply(write_ply(tmp_path / "a.ply", pts, colours, conf, conf_threshold=1.0))
    keep = conf >= 1.0
    torch.testing.assert_close(cloud.points, pts[keep])
    torch.testing.assert_close(cloud.confidence, conf[keep])
    assert "element vertex 20" in (tmp_path / "a.ply").read_bytes()[:200].decode("ascii", "ignore")
    empty = read_ply(write_ply(tmp_path / "b.ply", pts, None, conf, conf_threshold=5.0))
    assert empty.points.shape == (0, 3)


def test_ply_ascii_and_big_endian(tmp_path: Path) -> None:
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_text(
        "ply\nformat ascii 1.0\ncomment made by hand\nelement vertex 3\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "property float quality\nelement face 1\nproperty list uchar int vertex_indices\n"
        "end_header\n"
        "0 0 0 255 0 0 0.5\n1 0 0 0 255 0 1.5\n0 1 0.25 0 0 255 2.5\n3 0 1 2\n"
    )
    cloud = read_ply(ascii_ply)
    torch.testing.assert_close(cloud.points, torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0.25]]))
    assert cloud.colors is not None
    assert cloud.colors.tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    torch.testing.assert_close(cloud.properties["quality"], torch.tensor([0.5, 1.5, 2.5]))

    big = tmp_path / "big.ply"
    rec = np.zeros(2, dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("confidence", ">f4")])
    rec["x"], rec["z"], rec["confidence"] = [1.0, 2.0], [3.0, 4.0], [0.25, 0.75]
    header = (
        "ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty double x\n"
        "property double y\nproperty double z\nproperty float confidence\nend_header\n"
    )
    big.write_bytes(header.encode() + rec.tobytes())
    cloud = read_ply(big)
    torch.testing.assert_close(cloud.points, torch.tensor([[1.0, 0, 3], [2, 0, 4]]))
    torch.testing.assert_close(cloud.confidence, torch.tensor([0.25, 0.75]))


@pytest.mark.usefixtures("without_typecheck")
def test_ply_bad_input(tmp_path: Path) -> None:
    pts = torch.randn(5, 3)
    with pytest.raises(ValueError, match="conf_threshold"):
        write_ply(tmp_path / "a.ply", pts, conf_threshold=0.5)
    with pytest.raises(ValueError, match="properties"):
        write_ply(tmp_path / "a.ply", pts, properties={"red": torch.zeros(5)})
    with pytest.raises(ValueError, match="label"):
        write_ply(tmp_path / "a.ply", pts, properties={"label": torch.zeros(4)})
    with pytest.raises(TypeError, match="colors"):
        write_ply(tmp_path / "a.ply", pts, torch.zeros(5, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="points"):
        write_ply(tmp_path / "a.ply", torch.randn(5, 2))
    (tmp_path / "x.ply").write_text("not a ply\n")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "x.ply")
    (tmp_path / "y.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n" + b"\0" * 12
    )
    with pytest.raises(ValueError, match="truncated"):
        read_ply(tmp_path / "y.ply")


# ----------------------------------------------------------------------------------- npz frames


def test_frames_npz_round_trip(tmp_path: Path) -> None:
    clip = synthetic_clip(num_frames=3, height=12, width=16, seed=1)
    conf = torch.rand(3, 12, 16) + 1
    paths = save_frames_npz(
        tmp_path, clip.pts3d, conf, clip.images, clip.intrinsics, clip.camera_pose,
        valid=clip.valid,
    )  # fmt: skip
    assert [p.name for p in paths] == ["frame_0000.npz", "frame_0001.npz", "frame_0002.npz"]
    with np.load(paths[1]) as data:
        assert set(data.files) == {"pts3d", "conf", "image", "K", "cam_to_world",
                                   "frame_index", "valid"}  # fmt: skip
        assert data["image"].shape == (12, 16, 3) and data["image"].dtype == np.uint8
        assert data["pts3d"].dtype == np.float32 and int(data["frame_index"]) == 1
    loaded = load_frames_npz(tmp_path)
    torch.testing.assert_close(loaded["pts3d"], clip.pts3d)
    torch.testing.assert_close(loaded["conf"], conf)
    torch.testing.assert_close(loaded["K"], clip.intrinsics.expand(3, 3, 3))
    torch.testing.assert_close(loaded["cam_to_world"], clip.camera_pose)
    assert torch.equal(loaded["valid"], clip.valid)
    assert loaded["frame_index"].tolist() == [0, 1, 2]
    assert loaded["images"].shape == (3, 3, 12, 16) and loaded["images"].dtype == torch.uint8
    # uint8 images -> [-1, 1]: within half a grey level
    back = loaded["images"].float() / 127.5 - 1
    assert float((back - clip.images).abs().max()) <= 1 / 255 + 1e-6

    # uint8 images go through unchanged; no valid mask -> no `valid` key
    save_frames_npz(tmp_path / "u8", clip.pts3d, conf, loaded["images"], clip.intrinsics,
                    clip.camera_pose, compress=True)  # fmt: skip
    again = load_frames_npz(tmp_path / "u8")
    assert torch.equal(again["images"], loaded["images"]) and "valid" not in again


@pytest.mark.usefixtures("without_typecheck")
def test_frames_npz_bad_input(tmp_path: Path) -> None:
    pts = torch.zeros(2, 4, 5, 3)
    conf = torch.ones(2, 4, 5)
    imgs = torch.zeros(2, 3, 4, 5)
    k, pose = torch.eye(3), torch.eye(4).repeat(2, 1, 1)
    with pytest.raises(ValueError, match="conf"):
        save_frames_npz(tmp_path, pts, conf[:, :3], imgs, k, pose)
    with pytest.raises(ValueError, match="images"):
        save_frames_npz(tmp_path, pts, conf, imgs[:, :, :, :4], k, pose)
    with pytest.raises(ValueError, match="cam_to_world"):
        save_frames_npz(tmp_path, pts, conf, imgs, k, pose[:1])
    with pytest.raises(ValueError, match="K"):
        save_frames_npz(tmp_path, pts, conf, imgs, torch.eye(3).repeat(3, 1, 1), pose)
    with pytest.raises(TypeError, match="images"):
        save_frames_npz(tmp_path, pts, conf, imgs.long(), k, pose)
    with pytest.raises(FileNotFoundError):
        load_frames_npz(tmp_path / "nothing")


# ----------------------------------------------------------------------------------- Nerfstudio


def test_nerfstudio_round_trip_reprojects(tmp_path: Path) -> None:
    clip = synthetic_clip(num_frames=4, height=24, width=32, seed=0)
    t, h, w = clip.valid.shape
    k = clip.intrinsics.expand(t, 3, 3)
    points = clip.pts3d[clip.valid][::7]
    path = write_nerfstudio(tmp_path, clip.images, k, clip.camera_pose, (h, w), points=points)
    meta = json.loads(path.read_text())
    frame = meta["frames"][1]
    assert {"file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(frame)
    assert (frame["w"], frame["h"], frame["cx"], frame["cy"]) == (32, 24, 16.0, 12.0)
    # OpenGL camera axes: the camera looks along its -z, its y points up
    gl = torch.tensor(frame["transform_matrix"])
    torch.testing.assert_close(gl[:3, 2], -clip.camera_pose[1, :3, 2])
    torch.testing.assert_close(gl[:3, 1], -clip.camera_pose[1, :3, 1])
    torch.testing.assert_close(gl[:3, 3], clip.camera_pose[1, :3, 3])

    scene = read_nerfstudio(tmp_path)
    torch.testing.assert_close(scene.K, k)
    torch.testing.assert_close(scene.cam_to_world, clip.camera_pose)
    assert scene.image_size == (h, w)
    assert scene.ply_path == tmp_path / "sparse_pc.ply"
    torch.testing.assert_close(read_ply(scene.ply_path).points, points)
    for i, image_path in enumerate(scene.image_paths):
        decoded = torchvision_io.read_image(str(image_path))
        expected = ((clip.images[i] + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
        assert torch.equal(decoded, expected)
    assert _reprojection_error(clip.pts3d, clip.valid, scene.K, scene.cam_to_world) < 1e-3


def test_nerfstudio_accepts_a_cameras_object_and_reads_shared_intrinsics(tmp_path: Path) -> None:
    clip = synthetic_clip(num_frames=2, height=8, width=12, seed=3)
    cams = SimpleNamespace(
        K=torch.stack([torch.eye(3).expand(2, 3, 3), clip.intrinsics.expand(2, 3, 3)]),
        cam_to_world=torch.stack([torch.eye(4).expand(2, 4, 4), clip.camera_pose]),
        image_size=(8, 12),
    )
    write_nerfstudio(tmp_path, clip.images, cameras=cams, camera_index=1)
    scene = read_nerfstudio(tmp_path / "transforms.json")
    torch.testing.assert_close(scene.K, clip.intrinsics.expand(2, 3, 3))
    torch.testing.assert_close(scene.cam_to_world, clip.camera_pose)
    assert scene.ply_path is None

    # intrinsics at the top level, cx/cy defaulting to the image centre
    meta = json.loads((tmp_path / "transforms.json").read_text())
    for frame in meta["frames"]:
        for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
            del frame[key]
    meta.update(fl_x=10.0, fl_y=11.0, w=12, h=8)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    scene = read_nerfstudio(tmp_path)
    torch.testing.assert_close(scene.K[0], torch.tensor([[10.0, 0, 6], [0, 11.0, 4], [0, 0, 1]]))


@pytest.mark.usefixtures("without_typecheck")
def test_nerfstudio_bad_input(tmp_path: Path) -> None:
    imgs = torch.zeros(2, 3, 4, 5)
    k, pose = torch.eye(3), torch.eye(4).repeat(2, 1, 1)
    with pytest.raises(ValueError, match="image_size"):
        write_nerfstudio(tmp_path, imgs, k, pose, (5, 4))
    with pytest.raises(ValueError, match="cameras"):
        write_nerfstudio(tmp_path, imgs, k, pose, cameras=SimpleNamespace(K=k, cam_to_world=pose))
    with pytest.raises(TypeError, match="image_size"):
        write_nerfstudio(tmp_path, imgs, cameras=SimpleNamespace(K=k, cam_to_world=pose))
    with pytest.raises(ValueError, match="images"):
        write_nerfstudio(tmp_path, torch.zeros(2, 4, 5, 3), k, pose)
    with pytest.raises(FileNotFoundError):
        read_nerfstudio(tmp_path / "missing")


def test_minimal_png_writer_decodes() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    data = torch.frombuffer(bytearray(png_bytes(rgb)), dtype=torch.uint8)
    decoded = torchvision_io.decode_png(data)
    assert torch.equal(decoded, torch.from_numpy(rgb).permute(2, 0, 1))


# ---------------------------------------------------------------------------------------- COLMAP


def test_quaternion_conversion() -> None:
    axes = torch.nn.functional.normalize(torch.randn(20, 3, dtype=torch.float64), dim=-1)
    half_turns = 2 * axes[:, :, None] * axes[:, None, :] - torch.eye(3, dtype=torch.float64)
    axis_turns = torch.diag_embed(torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]]))
    rotations = torch.cat([_random_rotations(200), half_turns, axis_turns.double(),
                           torch.eye(3, dtype=torch.float64)[None]])  # fmt: skip
    q = _rotation_to_quaternion(rotations)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(q), dtype=torch.float64))
    assert bool((q[:, 0] >= 0).all())
    torch.testing.assert_close(_quaternion_to_rotation(q), rotations)
    # 90 degrees about z: (cos 45, 0, 0, sin 45), x -> y
    c = math.sqrt(0.5)
    rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(_rotation_to_quaternion(rz), torch.tensor([c, 0, 0, c]).double())
    torch.testing.assert_close(_quaternion_to_rotation(-torch.tensor([c, 0, 0, c])), rz.float())


def test_colmap_round_trip(tmp_path: Path) -> None:
    t, n = 5, 30
    poses = _poses(t)
    k = torch.tensor([[50.0, 0, 16], [0, 52.0, 12], [0, 0, 1]])
    points = torch.randn(n, 3)
    colours = torch.randint(0, 256, (n, 3), dtype=torch.uint8)
    errors = torch.rand(n)
    names = [f"img{i}.jpg" for i in range(t)]
    written = write_colmap_text(tmp_path, k, poses, (24, 32), names, points, colours,
                                point_errors=errors)  # fmt: skip
    assert sorted(written) == ["cameras", "images", "points3D"]
    cam_lines = [x for x in written["cameras"].read_text().splitlines() if not x.startswith("#")]
    assert cam_lines == ["1 PINHOLE 32 24 50.0 52.0 16.0 12.0"]  # one shared camera
    img_lines = [x for x in written["images"].read_text().splitlines() if not x.startswith("#")]
    assert len(img_lines) == 2 * t and img_lines[1::2] == [""] * t
    model = read_colmap_text(tmp_path)
    assert model.image_names == names and model.image_ids.tolist() == [1, 2, 3, 4, 5]
    assert model.camera_ids.tolist() == [1] * t
    torch.testing.assert_close(model.K.float(), k.expand(t, 3, 3))
    torch.testing.assert_close(model.cam_to_world.float(), poses)
    assert model.image_sizes.tolist() == [[24, 32]] * t
    torch.testing.assert_close(model.points.float(), points)
    assert torch.equal(model.colors, colours)
    torch.testing.assert_close(model.point_errors.float(), errors)
    assert model.point_ids.tolist() == list(range(1, n + 1))

    # world-to-camera in the file: the quaternion and t map the camera centre to the origin
    first = img_lines[0].split()
    q = torch.tensor([float(v) for v in first[1:5]])
    tr = torch.tensor([float(v) for v in first[5:8]])
    centre = poses[0, :3, 3]
    torch.testing.assert_close(_quaternion_to_rotation(q) @ centre + tr, torch.zeros(3),
                               atol=1e-5, rtol=0)  # fmt: skip


def test_colmap_per_frame_cameras_reproject(tmp_path: Path) -> None:
    clip = synthetic_clip(num_frames=3, height=16, width=20, seed=2)
    k = clip.intrinsics.expand(3, 3, 3).clone()
    k[1, 0, 0] += 1.0  # different intrinsics -> one camera per image
    write_colmap_text(tmp_path, k, clip.camera_pose, (16, 20))
    model = read_colmap_text(tmp_path)
    assert model.camera_ids.tolist() == [1, 2, 3]
    assert model.image_names == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert model.points.shape == (0, 3)
    torch.testing.assert_close(model.K.float(), k)
    shared = clip.intrinsics.expand(3, 3, 3)
    write_colmap_text(tmp_path / "b", shared, clip.camera_pose, (16, 20))
    model = read_colmap_text(tmp_path / "b")
    assert _reprojection_error(clip.pts3d, clip.valid, model.K, model.cam_to_world) < 1e-3


def test_colmap_reads_other_writers(tmp_path: Path) -> None:
    (tmp_path / "cameras.txt").write_text("# c\n7 SIMPLE_PINHOLE 20 10 30 10 5\n")
    (tmp_path / "images.txt").write_text(
        "# header\n2 1 0 0 0 0 0 1 7 b.png\n1.5 2.5 -1\n1 1 0 0 0 0 0 0 7 a.png\n\n"
    )
    (tmp_path / "points3D.txt").write_text("5 1 2 3 10 20 30 0.5 2 0 1 0\n3 0 0 1 0 0 0 0.1\n")
    model = read_colmap_text(tmp_path)
    assert model.image_names == ["a.png", "b.png"]  # IMAGE_ID order
    torch.testing.assert_close(model.cam_to_world[1, :3, 3], torch.tensor([0, 0, -1.0]).double())
    torch.testing.assert_close(model.K[0, 0], torch.tensor([30.0, 0, 10]).double())
    assert model.point_ids.tolist() == [3, 5] and model.colors[1].tolist() == [10, 20, 30]
    (tmp_path / "cameras.txt").write_text("7 OPENCV 20 10 30 30 10 5 0.1 0 0 0\n")
    with pytest.raises(ValueError, match="distortion"):
        read_colmap_text(tmp_path)


@pytest.mark.usefixtures("without_typecheck")
def test_colmap_bad_input(tmp_path: Path) -> None:
    k, pose = torch.eye(3), torch.eye(4).repeat(2, 1, 1)
    with pytest.raises(ValueError, match="image_size"):
        write_colmap_text(tmp_path, k, pose)
    with pytest.raises(ValueError, match="image_names"):
        write_colmap_text(tmp_path, k, pose, (4, 5), ["a b.png", "c.png"])
    with pytest.raises(ValueError, match="image_names"):
        write_colmap_text(tmp_path, k, pose, (4, 5), ["a.png"])
    with pytest.raises(ValueError, match="colors"):
        write_colmap_text(tmp_path, k, pose, (4, 5), None, torch.zeros(3, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="point_errors"):
        write_colmap_text(tmp_path, k, pose, (4, 5), None, torch.zeros(3, 3),
                          point_errors=torch.zeros(4))  # fmt: skip
    with pytest.raises(FileNotFoundError):
        read_colmap_text(tmp_path / "missing")


# ------------------------------------------------------------------------------- whole folder


def test_write_reconstruction_every_file_parses_back(tmp_path: Path) -> None:
    clip = synthetic_clip(num_frames=3, height=16, width=24, seed=4)
    t, h, w = clip.valid.shape
    conf = torch.rand(t, h, w, generator=torch.Generator().manual_seed(0)) * 2 + 1
    pts3d = clip.pts3d.clone()
    pts3d[0, 0, 0] = float("nan")  # a non-finite point is never exported
    conf[0, 0, 0] = 3.0
    written = write_reconstruction(
        tmp_path / "out", pts3d=pts3d, conf=conf, images=clip.images,
        K=clip.intrinsics, cam_to_world=clip.camera_pose, conf_threshold=2.0, max_points=300,
    )  # fmt: skip
    assert set(written) == {"ply", "frames", "transforms", "images", "colmap"}
    keep = (conf >= 2.0) & torch.isfinite(pts3d).all(-1)
    assert int(keep.sum()) > 300

    cloud = read_ply(written["ply"])
    assert cloud.points.shape == (300, 3) and cloud.colors is not None
    assert bool((cloud.confidence >= 2.0).all()) and bool(torch.isfinite(cloud.points).all())
    kept_points = pts3d[keep]
    assert bool(torch.isin(cloud.points[:, 0], kept_points[:, 0]).all())

    frames = load_frames_npz(written["frames"])
    assert torch.equal(frames["valid"], keep)
    torch.testing.assert_close(frames["cam_to_world"], clip.camera_pose)

    scene = read_nerfstudio(written["transforms"].parent)
    assert scene.ply_path is not None and scene.ply_path.resolve() == written["ply"].resolve()
    assert all(p.is_file() and p.parent == written["images"] for p in scene.image_paths)
    assert _reprojection_error(clip.pts3d, clip.valid, scene.K, scene.cam_to_world) < 1e-3

    model = read_colmap_text(written["colmap"])
    torch.testing.assert_close(model.points.float(), cloud.points)
    assert torch.equal(model.colors, cloud.colors)
    assert model.image_names == [p.name for p in scene.image_paths]
    torch.testing.assert_close(model.cam_to_world.float(), clip.camera_pose)

    # no threshold, no cap: every finite point
    again = write_reconstruction(tmp_path / "all", pts3d=pts3d, conf=conf, images=clip.images,
                                 K=clip.intrinsics, cam_to_world=clip.camera_pose)  # fmt: skip
    assert len(read_ply(again["ply"])) == t * h * w - 1


@pytest.mark.usefixtures("without_typecheck")
def test_write_reconstruction_bad_input(tmp_path: Path) -> None:
    pts = torch.zeros(2, 4, 5, 3)
    conf = torch.ones(2, 4, 5)
    imgs = torch.zeros(2, 3, 4, 5)
    k, pose = torch.eye(3), torch.eye(4).repeat(2, 1, 1)
    with pytest.raises(ValueError, match="max_points"):
        write_reconstruction(tmp_path, pts3d=pts, conf=conf, images=imgs, K=k, cam_to_world=pose,
                             max_points=0)  # fmt: skip
    with pytest.raises(ValueError, match="pts3d"):
        write_reconstruction(tmp_path, pts3d=pts[..., :2], conf=conf, images=imgs, K=k,
                             cam_to_world=pose)  # fmt: skip
    with pytest.raises(ValueError, match="K"):
        write_reconstruction(tmp_path, pts3d=pts, conf=conf, images=imgs, K=torch.eye(4),
                             cam_to_world=pose)  # fmt: skip
