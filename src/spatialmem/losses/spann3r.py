"""Spann3R's training objective (paper Eq. 10): confidence-aware regression plus scale loss."""

from dataclasses import dataclass

import torch
from torch import Tensor

from spatialmem._typing import Bool, Float
from spatialmem.losses.base import Criterion
from spatialmem.losses.confidence import confidence_output
from spatialmem.losses.normalize import check_confidence_values, gt_in_camera0
from spatialmem.losses.regression import RegressionOutput, _check_options, regression_terms
from spatialmem.losses.scale import scale_loss
from spatialmem.types import SequenceTarget, StepPredictions

__all__ = ["SequenceLossOutput", "Spann3RLoss"]


@dataclass(eq=False, kw_only=True)
class SequenceLossOutput(RegressionOutput):
    """Result of [`Spann3RLoss`][spatialmem.losses.Spann3RLoss]:
    ``loss = conf_loss + scale_weight * scale_loss``.

    ``terms`` holds the ``2 (T - 1)`` confidence-weighted term values in the official order
    ``term_names = ("L0", "L1", "R1", ..., "R<T-1>")``; ``details`` the official log entries
    (``conf_loss_1``, ``conf_loss2``, ``conf_mean``, ``Regr3D_t_pts3d_1``, ``Regr3D_t_pts3d_2``,
    ``Regr3D_tloss_left``, ``Regr3D_tloss_right``, ``Regr3D_tconf_left``, ``Regr3D_tconf_right``),
    as detached 0-dim tensors.
    """

    conf_loss: Float[Tensor, ""]
    """Confidence-aware regression loss (the official ``compute_frame_loss`` value)."""
    scale_loss: Float[Tensor, ""]
    """Scale (official "factor") term; a tensor ``0.0`` when no sample is selected."""
    scale_selected: Bool[Tensor, "B"]
    """Samples whose prediction factor exceeds their ground-truth factor."""
    frame_scale_loss: Float[Tensor, ""] | None = None
    """The per-frame scale term (``None`` when ``frame_scale_weight`` is 0)."""


class Spann3RLoss(Criterion):
    """The Spann3R training criterion:
    [`ConfidenceRegression`][spatialmem.losses.ConfidenceRegression] +
    [`ScaleLoss`][spatialmem.losses.ScaleLoss].

    Equal to ``ConfidenceRegression(alpha) + scale_weight * ScaleLoss()`` (same options), but the
    normalisation is computed once and the result is one flat
    [`SequenceLossOutput`][spatialmem.losses.SequenceLossOutput].

    Args:
        alpha: weight of the confidence regulariser (official 0.4; see
            [`alpha_schedule`][spatialmem.losses.alpha_schedule]).
        scale_weight: weight of the scale term (the official training adds it with weight 1).
        frame_scale_weight: weight of a per-frame scale term, not in the paper (default 0: off):
            the mean over frames of ``|log(r_pred_t / r_gt_t)|``, with ``r_t`` the mean
            distance of frame ``t``'s normalised points to their own centroid (prediction and
            ground truth, each over its valid pixels). The regression and the scale term see the
            clip's scale only; the shipped small model predicts later frames of a memory
            smaller than they are (see the results page), which this term penalises per frame.
        batch_coupled: reproduce the official numbers exactly: batch-wide valid-pixel count in the
            ``avg_dis`` factors, term means pooled over the batch, and the scale term comparing
            every selected prediction factor with every sample's ground-truth factor. By default
            (``False``) every sample is normalised on its own, each term is a per-sample mean
            averaged over samples and the scale term is ``mean_b max(0, pr_b - gt_b)``, so a
            sample's loss (``per_sample``) does not depend on its batch-mates. For ``B = 1`` both
            modes agree.
        log_name: prefix of the official ``details`` keys.

    Shapes: ``pred`` is a [`StepPredictions`][spatialmem.types.StepPredictions] ``[B, S, H, W, 3]``,
    ``target`` a [`SequenceTarget`][spatialmem.types.SequenceTarget] with ``T = S + 1`` frames.

    Example:
        ```python
        criterion = Spann3RLoss(alpha=0.4)
        out = criterion(StepPredictions(pl, cl, pr, cr), SequenceTarget(pts, valid, pose0))
        out.loss.backward()
        ```
    """

    def __init__(
        self,
        alpha: float = 0.4,
        *,
        scale_weight: float = 1.0,
        frame_scale_weight: float = 0.0,
        batch_coupled: bool = False,
        log_name: str = "Regr3D_t",
    ) -> None:
        super().__init__()
        _check_options("avg_dis", alpha)
        self.alpha = float(alpha)
        self.scale_weight = float(scale_weight)
        if not frame_scale_weight >= 0:
            raise ValueError(f"`frame_scale_weight` must be >= 0, got {frame_scale_weight!r}")
        self.frame_scale_weight = float(frame_scale_weight)
        self.batch_coupled = batch_coupled
        self.log_name = log_name

    def forward(self, pred: StepPredictions, target: SequenceTarget) -> SequenceLossOutput:
        """Compute the loss; see [`SequenceLossOutput`][spatialmem.losses.SequenceLossOutput] for
        the fields.

        Raises:
            ValueError: as for [`ConfidenceRegression`][spatialmem.losses.ConfidenceRegression]
                (NaN/Inf at valid pixels, a confidence below 1, a non-rigid ``camera_pose0``).
        """
        check_confidence_values(pred, target)
        terms = regression_terms(
            pred, target, alpha=self.alpha, norm_mode="avg_dis", batch_coupled=self.batch_coupled
        )
        conf = confidence_output(terms, batch_coupled=self.batch_coupled, log_name=self.log_name)
        scale, scale_ps, selected = scale_loss(
            terms.pr_factor, terms.gt_factor, batch_coupled=self.batch_coupled
        )
        per_sample = None
        if conf.per_sample is not None and scale_ps is not None:
            per_sample = conf.per_sample + self.scale_weight * scale_ps
        loss = conf.loss + self.scale_weight * scale
        frame_scale = None
        if self.frame_scale_weight > 0:
            frame_scale_ps = _frame_scale_terms(pred, target, terms.pr_factor, terms.gt_factor)
            frame_scale = frame_scale_ps.mean()
            loss = loss + self.frame_scale_weight * frame_scale
            if per_sample is not None:
                per_sample = per_sample + self.frame_scale_weight * frame_scale_ps
        return SequenceLossOutput(
            loss=loss,
            details=conf.details,
            term_names=conf.term_names,
            terms=conf.terms,
            term_dist=conf.term_dist,
            term_valid=conf.term_valid,
            pr_factor=conf.pr_factor,
            gt_factor=conf.gt_factor,
            per_sample=per_sample,
            conf_loss=conf.loss,
            scale_loss=scale,
            scale_selected=selected,
            frame_scale_loss=frame_scale,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha:g}, scale_weight={self.scale_weight:g}, "
            f"frame_scale_weight={self.frame_scale_weight:g}, "
            f"batch_coupled={self.batch_coupled}"
        )


def _frame_scale_terms(
    pred: StepPredictions, target: SequenceTarget, pr_factor: Tensor, gt_factor: Tensor
) -> Float[Tensor, "B"]:
    """Per sample: the mean over frames with valid pixels of ``|log(r_pred_t / r_gt_t)|``, with
    ``r_t`` the mean distance of frame ``t``'s normalised points to their own centroid."""
    valid = target.valid
    count = valid.sum(dim=(-2, -1))  # [B, T]
    gt = gt_in_camera0(target.pts3d, target.camera_pose0)

    def spread(pts: Tensor) -> Tensor:
        pts = torch.where(valid.unsqueeze(-1), pts, 0.0)  # invalid pixels may hold NaN
        centre = pts.sum(dim=(-3, -2)) / count.clamp(min=1).unsqueeze(-1)
        offset = torch.linalg.vector_norm(pts - centre[:, :, None, None], dim=-1)
        return torch.where(valid, offset, 0.0).sum(dim=(-2, -1)) / count.clamp(min=1)

    factor_shape = (-1,) + (1,) * 4
    r_pred = spread(pred.frame_pts3d() / pr_factor.reshape(factor_shape))
    r_gt = spread(gt / gt_factor.reshape(factor_shape))
    has = (count > 0) & (r_gt > 0)
    log_ratio = torch.log(r_pred.clamp(min=1e-8)) - torch.log(r_gt.clamp(min=1e-8))
    per_frame = torch.where(has, log_ratio.abs(), 0.0)
    return per_frame.sum(dim=1) / has.sum(dim=1).clamp(min=1)
