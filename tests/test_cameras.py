"""Camera recovery from pointmaps: known answers on the synthetic scenes' exact pointmaps."""

import math

import pytest
import torch

from spatialmem.data.scenes import synthetic_clip
from spatialmem.geometry import (
    intrinsics_from_focal,
    invert_rigid,
    project,
    rigid,
    transform_points,
)
from spatialmem.geometry.cameras import Cameras, estimate_cameras, estimate_focal, solve_pnp

H, W = 48, 64
SEEDS = (0, 1, 2, 3, 4)


def _clip_in_frame0(seed: int, frames: int = 4, stride: int = 3):
    """Exact pointmaps in frame 0's camera coordinates, poses relative to frame 0, focal and the
    scene size (bounding-box diagonal of the valid points)."""
    clip = synthetic_clip(frames, H, W, seed, stride=stride)
    inv0 = invert_rigid(clip.camera_pose[0])
    pts = transform_points(inv0.expand(frames, 4, 4), clip.pts3d)
    rel = inv0 @ clip.camera_pose
    valid = pts[clip.valid]
    diag = (valid.amax(0) - valid.amin(0)).norm()
    return pts, clip.valid.float(), rel, clip.intrinsics[0, 0], diag


@pytest.fixture(scope="module")
def scenes():
    """The seeds stacked into one batch: ``pts [B, T, H, W, 3]``, ``conf``, ``rel [B, T, 4, 4]``,
    ``focal [B]``, ``diag [B]``."""
    items = [_clip_in_frame0(s) for s in SEEDS]
    return tuple(torch.stack([it[i] for it in items]) for i in range(5))


def _corrupt(pts, conf, diag, seed, noise=0.01, outliers=0.1):
    """Gaussian noise of ``noise * diag`` and a fraction ``outliers`` of the points replaced by
    uniform points in the bounding box of the valid points."""
    gen = torch.Generator().manual_seed(seed)
    out = pts + noise * diag[:, None, None, None, None] * torch.randn(pts.shape, generator=gen)
    if outliers > 0:
        lo = torch.stack([p[c > 0].amin(0) for p, c in zip(pts, conf, strict=True)])
        hi = torch.stack([p[c > 0].amax(0) for p, c in zip(pts, conf, strict=True)])
        span = (hi - lo)[:, None, None, None]
        rnd = lo[:, None, None, None] + span * torch.rand(pts.shape, generator=gen)
        replace = torch.rand(pts.shape[:-1], generator=gen) < outliers
        out = torch.where(replace[..., None], rnd, out)
    return out


def _rot_err_deg(rot_a: torch.Tensor, rot_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle from the chord, ``2 asin(|R_a - R_b|_F / sqrt(8))``: unlike the trace
    formula it stays accurate for tiny angles in float32."""
    chord = (rot_a.double() - rot_b.double()).flatten(-2).norm(dim=-1) / math.sqrt(8.0)
    return torch.rad2deg(2.0 * torch.asin(chord.clamp(max=1.0)))


def _errors(cams: Cameras, rel, focal, diag):
    """Worst relative focal error, rotation error (degrees) and translation error / scene size."""
    f_err = ((cams.focal - focal[:, None]).abs() / focal[:, None]).max().item()
    r_err = _rot_err_deg(cams.cam_to_world[..., :3, :3], rel[..., :3, :3]).max().item()
    t_err = (cams.cam_to_world[..., :3, 3] - rel[..., :3, 3]).norm(dim=-1) / diag[:, None]
    return f_err, r_err, t_err.max().item()


# ------------------------------------------------------------------------------------ Cameras


def test_cameras_container() -> None:
    focal = torch.tensor([[50.0, 60.0, 70.0], [40.0, 45.0, 55.0]])
    k = intrinsics_from_focal(focal, H, W)
    rot = torch.linalg.matrix_exp(
        torch.tensor([[0.0, -0.3, 0.2], [0.3, 0.0, -0.1], [-0.2, 0.1, 0.0]])
    )
    poses = rigid(rot.expand(2, 3, 3, 3), torch.randn(2, 3, 3))
    cams = Cameras(K=k, cam_to_world=poses, image_size=(H, W))
    assert cams.batch_size == 2 and cams.num_frames == 3
    torch.testing.assert_close(cams.focal, focal)
    eye = torch.eye(4).expand(2, 3, 4, 4)
    torch.testing.assert_close(cams.world_to_cam @ cams.cam_to_world, eye)
    one = cams[1:2]
    assert one.batch_size == 1 and one.image_size == (H, W)
    assert Cameras.cat([cams, one]).batch_size == 3


@pytest.mark.usefixtures("without_typecheck")
def test_cameras_bad_fields() -> None:
    k = intrinsics_from_focal(torch.ones(2, 3), H, W)
    poses = torch.eye(4).expand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"Cameras\.K"):
        Cameras(K=k[..., :2, :], cam_to_world=poses, image_size=(H, W))
    with pytest.raises(ValueError, match=r"Cameras\.cam_to_world.*B T 4 4 = 2 3 4 4"):
        Cameras(K=k, cam_to_world=poses[:, :2], image_size=(H, W))
    with pytest.raises(ValueError, match=r"Cameras\.image_size"):
        Cameras(K=k, cam_to_world=poses, image_size=(H, 0))


# ------------------------------------------------------------------------------ estimate_focal


def test_estimate_focal_known_answer(scenes) -> None:
    pts, conf, _, focal, _ = scenes
    got = estimate_focal(pts[:, 0], conf[:, 0])
    torch.testing.assert_close(got, focal, rtol=1e-4, atol=0.0)
    # zero-confidence pixels are ignored whatever their points
    garbage = torch.where(conf[:, 0, ..., None] > 0, pts[:, 0], torch.randn_like(pts[:, 0]))
    torch.testing.assert_close(estimate_focal(garbage, conf[:, 0]), got, rtol=1e-5, atol=0.0)


def test_estimate_focal_depth_map_float64() -> None:
    """A random-depth pointmap back-projected with a known focal, in float64."""
    focal = torch.tensor([30.0, 90.0], dtype=torch.float64)
    k = intrinsics_from_focal(focal, H, W)
    depth = 1.0 + torch.rand(2, H, W, dtype=torch.float64)
    from spatialmem.geometry import depth_to_points

    got = estimate_focal(depth_to_points(depth, k), None)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, focal, rtol=1e-8, atol=0.0)


@pytest.mark.usefixtures("without_typecheck")
def test_estimate_focal_bad_input() -> None:
    pts = torch.rand(2, H, W, 3) + torch.tensor([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"`pts_cam`.*B H W 3"):
        estimate_focal(pts[..., :2])
    with pytest.raises(ValueError, match=r"`conf`.*B H W = 2 48 64"):
        estimate_focal(pts, torch.ones(2, H, W + 1))
    with pytest.raises(TypeError, match="`conf`"):
        estimate_focal(pts, torch.ones(2, H, W, dtype=torch.int64))
    conf = torch.ones(2, H, W)
    conf[1] = 0.0
    with pytest.raises(ValueError, match=r"batch elements \[1\]"):
        estimate_focal(pts, conf)


# ----------------------------------------------------------------------------------- solve_pnp


def _random_problem(b: int, n: int, seed: int, planar: bool = False):
    gen = torch.Generator().manual_seed(seed)
    focal = 40.0 + 60.0 * torch.rand(b, generator=gen)
    rot = torch.linalg.matrix_exp(_skew(0.8 * torch.randn(b, 3, generator=gen)))
    trans = torch.randn(b, 3, generator=gen)
    pose = rigid(rot, trans)
    # camera-frame points in the field of view at depth 2-5, then to world
    uv = torch.rand(b, n, 2, generator=gen) * torch.tensor([W, H])
    depth = 2.0 + 3.0 * torch.rand(b, n, generator=gen)
    if planar:  # all on the plane z = 2 + 0.4 x + 0.3 y of the camera (oblique)
        ray = torch.cat(((uv - torch.tensor([W / 2, H / 2])) / focal[:, None, None],
                         torch.ones(b, n, 1)), -1)  # fmt: skip
        depth = 2.0 / (1.0 - 0.4 * ray[..., 0] - 0.3 * ray[..., 1])
    xy = (uv - torch.tensor([W / 2, H / 2])) / focal[:, None, None] * depth[..., None]
    cam = torch.cat((xy, depth[..., None]), -1)
    return transform_points(pose, cam), uv, focal, pose


def _skew(v: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(v[:, 0])
    return torch.stack(
        (
            torch.stack((z, -v[:, 2], v[:, 1]), -1),
            torch.stack((v[:, 2], z, -v[:, 0]), -1),
            torch.stack((-v[:, 1], v[:, 0], z), -1),
        ),
        -2,
    )


def _check_pose(k, pose, focal, want, rtol=1e-4, deg=0.01, tol=1e-3) -> None:
    torch.testing.assert_close(k[:, 0, 0], focal, rtol=rtol, atol=0.0)
    assert _rot_err_deg(pose[:, :3, :3], want[:, :3, :3]).max() < deg
    torch.testing.assert_close(pose[:, :3, 3], want[:, :3, 3], rtol=0.0, atol=tol)


@pytest.mark.parametrize("robust", [True, False])
@pytest.mark.parametrize("planar", [False, True])
def test_solve_pnp_known_answer(robust: bool, planar: bool) -> None:
    pts, uv, focal, pose = _random_problem(6, 200, seed=3, planar=planar)
    k, got = solve_pnp(pts, uv, None, (H, W), robust=robust)
    assert k.shape == (6, 3, 3) and got.shape == (6, 4, 4)
    _check_pose(k, got, focal, pose)
    # K has the principal point at the centre
    torch.testing.assert_close(k[:, :2, 2], torch.tensor([W / 2, H / 2]).expand(6, 2))
    # reprojection of the points through the recovered camera
    reproj, z = project(pts, k, got)
    assert (z > 0).all()
    torch.testing.assert_close(reproj, uv, rtol=0.0, atol=1e-2)


def test_solve_pnp_known_focal_and_weights() -> None:
    pts, uv, focal, pose = _random_problem(4, 120, seed=7)
    weights = torch.rand(4, 120, generator=torch.Generator().manual_seed(0))
    # zero-weight correspondences are ignored: corrupt them
    weights[:, :30] = 0.0
    uv = uv.clone()
    uv[:, :30] += 25.0
    k, got = solve_pnp(pts, uv, weights, (H, W), focal=focal)
    torch.testing.assert_close(k[:, 0, 0], focal)
    _check_pose(k, got, focal, pose)


def test_solve_pnp_robust_to_outliers() -> None:
    pts, uv, focal, pose = _random_problem(4, 300, seed=11)
    gen = torch.Generator().manual_seed(1)
    bad = torch.rand(4, 300, generator=gen) < 0.2
    uv_bad = torch.where(bad[..., None], torch.rand(4, 300, 2, generator=gen) * W, uv)
    k, got = solve_pnp(pts, uv_bad, None, (H, W), robust=True)
    _check_pose(k, got, focal, pose, rtol=1e-3, deg=0.05, tol=5e-3)
    k_ls, _ = solve_pnp(pts, uv_bad, None, (H, W), robust=False)
    assert ((k_ls[:, 0, 0] - focal).abs() / focal).max() > 0.01  # least squares is pulled away


def test_solve_pnp_frame0_is_identity(scenes) -> None:
    pts, conf, _, focal, _ = scenes
    uv = torch.stack(torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij"))
    uv = uv.flip(0).permute(1, 2, 0).reshape(1, H * W, 2).expand(len(SEEDS), H * W, 2)
    k, pose = solve_pnp(pts[:, 0].reshape(len(SEEDS), -1, 3), uv, conf[:, 0].flatten(1), (H, W))
    _check_pose(k, pose, focal, torch.eye(4).expand(len(SEEDS), 4, 4), tol=1e-4)


@pytest.mark.usefixtures("without_typecheck")
def test_solve_pnp_bad_input() -> None:
    pts, uv, focal, _ = _random_problem(2, 10, seed=0)
    with pytest.raises(ValueError, match=r"at least 6 correspondences.*N = 5"):
        solve_pnp(pts[:, :5], uv[:, :5], None, (H, W))
    weights = torch.ones(2, 10)
    weights[1] = 0.0
    with pytest.raises(ValueError, match=r"`weights`.*batch elements \[1\].*fewer than 6"):
        solve_pnp(pts, uv, weights, (H, W))
    weights[1, :5] = 1.0
    with pytest.raises(ValueError, match=r"batch elements \[1\]"):
        solve_pnp(pts, uv, weights, (H, W))
    with pytest.raises(ValueError, match=r"`pixels`.*B N 2 = 2 10 2"):
        solve_pnp(pts, uv[:, :9], None, (H, W))
    with pytest.raises(ValueError, match=r"`points`.*B N 3"):
        solve_pnp(pts[..., :2], uv, None, (H, W))
    with pytest.raises(ValueError, match=r"`weights`.*B N = 2 10"):
        solve_pnp(pts, uv, torch.ones(2, 11), (H, W))
    with pytest.raises(ValueError, match="`image_size`"):
        solve_pnp(pts, uv, None, (H, -W))
    with pytest.raises(ValueError, match="`focal` must be positive"):
        solve_pnp(pts, uv, None, (H, W), focal=-focal)
    with pytest.raises(ValueError, match=r"`focal`.*B = 2"):
        solve_pnp(pts, uv, None, (H, W), focal=focal[:1])
    with pytest.raises(TypeError, match="`points`"):
        solve_pnp(pts.long(), uv, None, (H, W))


# ---------------------------------------------------------------------------- estimate_cameras


@pytest.mark.parametrize("shared_focal", [False, True])
def test_estimate_cameras_exact_pointmaps(scenes, shared_focal: bool) -> None:
    pts, conf, rel, focal, diag = scenes
    cams = estimate_cameras(pts, conf, shared_focal=shared_focal)
    assert cams.K.shape == (len(SEEDS), 4, 3, 3) and cams.image_size == (H, W)
    torch.testing.assert_close(cams.cam_to_world[:, 0], torch.eye(4).expand(len(SEEDS), 4, 4))
    f_err, r_err, t_err = _errors(cams, rel, focal, diag)
    assert f_err < 1e-3, f_err  # required: 1 %
    assert r_err < 0.05, r_err  # required: 0.5 degree
    assert t_err < 1e-4, t_err  # required: 1 % of the scene size
    if shared_focal:
        torch.testing.assert_close(cams.focal, cams.focal[:, :1].expand(-1, 4))


_NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
_DEVICES = ["cpu", pytest.param("cuda", marks=_NO_CUDA)]


@pytest.mark.parametrize("device", _DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_estimate_cameras_device_dtype(scenes, device: str, dtype: torch.dtype) -> None:
    pts, conf, rel, focal, diag = (x[:2].to(device=device, dtype=dtype) for x in scenes)
    cams = estimate_cameras(pts, conf)
    assert cams.K.dtype == dtype and cams.cam_to_world.device.type == device
    f_err, r_err, t_err = _errors(cams, rel, focal, diag)
    assert f_err < 1e-3 and r_err < 0.05 and t_err < 1e-4, (f_err, r_err, t_err)


def test_estimate_cameras_subsampled(scenes) -> None:
    pts, conf, rel, focal, diag = scenes
    cams = estimate_cameras(pts[:2], conf[:2], max_points=50)
    f_err, r_err, t_err = _errors(cams, rel[:2], focal[:2], diag[:2])
    assert f_err < 1e-3 and r_err < 0.05 and t_err < 1e-4, (f_err, r_err, t_err)


def test_estimate_cameras_noisy_pointmaps(scenes) -> None:
    """1 % Gaussian noise plus 10 % outliers: the bound documented in `estimate_cameras`."""
    pts, conf, rel, focal, diag = scenes
    noisy = _corrupt(pts, conf, diag, seed=0)
    f_err, r_err, t_err = _errors(estimate_cameras(noisy, conf, robust=True), rel, focal, diag)
    assert f_err < 0.06 and r_err < 1.5 and t_err < 0.05, (f_err, r_err, t_err)
    # outliers alone are rejected completely with robust=True, and not without it
    outl = _corrupt(pts, conf, diag, seed=1, noise=0.0)
    f_err, r_err, t_err = _errors(estimate_cameras(outl, conf, robust=True), rel, focal, diag)
    assert f_err < 1e-3 and r_err < 0.1 and t_err < 1e-3, (f_err, r_err, t_err)
    f_err, r_err, t_err = _errors(estimate_cameras(outl, conf, robust=False), rel, focal, diag)
    assert r_err > 2.0, r_err


def test_estimate_cameras_min_conf(scenes) -> None:
    """Pixels below ``min_conf`` are ignored whatever their points."""
    pts, conf, rel, focal, diag = scenes
    conf2 = 1.0 + 4.0 * conf  # valid pixels at 5, the window at 1
    junk = torch.where(conf[..., None] > 0, pts, torch.randn_like(pts))
    cams = estimate_cameras(junk[:2], conf2[:2], min_conf=2.0)
    f_err, r_err, t_err = _errors(cams, rel[:2], focal[:2], diag[:2])
    assert f_err < 1e-3 and r_err < 0.05 and t_err < 1e-4, (f_err, r_err, t_err)


def test_estimate_cameras_single_frame(scenes) -> None:
    pts, conf, _, focal, _ = scenes
    cams = estimate_cameras(pts[:, :1], conf[:, :1])
    assert cams.num_frames == 1
    torch.testing.assert_close(cams.focal[:, 0], focal, rtol=1e-4, atol=0.0)


@pytest.mark.usefixtures("without_typecheck")
def test_estimate_cameras_bad_input(scenes) -> None:
    pts, conf = scenes[0][:1], scenes[1][:1]
    with pytest.raises(ValueError, match=r"`pts3d`.*B T H W 3"):
        estimate_cameras(pts[0], conf[0])
    with pytest.raises(ValueError, match=r"`conf`.*B T H W = 1 4 48 64"):
        estimate_cameras(pts, conf[:, :3])
    with pytest.raises(ValueError, match="`max_points` must be >= 6"):
        estimate_cameras(pts, conf, max_points=5)
    low = conf.clone()
    low[0, 2] = 0.5
    with pytest.raises(ValueError, match=r"\(batch, frame\) \[\(0, 2\)\].*min_conf = 1.0"):
        estimate_cameras(pts, low)
    low = conf.clone()
    low[0, 0] = 0.0
    with pytest.raises(ValueError, match=r"\(batch, frame\) \[\(0, 0\)\] have no pixel"):
        estimate_cameras(pts, low)
    assert math.isfinite(estimate_cameras(pts, conf).focal.sum().item())
