"""Scale loss (paper Eq. 13): penalise predictions that are on average farther out than the truth.

``L_scale = max(0, X_pred - X_gt)`` with ``X`` the average distance of the points to the origin
(the ``avg_dis`` normalisation factors, see `spatialmem.losses.normalize`). It only penalises
predictions that are too large: the paper uses it to push the predicted scale below the ground
truth's and so keep the model away from trivial solutions.

Per sample (default): sample ``b`` contributes ``max(0, pr_b - gt_b)`` and the loss is the mean
over the batch, so it does not depend on the batch-mates.

``batch_coupled=True`` reproduces the official term exactly: the ``k`` prediction factors larger
than their own sample's ground-truth factor are selected, and the loss is the mean of
``|pr_selected - gt_b|`` over all ``k`` selected values *and all* ``B`` samples ``b`` (the official
subtraction broadcasts), so every selected factor is compared with every sample's ground-truth
factor (A7: 0.850, where comparing with its own sample's factor only gives 1.522). With nothing
selected the official code returns the Python float ``0.0``; here it is a tensor ``0.0`` without
gradient, which gives the same total and the same gradients.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from spatialmem._typing import Bool, Float
from spatialmem.losses.base import Criterion, LossOutput
from spatialmem.losses.normalize import sequence_factors
from spatialmem.types import SequenceTarget, StepPredictions

__all__ = ["ScaleLoss", "ScaleLossOutput", "scale_loss"]


def scale_loss(
    pr_factor: Float[Tensor, "B"], gt_factor: Float[Tensor, "B"], *, batch_coupled: bool = False
) -> tuple[Float[Tensor, ""], Float[Tensor, "B"] | None, Bool[Tensor, "B"]]:
    """The scale term from the normalisation factors.

    Args:
        pr_factor: average distance of each sample's predictions (gradients flow through it).
        gt_factor: average distance of each sample's ground truth (treated as a constant).
        batch_coupled: official broadcasting over the batch (see the module docstring).

    Returns:
        ``(loss, per_sample, selected)``: the scalar loss; each sample's contribution
        ``max(0, pr_b - gt_b)`` (``None`` when batch-coupled); which samples have
        ``pr_factor > gt_factor``.
    """
    gt_factor = gt_factor.detach()
    selected = pr_factor > gt_factor
    if batch_coupled:
        diff = (pr_factor[:, None] - gt_factor[None, :]).abs()  # [selected b', every b]
        diff = torch.where(selected[:, None], diff, 0.0)
        n_terms = selected.sum() * pr_factor.shape[0]
        return diff.sum() / n_terms.clamp_min(1).to(diff.dtype), None, selected
    per_sample = torch.where(selected, pr_factor - gt_factor, 0.0)
    return per_sample.mean(), per_sample, selected


@dataclass(eq=False, kw_only=True)
class ScaleLossOutput(LossOutput):
    """Result of [`ScaleLoss`][spatialmem.losses.ScaleLoss]."""

    pr_factor: Float[Tensor, "B"]
    """Average distance of each sample's predictions (the ``avg_dis`` factor)."""
    gt_factor: Float[Tensor, "B"]
    """Average distance of each sample's ground truth in frame 0's camera frame."""
    selected: Bool[Tensor, "B"]
    """Samples whose prediction factor exceeds their ground-truth factor."""
    per_sample: Float[Tensor, "B"] | None
    """Each sample's ``max(0, pr - gt)`` (``loss`` is their mean); ``None`` when batch-coupled."""


class ScaleLoss(Criterion):
    """Scale loss of a sequence (paper Eq. 13; the official "factor" term).

    The factors are those of [`sequence_factors`][spatialmem.losses.sequence_factors]: one
    prediction per frame (view 1 of every step, view 2 of the last step) and the ``T`` ground-truth
    frames in frame 0's camera frame, at the ground-truth valid pixels.

    Args:
        batch_coupled: reproduce the official batch coupling (batch-wide counts in the factors and
            the broadcast comparison); by default every sample is handled on its own.

    Shapes: ``pred`` is a [`StepPredictions`][spatialmem.types.StepPredictions] ``[B, S, H, W, 3]``,
    ``target`` a [`SequenceTarget`][spatialmem.types.SequenceTarget] with ``T = S + 1`` frames.
    """

    def __init__(self, *, batch_coupled: bool = False) -> None:
        super().__init__()
        self.batch_coupled = batch_coupled

    def forward(self, pred: StepPredictions, target: SequenceTarget) -> ScaleLossOutput:
        """Compute the loss; see [`ScaleLossOutput`][spatialmem.losses.ScaleLossOutput] for the
        fields."""
        pr_factor, gt_factor = sequence_factors(pred, target, batch_coupled=self.batch_coupled)
        loss, per_sample, selected = scale_loss(
            pr_factor, gt_factor, batch_coupled=self.batch_coupled
        )
        return ScaleLossOutput(
            loss=loss,
            details={"scale_loss": loss.detach(), "n_selected": selected.sum()},
            pr_factor=pr_factor,
            gt_factor=gt_factor,
            selected=selected,
            per_sample=per_sample,
        )

    def extra_repr(self) -> str:
        return f"batch_coupled={self.batch_coupled}"
