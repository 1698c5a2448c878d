"""Losses: hand-computed values, properties (hypothesis), composition and input validation."""

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import assert_close
from spatialmem import value_checks
from spatialmem.interop import sequence_target_from_official, step_predictions_from_official
from spatialmem.losses import (
    CombinedCriterion,
    ConfidenceRegression,
    PointRegression,
    ScaleLoss,
    ScaleShiftInvariant,
    SequenceTarget,
    Spann3RLoss,
    StepPredictions,
    alpha_schedule,
    avg_distance_factor,
    masked_median,
    scale_loss,
    term_names,
)

# ----------------------------------------------------------------------------- helpers


def _points_on_z(z: list[list[float]]) -> torch.Tensor:
    """[H, W] depths -> [H, W, 3] points (0, 0, z)."""
    zt = torch.tensor(z, dtype=torch.float32)
    return torch.stack([torch.zeros_like(zt), torch.zeros_like(zt), zt], dim=-1)


def _random_rotation(g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_problem(seed: int, b: int, s: int, h: int, w: int, p_valid: float = 0.7):
    """Random predictions and ground truth; every sample has at least one valid pixel."""
    g = torch.Generator().manual_seed(seed)
    t = s + 1
    cam = torch.randn(b, t, h, w, 3, generator=g) + torch.tensor([0.0, 0.0, 4.0])
    pose = torch.eye(4).repeat(b, 1, 1)
    for i in range(b):
        pose[i, :3, :3] = _random_rotation(g)
        pose[i, :3, 3] = torch.randn(3, generator=g)
    rotated = torch.einsum("bij,bthwj->bthwi", pose[:, :3, :3], cam)
    world = rotated + pose[:, None, None, None, :3, 3]
    valid = torch.rand(b, t, h, w, generator=g) < p_valid
    valid[:, 0, 0, 0] = True

    def pts() -> torch.Tensor:
        return torch.randn(b, s, h, w, 3, generator=g) + torch.tensor([0.0, 0.0, 3.0])

    def conf() -> torch.Tensor:
        return 1 + torch.exp(torch.randn(b, s, h, w, generator=g))

    pred = StepPredictions(pts(), conf(), pts(), conf())
    return pred, SequenceTarget(world, valid, pose)


def _scaled_scene(target: SequenceTarget, m: float) -> SequenceTarget:
    pose = target.camera_pose0.clone()
    pose[:, :3, 3] *= m
    return SequenceTarget(target.pts3d * m, target.valid, pose)


def _select(pred: StepPredictions, target: SequenceTarget, b: int):
    sl = slice(b, b + 1)
    return (
        StepPredictions(
            pred.pts_view1[sl], pred.conf_view1[sl], pred.pts_view2[sl], pred.conf_view2[sl]
        ),
        SequenceTarget(target.pts3d[sl], target.valid[sl], target.camera_pose0[sl]),
    )


def _leaves(pred: StepPredictions) -> StepPredictions:
    return StepPredictions(
        *(x.detach().clone().requires_grad_(True) for x in (
            pred.pts_view1, pred.conf_view1, pred.pts_view2, pred.conf_view2
        ))
    )  # fmt: skip


problems = st.tuples(
    st.integers(0, 2**16), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
    st.integers(1, 4),
)  # fmt: skip


# ----------------------------------------------------------------------------- hand-computed


def _hand_example() -> tuple[StepPredictions, SequenceTarget]:
    """B = 1, S = 1 (T = 2), H = W = 2; identity pose, every point on the z axis."""
    gt = torch.stack([_points_on_z([[1, 1], [1, 1]]), _points_on_z([[2, 2], [2, 50]])])
    valid = torch.tensor([[[True, True], [True, True]], [[True, True], [True, False]]])
    left = _points_on_z([[1, 2], [3, 2]])[None]
    right = _points_on_z([[3, 3], [3, 100]])[None]
    conf_view1 = torch.tensor([[[1.0, 2.0], [1.0, 2.0]]])
    conf_view2 = torch.tensor([[[3.0, 3.0], [3.0, 100.0]]])
    pred = StepPredictions(left[None], conf_view1[None], right[None], conf_view2[None])
    return pred, SequenceTarget(gt[None], valid[None], torch.eye(4)[None])


def test_hand_computed_training_loss():
    pred, target = _hand_example()
    alpha = 0.4
    # Factors over the 7 valid pixels: gt 4 * 1 + 3 * 2 = 10, prediction (1+2+3+2) + 3 * 3 = 17.
    gt_f, pr_f = 10 / 7, 17 / 7
    # L0: frame 0, 4 valid pixels; R1: frame 1, 3 valid pixels (the fourth is ignored).
    d_left = [abs(z / pr_f - 1 / gt_f) for z in (1, 2, 3, 2)]
    c_left = [1.0, 2.0, 1.0, 2.0]
    term_l0 = sum(d * c - alpha * math.log(c) for d, c in zip(d_left, c_left, strict=True)) / 4
    term_r1 = abs(3 / pr_f - 2 / gt_f) * 3 - alpha * math.log(3)
    conf_loss = (term_l0 + term_r1) / 1  # sum of terms / (T - 1)
    scale = pr_f - gt_f  # = 1: the prediction is too large
    for coupled in (False, True):  # B = 1: both modes agree
        out = Spann3RLoss(alpha, batch_coupled=coupled)(pred, target)
        assert out.term_names == ("L0", "R1")
        assert_close(out.terms, torch.tensor([term_l0, term_r1]), what="terms")
        assert_close(out.conf_loss, torch.tensor(conf_loss), what="conf loss")
        assert_close(out.scale_loss, torch.tensor(scale), what="scale loss")
        assert_close(out.loss, torch.tensor(conf_loss + scale), what="total")
        assert out.term_valid.tolist() == [4, 3]
        assert_close(out.pr_factor, torch.tensor([pr_f]))
        assert_close(out.gt_factor, torch.tensor([gt_f]))
        assert_close(out.details["conf_loss_1"], torch.tensor(2 * term_l0))
        assert_close(out.details["conf_loss2"], torch.tensor(2 * term_r1))
        # conf_mean: mean over terms of the mean confidence at valid pixels.
        assert_close(out.details["conf_mean"], torch.tensor((1.5 + 3.0) / 2))


def test_hand_computed_scale_term_official_vs_per_sample():
    pr, gt = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 2.0])
    official, per, sel = scale_loss(pr, gt, batch_coupled=True)
    # Only element 0 selected; official compares it with *both* gt factors: (2 + 1) / 2.
    assert_close(official, torch.tensor(1.5))
    assert per is None and sel.tolist() == [True, False]
    default, per, _ = scale_loss(pr, gt)
    assert_close(default, torch.tensor(1.0))  # (max(0, 3-1) + max(0, 1-2)) / 2
    assert per is not None and per.tolist() == [2.0, 0.0]
    both = scale_loss(torch.tensor([3.0, 4.0]), gt, batch_coupled=True)[0]
    assert_close(both, torch.tensor((2 + 1 + 3 + 2) / 4))
    none, _, sel = scale_loss(torch.tensor([0.5, 1.0]), gt, batch_coupled=True)
    assert not sel.any() and isinstance(none, torch.Tensor) and float(none) == 0.0


def test_hand_computed_scale_shift_invariant():
    """Ground truth z 1..6, predictions 2x farther: perfectly aligned after shift and scale."""
    gt = torch.stack([_points_on_z([[1, 2, 3]]), _points_on_z([[4, 5, 6]])])[None]
    pred_l = _points_on_z([[2, 4, 6]])[None, None]
    pred_r = _points_on_z([[8, 10, 12]])[None, None]
    conf = torch.ones(1, 1, 1, 3)
    pred = StepPredictions(pred_l, conf, pred_r, conf)
    target = SequenceTarget(gt, torch.ones(1, 2, 1, 3, dtype=torch.bool), torch.eye(4)[None])
    out = ScaleShiftInvariant(norm_mode="none")(pred, target)
    # Lower medians: gt z 3; shifted |z| = 2,1,0,1,2,3 -> 1. Predictions: z 6, scale 2.
    assert_close(out.gt_shift_z, torch.tensor([3.0]))
    assert_close(out.pred_shift_z, torch.tensor([6.0]))
    assert_close(out.gt_scale, torch.tensor([1.0]))
    assert_close(out.pred_scale, torch.tensor([2.0]))
    assert_close(out.frame_pts3d(), out.gt_pts3d)
    assert_close(out.gt_pts3d[0, :, 0, :, 2], torch.tensor([[-2.0, -1, 0], [1, 2, 3]]))
    assert_close(out.loss, torch.tensor(0.0))


def test_masked_median_is_lower_median():
    values = torch.tensor([[4.0, 1.0, 3.0, 2.0, 100.0]])
    valid = torch.tensor([[True, True, True, True, False]])
    assert masked_median(values, valid).tolist() == [2.0]


def test_avg_distance_factor_modes():
    pts = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], [[0.0, 0.0, 2.0], [9.0, 9.0, 9.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    assert_close(avg_distance_factor(pts, valid), torch.tensor([3.0, 2.0]))
    # Official: the batch-wide count (3) for every element.
    assert_close(avg_distance_factor(pts, valid, batch_coupled=True), torch.tensor([2.0, 2 / 3]))


def test_term_names_and_alpha_schedule():
    assert term_names(2) == ("L0", "R1")
    assert term_names(5) == ("L0", "L1", "R1", "L2", "R2", "L3", "R3", "R4")
    assert alpha_schedule(0) == pytest.approx(0.4)
    assert alpha_schedule(60) == pytest.approx(0.4)
    assert alpha_schedule(90) == pytest.approx(0.3)
    assert alpha_schedule(120) == pytest.approx(0.2)
    assert alpha_schedule(500) == pytest.approx(0.2)
    assert alpha_schedule(15, total_epochs=20, start=1.0, end=0.0) == pytest.approx(0.5)


def test_step_predictions_from_official_layout():
    b, s, h, w = 2, 3, 2, 2
    pl, pr = torch.randn(b, s, h, w, 3), torch.randn(b, s, h, w, 3)
    cl, cr = torch.rand(b, s, h, w) + 1, torch.rand(b, s, h, w) + 1
    preds_all = [
        [
            {("pts3d" if i == 0 else "pts3d_in_other_view"): pl[:, i], "conf": cl[:, i]},
            {"pts3d_in_other_view": pr[:, i], "conf": cr[:, i]},
        ]
        for i in range(s)
    ]
    pred = step_predictions_from_official(preds_all)
    assert torch.equal(pred.pts_view1, pl) and torch.equal(pred.conf_view2, cr)
    assert pred.num_steps == s and pred.num_frames == s + 1
    frames = pred.frame_pts3d()
    assert frames.shape == (b, s + 1, h, w, 3)
    assert torch.equal(frames[:, -1], pr[:, -1]) and torch.equal(frames[:, 0], pl[:, 0])
    with pytest.raises(ValueError, match="at least one step"):
        step_predictions_from_official([])
    with pytest.raises(KeyError, match=r"preds_all\[0\]\[1\] has neither"):
        step_predictions_from_official([[preds_all[0][0], {"conf": cr[:, 0]}]])
    with pytest.raises(ValueError, match="at least one view"):
        sequence_target_from_official([])


# ----------------------------------------------------------------------------- properties


@given(problems, st.floats(0.01, 100.0), st.booleans())
def test_normalised_regression_invariant_to_gt_scale(problem, m, coupled):
    pred, target = random_problem(*problem)
    criterion = ConfidenceRegression(0.4, batch_coupled=coupled)
    ref = criterion(pred, target)
    out = criterion(pred, _scaled_scene(target, m))
    assert_close(out.loss, ref.loss, what="conf loss under gt scale")
    assert_close(out.terms, ref.terms, what="terms under gt scale")
    assert_close(out.gt_factor, ref.gt_factor * m, what="gt factor scales")


@given(problems)
def test_per_sample_default_independent_of_batch_mates(problem):
    pred, target = random_problem(*problem)
    criterion = Spann3RLoss(0.4)
    out = criterion(pred, target)
    assert out.per_sample is not None
    for b in range(pred.pts_view1.shape[0]):
        alone = criterion(*_select(pred, target, b))
        assert_close(out.per_sample[b], alone.loss, what=f"sample {b}")
        assert_close(out.pr_factor[b], alone.pr_factor[0], what=f"pr factor {b}")
    assert_close(out.loss, out.per_sample.mean())
    evaluator = ScaleShiftInvariant()
    ev = evaluator(pred, target)
    assert ev.per_sample is not None
    for b in range(pred.pts_view1.shape[0]):
        alone = evaluator(*_select(pred, target, b))
        assert_close(ev.per_sample[b], alone.loss, what=f"eval sample {b}")
        assert_close(ev.pts_view1[b], alone.pts_view1[0], what=f"aligned {b}")


@given(problems, st.booleans())
def test_gradients_finite_and_zero_at_invalid_pixels(problem, coupled):
    pred, target = random_problem(*problem)
    invalid = ~target.valid
    # Garbage at invalid pixels must not leak into values or gradients.
    gt = target.pts3d.masked_fill(invalid[..., None], float("nan"))
    target = SequenceTarget(gt, target.valid, target.camera_pose0)
    pred = _leaves(pred)
    with torch.no_grad():
        pred.pts_view1[invalid[:, :-1]] = float("inf")
        pred.conf_view2[invalid[:, 1:]] = float("nan")
    out = Spann3RLoss(0.4, batch_coupled=coupled)(pred, target)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, inv in (
        ("pts_view1", invalid[:, :-1]), ("conf_view1", invalid[:, :-1]),
        ("pts_view2", invalid[:, 1:]), ("conf_view2", invalid[:, 1:]),
    ):  # fmt: skip
        grad = getattr(pred, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
        mask = inv if grad.ndim == 4 else inv[..., None].expand_as(grad)
        assert torch.all(grad[mask] == 0), name


@given(problems, st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_scale_shift_invariant_alignment_ignores_pred_scale_and_depth_shift(problem, s, c):
    pred, target = random_problem(*problem)
    # With fewer than 3 valid points the median spread can be 0 and the prediction scale hits its
    # clip (1e-3), where the alignment is no longer scale-invariant by construction.
    assume(int(target.valid.sum(dim=(1, 2, 3)).min()) >= 3)
    shift = torch.tensor([0.0, 0.0, c])
    moved = StepPredictions(
        pred.pts_view1 * s + shift, pred.conf_view1, pred.pts_view2 * s + shift, pred.conf_view2
    )
    for criterion in (ScaleShiftInvariant(norm_mode="none"), ScaleShiftInvariant()):
        ref, out = criterion(pred, target), criterion(moved, target)
        tol = 1e-4 * max(1.0, float(ref.pts_view1.abs().max()))
        assert_close(out.pts_view1, ref.pts_view1, tol=tol, what="aligned left")
        assert_close(out.pts_view2, ref.pts_view2, tol=tol, what="aligned right")
        assert_close(out.loss, ref.loss, what="frame loss")


def test_point_regression_is_confidence_regression_without_confidence():
    pred, target = random_problem(3, 2, 2, 3, 3)
    ones = torch.ones_like(pred.conf_view1)
    flat = StepPredictions(pred.pts_view1, ones, pred.pts_view2, ones)
    a = PointRegression()(pred, target)
    b = ConfidenceRegression(alpha=0.0)(flat, target)
    assert_close(a.loss, b.loss)
    assert_close(a.terms, b.term_dist)


def test_scale_shift_invariant_does_not_modify_inputs():
    pred, target = random_problem(5, 2, 2, 3, 3)
    copies = [x.clone() for x in (pred.pts_view1, pred.pts_view2, pred.conf_view1, target.pts3d)]
    ScaleShiftInvariant(norm_mode="none", batch_coupled=True)(pred, target)
    originals = (pred.pts_view1, pred.pts_view2, pred.conf_view1, target.pts3d)
    for x, y in zip(originals, copies, strict=True):
        assert torch.equal(x, y)


# ----------------------------------------------------------------------------- composition


def test_composition_matches_training_loss():
    pred, target = random_problem(11, 3, 2, 4, 4)
    full = Spann3RLoss(0.4, scale_weight=0.5)(pred, target)
    combined = ConfidenceRegression(0.4) + 0.5 * ScaleLoss()
    out = combined(pred, target)
    assert isinstance(combined, CombinedCriterion)
    assert combined.weights == {"ConfidenceRegression": 1.0, "ScaleLoss": 0.5}
    assert_close(out.loss, full.loss)
    assert_close(out.parts["ConfidenceRegression"].loss, full.conf_loss)
    assert_close(out.parts["ScaleLoss"].loss, full.scale_loss)
    assert "ConfidenceRegression.conf_loss_1" in out.details
    assert_close(out.details["ScaleLoss"], full.scale_loss.detach())


def test_composition_algebra():
    a, b = ConfidenceRegression(0.4), ScaleLoss()
    assert (2 * (a + b)).weights == {"ConfidenceRegression": 2.0, "ScaleLoss": 2.0}
    assert (a * 3).weights == {"ConfidenceRegression": 3.0}
    assert (a - b).weights == {"ConfidenceRegression": 1.0, "ScaleLoss": -1.0}
    assert sum([a, b]).weights == {"ConfidenceRegression": 1.0, "ScaleLoss": 1.0}
    assert list((a + a).weights) == ["ConfidenceRegression", "ConfidenceRegression_1"]
    pred, target = random_problem(1, 1, 1, 2, 2)
    assert_close((a + a)(pred, target).loss, 2 * a(pred, target).loss)
    with pytest.raises(TypeError):
        a * "2"
    with pytest.raises(TypeError):
        a + 1


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.usefixtures("without_typecheck")
def test_bad_predictions_are_rejected():
    pts, conf = torch.zeros(1, 2, 3, 3, 3), torch.ones(1, 2, 3, 3)
    with pytest.raises(ValueError, match="pts_view1"):
        StepPredictions(torch.zeros(1, 2, 3, 3, 2), conf, pts, conf)
    with pytest.raises(ValueError, match="conf_view2"):
        StepPredictions(pts, conf, pts, torch.ones(1, 2, 3, 4))
    with pytest.raises(TypeError, match="pts_view2"):
        StepPredictions(pts, conf, pts.long(), conf)
    with pytest.raises(ValueError, match="at least one step"):
        StepPredictions(pts[:, :0], conf[:, :0], pts[:, :0], conf[:, :0])


@pytest.mark.usefixtures("without_typecheck")
def test_bad_targets_are_rejected():
    pts, valid, pose = torch.zeros(2, 3, 4, 4, 3), torch.ones(2, 3, 4, 4, dtype=torch.bool), None
    pose = torch.eye(4).repeat(2, 1, 1)
    with pytest.raises(TypeError, match=r"valid.*torch\.bool"):
        SequenceTarget(pts, valid.to(torch.uint8), pose)
    with pytest.raises(ValueError, match="valid"):
        SequenceTarget(pts, valid[:, :, :3], pose)
    with pytest.raises(ValueError, match="camera_pose0"):
        SequenceTarget(pts, valid, torch.eye(4).repeat(3, 1, 1))
    with pytest.raises(ValueError, match="at least 2 frames"):
        SequenceTarget(pts[:, :1], valid[:, :1], pose)


@pytest.mark.usefixtures("without_typecheck")
def test_mismatched_pred_and_target_are_rejected():
    pred, _ = random_problem(0, 2, 2, 3, 3)
    _, target = random_problem(0, 2, 3, 3, 3)
    for criterion in (Spann3RLoss(), ScaleLoss(), ScaleShiftInvariant(), PointRegression()):
        with pytest.raises(ValueError, match="do not match"):
            criterion(pred, target)


@pytest.mark.usefixtures("without_typecheck")
def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="norm_mode"):
        ConfidenceRegression(norm_mode="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        ConfidenceRegression(alpha=-1.0)
    with pytest.raises(ValueError, match="total_epochs"):
        alpha_schedule(3, total_epochs=0)


def test_sample_without_valid_pixel():
    pred, target = random_problem(2, 2, 2, 3, 3)
    valid = target.valid.clone()
    valid[1] = False
    target = SequenceTarget(target.pts3d, valid, target.camera_pose0)
    with pytest.raises(ValueError, match=r"no valid pixel for batch element\(s\) \[1\]"):
        Spann3RLoss()(pred, target)
    with pytest.raises(ValueError, match="no valid pixel"):
        ScaleShiftInvariant()(pred, target)
    with value_checks(False):  # documented behaviour: the sample contributes 0
        out = Spann3RLoss()(pred, target)
    assert out.per_sample is not None and float(out.per_sample[1]) == 0.0
    assert torch.isfinite(out.loss)


def _exact_prediction(target: SequenceTarget, scale: float = 1.0) -> StepPredictions:
    """Predictions equal to the ground truth in frame 0's camera (times ``scale``)."""
    from spatialmem.losses import gt_in_camera0

    gt = gt_in_camera0(target.pts3d, target.camera_pose0) * scale
    conf = torch.full(gt.shape[:-1], 2.0)[:, 1:]
    return StepPredictions(gt[:, :-1].clone(), conf.clone(), gt[:, 1:].clone(), conf.clone())


def test_frame_scale_term_is_zero_for_exact_predictions_at_any_scale():
    _, target = random_problem(3, 2, 3, 4, 5)
    for scale in (1.0, 0.3, 7.0):  # the clip's scale is the regression's business, not this term's
        out = Spann3RLoss(frame_scale_weight=1.0)(_exact_prediction(target, scale), target)
        assert out.frame_scale_loss is not None
        assert float(out.frame_scale_loss) == pytest.approx(0.0, abs=1e-5)
    assert Spann3RLoss()(_exact_prediction(target), target).frame_scale_loss is None


def test_frame_scale_term_penalises_a_shrunken_frame_by_its_log_ratio():
    _, target = random_problem(4, 1, 2, 4, 4, p_valid=1.0)
    pred = _exact_prediction(target)
    frames = pred.frame_pts3d()
    frames[:, 1] *= 0.5  # frame 1 predicted at half its size (view 1 of step 1)
    shrunk = StepPredictions(frames[:, :-1], pred.conf_view1, pred.pts_view2, pred.conf_view2)
    base = Spann3RLoss()(shrunk, target)
    out = Spann3RLoss(frame_scale_weight=2.0)(shrunk, target)

    # spreads about each frame's centroid, after dividing by each clip's mean distance to the origin
    def spreads(points: torch.Tensor) -> torch.Tensor:  # [T, H, W, 3] -> [T]
        points = points / torch.linalg.vector_norm(points, dim=-1).mean()
        centred = points - points.mean(dim=(1, 2), keepdim=True)
        return torch.linalg.vector_norm(centred, dim=-1).mean(dim=(1, 2))

    ratio = spreads(frames[0]) / spreads(_exact_prediction(target).frame_pts3d()[0])
    want = ratio.log().abs().mean()
    assert float(out.frame_scale_loss) == pytest.approx(float(want), rel=1e-4)
    assert float(out.loss) == pytest.approx(float(base.loss + 2.0 * want), rel=1e-4)
    assert out.per_sample is not None
    assert float(out.per_sample[0]) == pytest.approx(float(out.loss), rel=1e-5)
    with pytest.raises(ValueError, match="frame_scale_weight"):
        Spann3RLoss(frame_scale_weight=-1.0)
