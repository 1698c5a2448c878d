"""Geometry: transforms, camera maths, alignment (Umeyama, median scale-shift) and normals.

Known answers on synthetic scenes with exact ground truth, hypothesis properties (equivariance,
round trips) and input validation.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import spatialmem.losses
from spatialmem import set_value_checks
from spatialmem.data.scenes import SyntheticScenes, collate_clips, synthetic_clip
from spatialmem.geometry import (
    apply_scale_shift,
    compose,
    depth_to_points,
    invert_rigid,
    invert_sim3,
    masked_median,
    median_scale,
    median_scale_shift,
    normals_from_pointmap,
    pixel_grid,
    points_in_camera,
    points_to_depth,
    project,
    rigid,
    rotation_angle_deg,
    sim3,
    sim3_scale,
    transform_points,
    umeyama,
)
from spatialmem.losses import ScaleShiftInvariant, gt_in_camera0
from spatialmem.types import StepPredictions

seeds = st.integers(0, 2**31 - 1)


def random_rotation(n: int, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]  # proper rotation
    return q.to(dtype)


def random_sim3(n: int, gen: torch.Generator, dtype=torch.float32, *, scale: bool = True):
    s = 0.3 + 3.0 * torch.rand(n, generator=gen, dtype=dtype) if scale else torch.ones(n)
    t = 2.0 * torch.randn(n, 3, generator=gen, dtype=dtype)
    return sim3(s.to(dtype), random_rotation(n, gen, dtype), t)


def assert_rotation(rot: torch.Tensor, atol: float = 1e-5) -> None:
    eye = torch.eye(3, dtype=rot.dtype).expand_as(rot)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), eye, atol=atol, rtol=0)
    torch.testing.assert_close(
        torch.linalg.det(rot), torch.ones(rot.shape[:-2], dtype=rot.dtype), atol=atol, rtol=0
    )


# --------------------------------------------------------------------------- transforms
@given(seeds)
def test_rigid_inverse_round_trips(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    pose = random_sim3(4, gen, scale=False)
    eye = torch.eye(4).expand(4, 4, 4)
    torch.testing.assert_close(invert_rigid(invert_rigid(pose)), pose, atol=1e-6, rtol=0)
    torch.testing.assert_close(compose(pose, invert_rigid(pose)), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(invert_rigid(pose), torch.linalg.inv(pose), atol=1e-5, rtol=1e-5)


@given(seeds)
def test_sim3_inverse_round_trips(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    transform = random_sim3(4, gen)
    inv = invert_sim3(transform)
    torch.testing.assert_close(invert_sim3(inv), transform, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        compose(inv, transform), torch.eye(4).expand(4, 4, 4), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(sim3_scale(inv) * sim3_scale(transform), torch.ones(4))
    pts = torch.randn(4, 10, 3, generator=gen)
    torch.testing.assert_close(
        transform_points(inv, transform_points(transform, pts)), pts, atol=1e-5, rtol=0
    )


def test_compose_applies_last_first_and_rotation_angle() -> None:
    rot_z = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turn = rigid(rot_z, torch.zeros(3))
    shift = rigid(torch.eye(3), torch.tensor([1.0, 0.0, 0.0]))
    p = torch.tensor([[0.0, 0.0, 0.0]])
    # shift first, then turn: (1, 0, 0) -> (0, 1, 0)
    torch.testing.assert_close(
        transform_points(compose(turn, shift), p), torch.tensor([[0.0, 1.0, 0.0]])
    )
    assert rotation_angle_deg(torch.eye(3), rot_z).item() == pytest.approx(90.0, abs=1e-4)


# --------------------------------------------------------------------------- camera maths
def test_depth_points_round_trip_on_synthetic_clip() -> None:
    clip = synthetic_clip(num_frames=3, height=20, width=28, seed=2)
    depth = clip.depth()
    k = clip.intrinsics.expand(3, 3, 3)
    torch.testing.assert_close(
        depth_to_points(depth, k, clip.camera_pose), clip.pts3d, atol=1e-4, rtol=1e-5
    )
    torch.testing.assert_close(points_to_depth(clip.pts3d, clip.camera_pose), depth)
    # in the camera frame: depth is z, and back-projecting without a pose gives those points
    cam = points_in_camera(clip.pts3d, clip.camera_pose)
    torch.testing.assert_close(cam[..., 2], depth)
    torch.testing.assert_close(depth_to_points(depth, k), cam, atol=1e-4, rtol=1e-5)


def test_project_lands_on_the_pixel_grid() -> None:
    clip = synthetic_clip(num_frames=3, height=20, width=28, seed=4)
    uv, z = project(clip.pts3d.flatten(1, 2), clip.intrinsics.expand(3, 3, 3), clip.camera_pose)
    grid = pixel_grid(20, 28).flatten(0, 1).expand(3, -1, -1)
    torch.testing.assert_close(uv, grid, atol=1e-3, rtol=0)
    torch.testing.assert_close(z, clip.depth().flatten(1))
    assert (z > 0).all()


def test_synthetic_intrinsics_are_centred_square_pixels() -> None:
    clip = synthetic_clip(num_frames=2, height=24, width=40, seed=0)
    focal = 0.5 * 40 / math.tan(math.radians(60.0) / 2)
    want = torch.tensor([[focal, 0.0, 20.0], [0.0, focal, 12.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(clip.intrinsics, want)


def test_points_in_camera_matches_the_general_inverse() -> None:
    """gt_in_camera0 (the losses' name) is points_in_camera; a rigid pose's exact inverse agrees
    with torch.linalg.inv (the former implementation) to float32 rounding."""
    ds = SyntheticScenes(num_scenes=2, num_frames=3, height=12, width=16)
    target = collate_clips([ds[0], ds[1]]).target
    got = gt_in_camera0(target.pts3d, target.camera_pose0)
    torch.testing.assert_close(got, points_in_camera(target.pts3d, target.camera_pose0))
    inv = torch.linalg.inv(target.camera_pose0.double())
    want = torch.einsum("bij,bthwj->bthwi", inv[:, :3, :3], target.pts3d.double())
    want = want + inv[:, None, None, None, :3, 3]
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=0)


# --------------------------------------------------------------------------- umeyama
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_umeyama_recovers_a_sim3(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    truth = random_sim3(5, gen, dtype)
    src = torch.randn(5, 40, 3, generator=gen, dtype=dtype) * 2 + 10  # off-centre cloud
    fit = umeyama(src, transform_points(truth, src))
    assert fit.dtype == dtype
    torch.testing.assert_close(fit, truth, atol=1e-4 if dtype == torch.float32 else 1e-10, rtol=0)


def test_umeyama_without_scale_is_rigid() -> None:
    gen = torch.Generator().manual_seed(1)
    truth = random_sim3(3, gen, scale=False)
    src = torch.randn(3, 30, 3, generator=gen)
    fit = umeyama(src, transform_points(truth, src), with_scale=False)
    torch.testing.assert_close(fit, truth, atol=1e-5, rtol=0)
    # a scaled target: the rigid fit stays a proper rotation with unit scale
    scaled = sim3(torch.full((3,), 2.5), truth[:, :3, :3], truth[:, :3, 3])
    fit = umeyama(src, transform_points(scaled, src), with_scale=False)
    assert_rotation(fit[:, :3, :3])
    torch.testing.assert_close(fit[:, :3, :3], truth[:, :3, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(fit[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(3, 4))


def test_umeyama_reflection_fix() -> None:
    """A mirrored target: the best *proper* rotation and the scale of Umeyama's Eq. (42)."""
    axes = torch.diag(torch.tensor([3.0, 2.0, 0.5]))
    src = torch.cat([axes, -axes])[None]  # covariance diag(9, 4, 0.25) / 3
    dst = src * torch.tensor([1.0, 1.0, -1.0])  # reflection through the xy plane
    fit = umeyama(src, dst)
    scale = sim3_scale(fit)
    rot = fit[:, :3, :3] / scale[:, None, None]
    assert_rotation(rot)
    # the flattest axis is the one flipped: the identity is the best rotation
    torch.testing.assert_close(rot, torch.eye(3)[None], atol=1e-6, rtol=0)
    torch.testing.assert_close(scale, torch.tensor([(9 + 4 - 0.25) / (9 + 4 + 0.25)]))
    assert umeyama(src, dst, with_scale=False)[:, :3, :3].det().item() == pytest.approx(1.0)


def test_umeyama_mask_and_weights_ignore_outliers() -> None:
    gen = torch.Generator().manual_seed(3)
    truth = random_sim3(2, gen)
    src = torch.randn(2, 60, 3, generator=gen)
    dst = transform_points(truth, src)
    outlier = torch.zeros(2, 60, dtype=torch.bool)
    outlier[:, ::5] = True
    dst = torch.where(outlier[..., None], dst + 5.0 * torch.randn(2, 60, 3, generator=gen), dst)
    dst[0, 0] = torch.nan  # a masked-out point may be non-finite
    torch.testing.assert_close(umeyama(src, dst, mask=~outlier), truth, atol=1e-4, rtol=0)
    weights = torch.where(outlier, 0.0, 0.5 + torch.rand(2, 60, generator=gen))
    torch.testing.assert_close(umeyama(src, dst, weights), truth, atol=1e-4, rtol=0)
    dst[0, 0] = 0.0
    assert (umeyama(src, dst) - truth).abs().max() > 1e-2  # the outliers do move the fit


def test_umeyama_weight_equals_duplicated_points() -> None:
    gen = torch.Generator().manual_seed(4)
    src = torch.randn(1, 20, 3, generator=gen)
    dst = src @ random_rotation(1, gen)[0].T * 1.7 + 0.3 * torch.randn(1, 20, 3, generator=gen)
    weights = torch.ones(1, 20)
    weights[0, :5] = 3.0
    dup_src = torch.cat([src, src[:, :5], src[:, :5]], dim=1)
    dup_dst = torch.cat([dst, dst[:, :5], dst[:, :5]], dim=1)
    torch.testing.assert_close(
        umeyama(src, dst, weights), umeyama(dup_src, dup_dst), atol=1e-5, rtol=0
    )


def test_umeyama_half_precision_computes_in_float32() -> None:
    gen = torch.Generator().manual_seed(5)
    truth = random_sim3(1, gen)
    src = torch.randn(1, 30, 3, generator=gen)
    fit = umeyama(src.half(), transform_points(truth, src).half())
    assert fit.dtype == torch.float32
    torch.testing.assert_close(fit, truth, atol=2e-2, rtol=0)


@given(seeds, st.booleans())
def test_umeyama_is_equivariant_under_a_common_rigid_motion(seed: int, with_scale: bool) -> None:
    """Fitting ``A src -> A dst`` gives ``A T A^-1`` for any rigid ``A`` (noisy data too)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(2, 25, 3, generator=gen)
    dst = transform_points(random_sim3(2, gen), src) + 0.1 * torch.randn(2, 25, 3, generator=gen)
    motion = random_sim3(2, gen, scale=False)
    fit = umeyama(src, dst, with_scale=with_scale)
    moved = umeyama(
        transform_points(motion, src), transform_points(motion, dst), with_scale=with_scale
    )
    torch.testing.assert_close(moved, compose(motion, fit, invert_rigid(motion)), atol=2e-4, rtol=0)


@given(seeds)
def test_rigid_fit_of_the_reverse_problem_is_the_inverse(seed: int) -> None:
    """The rigid least-squares problem is symmetric: fit(dst -> src) = fit(src -> dst)^-1."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(1, 25, 3, generator=gen)
    dst = transform_points(random_sim3(1, gen, scale=False), src)
    dst = dst + 0.1 * torch.randn(1, 25, 3, generator=gen)
    forward = umeyama(src, dst, with_scale=False)
    backward = umeyama(dst, src, with_scale=False)
    torch.testing.assert_close(backward, invert_rigid(forward), atol=2e-4, rtol=0)


def test_umeyama_aligns_a_synthetic_reconstruction() -> None:
    """A Sim(3)-distorted copy of a synthetic scene's pointmaps is aligned back exactly."""
    clip = synthetic_clip(num_frames=2, height=16, width=16, seed=6)
    gt = clip.pts3d.reshape(1, -1, 3)
    valid = clip.valid.reshape(1, -1)
    distort = random_sim3(1, torch.Generator().manual_seed(6))
    pred = transform_points(distort, gt)
    fit = umeyama(pred, gt, mask=valid)
    torch.testing.assert_close(transform_points(fit, pred), gt, atol=1e-4, rtol=0)


@pytest.mark.usefixtures("without_typecheck")
def test_umeyama_bad_input() -> None:
    src = torch.randn(2, 10, 3)
    with pytest.raises(ValueError, match="`src`"):
        umeyama(torch.randn(2, 10, 2), src)
    with pytest.raises(ValueError, match="same shape"):
        umeyama(src, torch.randn(2, 9, 3))
    with pytest.raises(ValueError, match="`weights`"):
        umeyama(src, src, torch.ones(2, 9))
    with pytest.raises(TypeError, match="`mask`"):
        umeyama(src, src, mask=torch.ones(2, 10))
    with pytest.raises(TypeError, match="`src`"):
        umeyama(src.long(), src)
    with pytest.raises(ValueError, match="non-negative"):
        umeyama(src, src, -torch.ones(2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 2:] = False
    with pytest.raises(ValueError, match=r"at least 3 points.*\[1\]"):
        umeyama(src, src, mask=mask)


def test_umeyama_degenerate_sample_without_value_checks_is_identity() -> None:
    src = torch.randn(2, 10, 3)
    dst = src + 1.0
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 2:] = False
    set_value_checks(False)
    try:
        fit = umeyama(src, dst, mask=mask)
    finally:
        set_value_checks(True)
    torch.testing.assert_close(fit[1], torch.eye(4))
    torch.testing.assert_close(fit[0, :3, 3], torch.ones(3), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- median alignment
def test_masked_median_and_median_scale_known_answers() -> None:
    values = torch.tensor([[4.0, 1.0, 3.0, 2.0, 100.0], [5.0, 0.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, True, False], [True, False, False, False, False]])
    torch.testing.assert_close(masked_median(values, valid), torch.tensor([2.0, 5.0]))  # lower
    assert masked_median(values, torch.zeros_like(valid)).isnan().all()
    pts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 3, 0], [10, 10, 10]]])
    # centre = per-coordinate lower median (0, 0, 0); distances 0, 1, 3, 17.3 -> lower median 1
    torch.testing.assert_close(
        median_scale(pts, torch.ones(1, 4, dtype=torch.bool)), torch.tensor([1.0])
    )
    assert spatialmem.losses.masked_median is masked_median
    assert spatialmem.losses.median_scale is median_scale


def test_median_scale_shift_undoes_a_scale_and_depth_shift() -> None:
    clip = synthetic_clip(num_frames=3, height=16, width=20, seed=8)
    gt = points_in_camera(clip.pts3d, clip.camera_pose[:1].expand(3, 4, 4))[None]
    valid = clip.valid[None]
    pred = gt * 0.25 + torch.tensor([0.0, 0.0, 0.7])
    scale, shift = median_scale_shift(pred, gt, valid)
    torch.testing.assert_close(scale, torch.tensor([4.0]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shift, torch.tensor([[0.0, 0.0, -2.8]]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_scale_shift(pred, scale, shift), gt, atol=1e-5, rtol=1e-5)


def test_median_scale_shift_is_the_official_evaluation_alignment() -> None:
    """Same aligned frames as ScaleShiftInvariant (eval.py: norm_mode off) with gt_shift_z added
    back to both clouds, as the official evaluation does before ICP."""
    ds = SyntheticScenes(num_scenes=2, num_frames=4, height=12, width=16, seed=1)
    target = collate_clips([ds[0], ds[1]]).target
    gt = gt_in_camera0(target.pts3d, target.camera_pose0)
    gen = torch.Generator().manual_seed(0)
    b, t, h, w, _ = gt.shape

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return 0.6 * x + 0.05 * torch.randn(x.shape, generator=gen)

    ones = torch.ones(b, t - 1, h, w)
    pred = StepPredictions(
        pts_view1=noisy(gt[:, :-1]), conf_view1=ones, pts_view2=noisy(gt[:, 1:]), conf_view2=ones
    )
    out = ScaleShiftInvariant(norm_mode="none")(pred, target)
    frames = torch.cat([pred.pts_view1, pred.pts_view2[:, -1:]], dim=1)
    scale, shift = median_scale_shift(frames, gt, target.valid)
    z_back = torch.stack([torch.zeros(b), torch.zeros(b), out.gt_shift_z], -1)[:, None, None, None]
    torch.testing.assert_close(
        apply_scale_shift(frames, scale, shift), out.frame_pts3d() + z_back, atol=2e-6, rtol=0
    )
    torch.testing.assert_close(scale, out.gt_scale / out.pred_scale)


@pytest.mark.usefixtures("without_typecheck")
def test_median_alignment_bad_input() -> None:
    pts = torch.randn(2, 5, 3)
    valid = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="must match"):
        median_scale_shift(pts, torch.randn(2, 4, 3), valid)
    with pytest.raises(TypeError, match="`valid`"):
        median_scale_shift(pts, pts, valid.float())
    with pytest.raises(ValueError, match="`gt`"):
        median_scale_shift(pts, torch.randn(2, 5, 2), valid)
    with pytest.raises(ValueError, match="`shift`"):
        apply_scale_shift(pts, torch.ones(2), torch.zeros(2, 2))


# --------------------------------------------------------------------------- normals
def plane_pointmap(normal: torch.Tensor, offset: float, h: int, w: int) -> torch.Tensor:
    """Camera-frame pointmap of the plane ``n . x = offset`` seen by a 60-degree camera."""
    k = torch.tensor([[w / 1.1547, 0.0, w / 2], [0.0, w / 1.1547, h / 2], [0.0, 0.0, 1.0]])
    rays = depth_to_points(torch.ones(1, h, w), k[None])  # z = 1 rays
    depth = offset / (rays @ normal)
    return rays * depth[..., None]


def test_normals_of_a_plane_are_its_normal_towards_the_camera() -> None:
    normal = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, -1.0]), dim=0)
    pts = plane_pointmap(normal, -2.0, 12, 16)  # n . x = -2: n points towards the camera
    normals, valid = normals_from_pointmap(pts)
    assert valid[:, 1:-1, 1:-1].all() and not valid[:, 0].any() and not valid[:, :, -1].any()
    torch.testing.assert_close(
        normals[valid], normal.expand(int(valid.sum()), 3), atol=1e-5, rtol=0
    )
    assert (normals[~valid] == 0).all()
    # fronto-parallel plane: (0, 0, -1)
    normals, _ = normals_from_pointmap(plane_pointmap(torch.tensor([0.0, 0.0, 1.0]), 3.0, 5, 5))
    torch.testing.assert_close(normals[0, 2, 2], torch.tensor([0.0, 0.0, -1.0]))


@given(seeds)
def test_normals_rotate_with_the_pointmap(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.tensor([0.2, 0.1, -1.0]), dim=0)
    pts = plane_pointmap(normal, -1.5, 6, 7)
    motion = random_sim3(1, gen, scale=False)
    normals, valid = normals_from_pointmap(pts)
    moved, moved_valid = normals_from_pointmap(transform_points(motion, pts))
    assert torch.equal(valid, moved_valid)
    torch.testing.assert_close(moved, normals @ motion[0, :3, :3].T, atol=1e-4, rtol=0)


def test_normals_of_a_synthetic_room_are_axis_aligned_and_face_the_camera() -> None:
    clip = synthetic_clip(num_frames=2, height=32, width=32, seed=9)
    normals, valid = normals_from_pointmap(clip.pts3d, clip.valid)
    assert valid.float().mean() > 0.8
    # pixels whose five-point stencil lies on one face of the room or the box (the points share
    # one coordinate) get exactly that face's axis
    p = clip.pts3d
    stencil = torch.stack(
        [p[:, 1:-1, 1:-1], p[:, 1:-1, 2:], p[:, 1:-1, :-2], p[:, 2:, 1:-1], p[:, :-2, 1:-1]]
    )
    spread = stencil.amax(0) - stencil.amin(0)
    on_face = (spread.amin(-1) < 1e-5) & valid[:, 1:-1, 1:-1]
    assert on_face.sum() > 0.75 * valid.sum()
    axis = torch.nn.functional.one_hot(spread.argmin(-1), 3).float()
    inner = normals[:, 1:-1, 1:-1]
    torch.testing.assert_close(inner.abs()[on_face], axis[on_face], atol=1e-5, rtol=0)
    # every valid normal faces the camera that took the pointmap
    to_camera = clip.camera_pose[:, None, None, :3, 3] - clip.pts3d
    assert ((normals * to_camera).sum(-1)[valid] > 0).all()


def test_normals_validity() -> None:
    pts = plane_pointmap(torch.tensor([0.0, 0.0, 1.0]), 2.0, 7, 7).repeat(2, 1, 1, 1)
    valid = torch.ones(2, 7, 7, dtype=torch.bool)
    valid[0, 3, 3] = False  # its 4 neighbours and itself lose their normal
    pts[1, 2, 4] = torch.nan  # non-finite points count as invalid
    _, out = normals_from_pointmap(pts, valid)
    lost = [(3, 3), (2, 3), (4, 3), (3, 2), (3, 4)]
    assert not any(out[0, v, u] for v, u in lost)
    assert int(out[0].sum()) == 25 - len(lost)
    assert int(out[1].sum()) == 25 - 5
    # degenerate tangents: a constant pointmap, or a pointmap collapsed onto a line
    flat, flat_valid = normals_from_pointmap(torch.ones(1, 5, 5, 3))
    assert not flat_valid.any() and (flat == 0).all()
    line = pixel_grid(5, 5)[..., :1].expand(5, 5, 3)[None].contiguous()
    assert not normals_from_pointmap(line)[1].any()
    # images too small for central differences
    assert not normals_from_pointmap(torch.randn(1, 2, 9, 3))[1].any()


@pytest.mark.usefixtures("without_typecheck")
def test_normals_bad_input() -> None:
    with pytest.raises(ValueError, match="`pts`"):
        normals_from_pointmap(torch.randn(4, 4, 3))
    with pytest.raises(ValueError, match="`valid`"):
        normals_from_pointmap(torch.randn(1, 4, 4, 3), torch.ones(1, 4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="`valid`"):
        normals_from_pointmap(torch.randn(1, 4, 4, 3), torch.ones(1, 4, 4))
