"""Scale- and shift-invariant evaluation criterion (official ``Regr3D_t_ScaleShiftInv``).

Aligns the predictions of a sequence to the ground truth with a per-sample median depth shift and
a median-distance scale, then measures the point distances. Used (with ``gt_scale=True``) by the
official evaluation (``norm_mode`` off) and by the official training script's test loop
(``norm_mode="avg_dis"``, ``fix_first=True``); both give the same aligned points up to rounding.

Alignment, per batch element, in frame 0's camera frame:

1. optional normalisation of the predictions by an ``avg_dis`` factor (of frame 0's view-1
   prediction only with ``fix_first=True``, otherwise of one prediction per frame);
2. shift: the median ``z`` of the ground truth over the valid pixels of all ``T`` frames is
   subtracted from ``z`` of the ground truth; the median ``z`` of the predictions (one per frame:
   view 1 of every step, view 2 of the last step) at the same pixels from ``z`` of all ``2 (T-1)``
   prediction pointmaps; ``x`` and ``y`` are not shifted;
3. scale: ``scale`` = median distance of the shifted valid points to their per-coordinate median,
   separately for ground truth and predictions (prediction scale clipped to ``[1e-3, 1e3]``);
   with ``gt_scale=True`` the predictions are multiplied by ``gt_scale / pred_scale`` and the
   ground truth keeps its scale (nothing is centred).

Medians are "lower" medians (the lower middle value for an even count). Shift and scale are
computed without gradient; gradients still flow into the predictions through the alignment.
[`median_scale_shift`][spatialmem.geometry.alignment.median_scale_shift] applies the same
alignment to one pointmap per frame (its medians and scales are
[`masked_median`][spatialmem.geometry.alignment.masked_median] and
[`median_scale`][spatialmem.geometry.alignment.median_scale], shared with this criterion).

Differences from the official code:

* inputs are never modified: the official criterion shifts and scales the prediction tensors it is
  given in place when ``norm_mode`` is off (the model's outputs change under the caller);
* by default the per-term means are taken per sample and averaged over samples and the optional
  ``avg_dis`` factor uses each sample's own valid-pixel count; ``batch_coupled=True`` pools the
  batch as the official code does (the alignment itself is per sample in both);
* ``gt_scale=False`` divides predictions and ground truth by their own median scales (the
  official branch, which no official script uses, multiplies them by ``pred_scale / gt_scale``
  and ``gt_scale / pred_scale``).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from spatialmem._typing import Float, Int
from spatialmem.geometry.alignment import masked_median, median_scale
from spatialmem.losses.base import Criterion, LossOutput
from spatialmem.losses.normalize import (
    avg_distance_factor,
    check_loss_values,
    gt_in_camera0,
    sequence_pred_factor,
)
from spatialmem.losses.regression import (
    NormMode,
    _check_options,
    _conf_mean_all,
    check_some_valid,
    interleave_terms,
    reduce_terms,
    sequence_details,
    term_names,
)
from spatialmem.types import SequenceTarget, StepPredictions, check_matching

__all__ = [
    "ScaleShiftInvariant",
    "ScaleShiftInvariantOutput",
]

_PRED_SCALE_RANGE = (1e-3, 1e3)


def _z_offset(shift_z: Tensor) -> Tensor:
    # [B] -> [B, 1, 1, 1, 3] holding (0, 0, shift_z).
    zeros = torch.zeros_like(shift_z)
    return torch.stack([zeros, zeros, shift_z], dim=-1)[:, None, None, None]


def _expand(x: Tensor) -> Tensor:
    return x[:, None, None, None, None]


@dataclass(frozen=True, eq=False)
class _Alignment:
    """Per-sample shift and scale of the alignment (computed without gradient)."""

    gt_shift: Float[Tensor, "B"]
    pred_shift: Float[Tensor, "B"]
    gt_scale: Float[Tensor, "B"]
    pred_scale: Float[Tensor, "B"]
    pred_mult: Float[Tensor, "B"]
    gt_mult: Float[Tensor, "B"] | None

    def apply(self, gt: Tensor, pts_l: Tensor, pts_r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Shift (``z`` only) and scale the ground truth and the view-1 / view-2 predictions."""
        gt = gt - _z_offset(self.gt_shift)
        if self.gt_mult is not None:
            gt = gt * _expand(self.gt_mult)
        pts_l = (pts_l - _z_offset(self.pred_shift)) * _expand(self.pred_mult)
        pts_r = (pts_r - _z_offset(self.pred_shift)) * _expand(self.pred_mult)
        return gt, pts_l, pts_r


def _alignment(
    gt: Tensor, pts_l: Tensor, pts_r: Tensor, valid: Tensor, *, to_gt_scale: bool
) -> _Alignment:
    """Median depth shifts and median-distance scales of the ground truth and of one prediction
    per frame (view 1 of every step, view 2 of the last step), at the valid pixels."""
    with torch.no_grad():
        frames = torch.cat([pts_l, pts_r[:, -1:]], dim=1).detach()
        gt_shift = masked_median(gt[..., 2], valid)
        pred_shift = masked_median(frames[..., 2], valid)
        gt_scale = median_scale(gt - _z_offset(gt_shift), valid)
        pred_scale = median_scale(frames - _z_offset(pred_shift), valid)
        pred_scale = pred_scale.clamp(*_PRED_SCALE_RANGE)
        if to_gt_scale:
            pred_mult, gt_mult = gt_scale / pred_scale, None
        else:
            pred_mult, gt_mult = 1.0 / pred_scale, 1.0 / gt_scale
    return _Alignment(gt_shift, pred_shift, gt_scale, pred_scale, pred_mult, gt_mult)


def _aligned_distances(
    gt: Tensor, pts_l: Tensor, pts_r: Tensor, valid: Tensor
) -> tuple[Float[Tensor, "B K"], Int[Tensor, "B K"]]:
    """Per-sample, per-term sums of the point distances over the valid pixels and their counts."""
    valid_l, valid_r = valid[:, :-1], valid[:, 1:]
    # Distances on differences zeroed at invalid pixels: exactly zero there, and no gradient
    # (even where the ground truth is not finite).
    diff_l = torch.where(valid_l[..., None], pts_l - gt[:, :-1], 0.0)
    diff_r = torch.where(valid_r[..., None], pts_r - gt[:, 1:], 0.0)
    dist_sum = interleave_terms(
        torch.linalg.vector_norm(diff_l, dim=-1).sum((2, 3)),
        torch.linalg.vector_norm(diff_r, dim=-1).sum((2, 3)),
    )
    count = interleave_terms(valid_l.sum((2, 3)), valid_r.sum((2, 3)))
    return dist_sum, count


@dataclass(eq=False, kw_only=True)
class ScaleShiftInvariantOutput(LossOutput):
    """Result of [`ScaleShiftInvariant`][spatialmem.losses.ScaleShiftInvariant]: aligned point
    clouds and the frame loss.

    ``loss`` is the sum over the ``2 (T - 1)`` terms of the mean distance between aligned
    prediction and ground truth at valid pixels (official ``compute_frame_loss``). ``details``
    holds the official entries (``<log_name>_pts3d_1``, ..., ``<log_name>conf_right``) and the
    batch means ``gt_shift_z``, ``pred_shift_z``, ``gt_scale``, ``pred_scale``.
    """

    gt_pts3d: Float[Tensor, "B T H W 3"]
    """Ground truth in frame 0's camera frame with ``gt_shift_z`` subtracted from ``z``."""
    pts_view1: Float[Tensor, "B S H W 3"]
    """Aligned view-1 predictions (frame ``i`` for step ``i``)."""
    pts_view2: Float[Tensor, "B S H W 3"]
    """Aligned view-2 predictions (frame ``i + 1`` for step ``i``)."""
    term_names: tuple[str, ...]
    """``("L0", "L1", "R1", ..., "R<T-1>")``."""
    term_dist: Float[Tensor, "K"]
    """Mean aligned distance of each term (``loss = term_dist.sum()``)."""
    term_valid: Int[Tensor, "K"]
    """Valid pixels of each term over the whole batch."""
    gt_shift_z: Float[Tensor, "B"]
    """Median ground-truth depth subtracted from the ground truth (add it back to both clouds to
    return to frame 0's camera frame, as the official evaluation does)."""
    pred_shift_z: Float[Tensor, "B"]
    """Median predicted depth (after the optional normalisation) subtracted from the predictions."""
    gt_scale: Float[Tensor, "B"]
    """Median-distance scale of the shifted ground truth."""
    pred_scale: Float[Tensor, "B"]
    """Median-distance scale of the shifted predictions, clipped to ``[1e-3, 1e3]``."""
    pr_factor: Float[Tensor, "B"] | None
    """``avg_dis`` factor the predictions were first divided by (``None`` without normalisation)."""
    per_sample: Float[Tensor, "B"] | None
    """Each sample's frame loss (``loss`` is their mean); ``None`` when batch-coupled."""

    def frame_pts3d(self) -> Float[Tensor, "B T H W 3"]:
        """One aligned pointmap per frame: view 1 of step ``t`` for ``t < T - 1``, view 2 of the
        last step for the last frame (what the official evaluation compares)."""
        return torch.cat([self.pts_view1, self.pts_view2[:, -1:]], dim=1)


class ScaleShiftInvariant(Criterion):
    """Scale/shift-invariant point regression for evaluation (see the module docstring).

    Args:
        norm_mode: ``"avg_dis"`` (class default, the official training-script test criterion)
            or ``"none"`` (the official evaluation script, ``norm_mode=False`` there).
        fix_first: with ``norm_mode="avg_dis"``, compute the prediction factor from frame 0's
            view-1 prediction only (official default) instead of one prediction per frame.
        gt_scale: bring the predictions to the ground-truth scale (official setting); ``False``
            divides both by their own median scale.
        batch_coupled: reproduce the official batch coupling (batch-wide valid-pixel count in the
            ``avg_dis`` factor, term means pooled over the batch).
        log_name: prefix of the official ``details`` keys.

    Shapes: ``pred`` is a [`StepPredictions`][spatialmem.types.StepPredictions] ``[B, S, H, W, 3]``,
    ``target`` a [`SequenceTarget`][spatialmem.types.SequenceTarget] with ``T = S + 1`` frames.
    Every sample needs at least one valid pixel (otherwise its medians are NaN).
    """

    def __init__(
        self,
        *,
        norm_mode: NormMode = "avg_dis",
        fix_first: bool = True,
        gt_scale: bool = True,
        batch_coupled: bool = False,
        log_name: str = "Regr3D_t_ScaleShiftInv",
    ) -> None:
        super().__init__()
        _check_options(norm_mode, 0.0)
        self.norm_mode = norm_mode
        self.fix_first = fix_first
        self.gt_scale = gt_scale
        self.batch_coupled = batch_coupled
        self.log_name = log_name

    def forward(self, pred: StepPredictions, target: SequenceTarget) -> ScaleShiftInvariantOutput:
        """Align the predictions and compute the frame loss (inputs are left untouched)."""
        check_matching(pred, target)
        check_some_valid(target.valid)
        check_loss_values(pred, target)
        valid = target.valid
        gt = gt_in_camera0(target.pts3d, target.camera_pose0)
        pts_l, pts_r, pr_factor = self._normalised_predictions(pred, valid)
        alignment = _alignment(gt, pts_l, pts_r, valid, to_gt_scale=self.gt_scale)
        gt, pts_l, pts_r = alignment.apply(gt, pts_l, pts_r)
        dist_sum, count = _aligned_distances(gt, pts_l, pts_r, valid)
        dist, dist_ps = reduce_terms(dist_sum, count, batch_coupled=self.batch_coupled)
        names = term_names(pred.num_frames)
        details = sequence_details(self.log_name, names, dist, _conf_mean_all(pred))
        details.update(
            gt_shift_z=alignment.gt_shift.mean(),
            pred_shift_z=alignment.pred_shift.mean(),
            gt_scale=alignment.gt_scale.mean(),
            pred_scale=alignment.pred_scale.mean(),
        )
        return ScaleShiftInvariantOutput(
            loss=dist.sum(),
            details=details,
            gt_pts3d=gt,
            pts_view1=pts_l,
            pts_view2=pts_r,
            term_names=names,
            term_dist=dist,
            term_valid=count.sum(0),
            gt_shift_z=alignment.gt_shift,
            pred_shift_z=alignment.pred_shift,
            gt_scale=alignment.gt_scale,
            pred_scale=alignment.pred_scale,
            pr_factor=pr_factor,
            per_sample=None if self.batch_coupled else dist_ps.sum(1),
        )

    def _normalised_predictions(
        self, pred: StepPredictions, valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The view-1 / view-2 points divided by the ``avg_dis`` factor (``norm_mode="avg_dis"``;
        of frame 0's view 1 only with ``fix_first``) and that factor (``None`` without one)."""
        pts_l, pts_r = pred.pts_view1, pred.pts_view2
        if self.norm_mode != "avg_dis":
            return pts_l, pts_r, None
        if self.fix_first:
            pr_factor = avg_distance_factor(
                pts_l[:, :1], valid[:, :1], batch_coupled=self.batch_coupled
            )
        else:
            pr_factor = sequence_pred_factor(pred, valid, batch_coupled=self.batch_coupled)
        return pts_l / _expand(pr_factor), pts_r / _expand(pr_factor), pr_factor

    def extra_repr(self) -> str:
        return (
            f"norm_mode={self.norm_mode!r}, fix_first={self.fix_first}, "
            f"gt_scale={self.gt_scale}, batch_coupled={self.batch_coupled}"
        )
