"""Ground truth in the reference camera and normalisation by average distance (``avg_dis``).

The normalisation factor of a set of pointmaps is the mean Euclidean distance of its valid points
to the origin. Two ways to take that mean:

* per sample (default, ``batch_coupled=False``): element ``b``'s distances summed over its valid
  pixels, divided by *its own* valid-pixel count, so a sample's factor does not depend on its
  batch-mates;
* ``batch_coupled=True`` (the official code): the same sum divided by the valid-pixel count of the
  *whole batch*, so every factor shrinks with the batch size and depends on the other elements
  (A7: element 0's factor is 5.07 in its batch of two, 9.82 alone). For ``B = 1`` both agree.

In both cases the denominator gets ``+ 1e-8`` and the factor is clipped below at ``1e-8``, as in
the official code.
"""

import torch
from torch import Tensor

from spatialmem._checks import checks_active, value_checks_enabled
from spatialmem._typing import Bool, Float, Int
from spatialmem.geometry.camera import points_in_camera
from spatialmem.geometry.transforms import check_rigid
from spatialmem.types import SequenceTarget, StepPredictions, check_matching

__all__ = [
    "avg_distance_factor",
    "factor_from_sums",
    "gt_in_camera0",
    "sequence_factors",
    "sequence_pred_factor",
]

_EPS = 1e-8


def _values_checked() -> bool:
    return value_checks_enabled() and checks_active()


def _check_finite_at(name: str, x: Tensor, valid: Tensor) -> None:
    bad = ~torch.isfinite(x)
    if bad.ndim > valid.ndim:
        bad = bad.flatten(valid.ndim).any(-1)
    bad = bad & valid
    if bool(bad.any()):
        first = tuple(torch.nonzero(bad)[0].tolist())
        raise ValueError(
            f"`{name}` holds NaN/Inf at {int(bad.sum())} valid pixel(s) (first at index {first}, "
            f"shape {tuple(x.shape)}); the loss would be NaN. Mark such pixels invalid in "
            "`SequenceTarget.valid`, or disable this check with spatialmem.set_value_checks(False)"
        )


def check_loss_values(pred: StepPredictions, target: SequenceTarget) -> None:
    """Value checks of the losses' inputs (skipped when value checks are off or the call comes
    from inside the library): predictions and ground truth finite at valid pixels, and a rigid
    ``camera_pose0``. Invalid pixels may hold anything (they never reach the loss).

    Raises:
        ValueError: naming the offending field.
    """
    if not _values_checked():
        return
    valid = target.valid
    check_rigid("SequenceTarget.camera_pose0", target.camera_pose0)
    _check_finite_at("SequenceTarget.pts3d", target.pts3d, valid)
    _check_finite_at("StepPredictions.pts_view1", pred.pts_view1, valid[:, :-1])
    _check_finite_at("StepPredictions.pts_view2", pred.pts_view2, valid[:, 1:])


def check_confidence_values(pred: StepPredictions, target: SequenceTarget) -> None:
    """Value check of the confidence-weighted losses: confidences at valid pixels are finite and
    ``>= 1`` (the heads' ``1 + exp(x)``; below 1 the ``-alpha log C`` term is unbounded).

    Raises:
        ValueError: naming the offending field and its smallest value.
    """
    check_matching(pred, target)
    if not _values_checked():
        return
    valid = target.valid
    for name, conf, mask in (
        ("StepPredictions.conf_view1", pred.conf_view1, valid[:, :-1]),
        ("StepPredictions.conf_view2", pred.conf_view2, valid[:, 1:]),
    ):
        _check_finite_at(name, conf, mask)
        low = (conf < 1) & mask
        if bool(low.any()):
            raise ValueError(
                f"`{name}` must be >= 1 at valid pixels (confidences are 1 + exp(x)), got "
                f"{int(low.sum())} value(s) below 1 (smallest {float(conf[mask].min()):g}); the "
                "confidence-weighted loss would be unbounded (inf for 0). Disable this check with "
                "spatialmem.set_value_checks(False) if intended"
            )


def gt_in_camera0(
    pts3d: Float[Tensor, "B T H W 3"], camera_pose0: Float[Tensor, "B 4 4"]
) -> Float[Tensor, "B T H W 3"]:
    """Map world points of every frame into the camera frame of frame 0.

    The losses' name for [`points_in_camera`][spatialmem.geometry.camera.points_in_camera]
    (exact rigid inverse of the pose).

    Args:
        pts3d: world points.
        camera_pose0: rigid camera-to-world pose of frame 0 of each element.

    Returns:
        ``inverse(camera_pose0[b]) @ [pts3d[b], 1]`` for every point (a new tensor).
    """
    return points_in_camera(pts3d, camera_pose0)


def factor_from_sums(
    dist_sum: Float[Tensor, "B"], count: Int[Tensor, "B"], *, batch_coupled: bool = False
) -> Float[Tensor, "B"]:
    """Average-distance factor from per-sample sums of distances and valid-pixel counts.

    Args:
        dist_sum: sum of the point norms over each sample's valid pixels.
        count: number of valid pixels of each sample.
        batch_coupled: divide by the whole batch's count (official) instead of each sample's.

    Returns:
        ``dist_sum / (count + 1e-8)`` clipped below at ``1e-8``.
    """
    denom = count.sum() if batch_coupled else count
    return (dist_sum / (denom.to(dist_sum.dtype) + _EPS)).clamp_min(_EPS)


def _masked_norm_sum(
    pts: Float[Tensor, "B *rest 3"], valid: Bool[Tensor, "B *rest"]
) -> Float[Tensor, "B"]:
    dist = torch.where(valid, torch.linalg.vector_norm(pts, dim=-1), 0.0)
    return dist.flatten(1).sum(1)


def avg_distance_factor(
    pts3d: Float[Tensor, "B *rest 3"],
    valid: Bool[Tensor, "B *rest"],
    *,
    batch_coupled: bool = False,
) -> Float[Tensor, "B"]:
    """Mean distance to the origin of each sample's valid points (the ``avg_dis`` factor).

    Args:
        pts3d: points of each sample, any number of frames/pixels (e.g. ``[B, T, H, W, 3]``).
        valid: which points count.
        batch_coupled: official batch-wide valid-pixel count (see the module docstring).

    Returns:
        One factor per sample; gradients flow into the valid points.
    """
    count = valid.flatten(1).sum(1)
    return factor_from_sums(_masked_norm_sum(pts3d, valid), count, batch_coupled=batch_coupled)


def sequence_pred_factor(
    pred: StepPredictions, valid: Bool[Tensor, "B T H W"], *, batch_coupled: bool = False
) -> Float[Tensor, "B"]:
    """``avg_dis`` factor of the predictions of a sequence.

    Uses one prediction per frame (the "normalising" set of the official code): the view-1
    points of every step (frames ``0 .. T-2``) and the view-2 points of the last step (frame
    ``T-1``), at the ground-truth valid pixels. The view-2 predictions of interior frames do not
    enter the factor (but are divided by it like all others).

    Args:
        pred: the step predictions.
        valid: ground-truth valid pixels of the ``T`` frames.
        batch_coupled: official batch-wide valid-pixel count.
    """
    return _sequence_factor(pred.pts_view1, pred.pts_view2[:, -1], valid, batch_coupled)


def _sequence_factor(
    pts_view1: Tensor, pts_last: Tensor, valid: Tensor, batch_coupled: bool
) -> Tensor:
    dist_sum = _masked_norm_sum(pts_view1, valid[:, :-1]) + _masked_norm_sum(pts_last, valid[:, -1])
    count = valid.flatten(1).sum(1)
    return factor_from_sums(dist_sum, count, batch_coupled=batch_coupled)


def sequence_factors(
    pred: StepPredictions, target: SequenceTarget, *, batch_coupled: bool = False
) -> tuple[Float[Tensor, "B"], Float[Tensor, "B"]]:
    """Prediction and ground-truth ``avg_dis`` factors of a sequence.

    Args:
        pred: step predictions (the factor uses one prediction per frame, see
            [`sequence_pred_factor`][spatialmem.losses.sequence_pred_factor]).
        target: ground truth; its points are first mapped into frame 0's camera frame.
        batch_coupled: official batch-wide valid-pixel count.

    Returns:
        ``(pr_factor [B], gt_factor [B])``; ``gt_factor`` carries no gradient.
    """
    check_matching(pred, target)
    check_loss_values(pred, target)
    with torch.no_grad():
        gt = gt_in_camera0(target.pts3d, target.camera_pose0)
        gt_factor = avg_distance_factor(gt, target.valid, batch_coupled=batch_coupled)
    pr_factor = sequence_pred_factor(pred, target.valid, batch_coupled=batch_coupled)
    return pr_factor, gt_factor
