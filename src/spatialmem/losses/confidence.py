"""Confidence-aware regression (paper Eq. 11-12) and the schedule of its ``alpha``.

Per valid pixel the loss is ``d * C - alpha * log(C)``, with ``d`` the distance between the
normalised prediction and the normalised ground truth and ``C >= 1`` the predicted confidence
(``1 + exp(x)``, Eq. 12): a confident pixel weighs its error more, and ``-alpha log C`` rewards
confidence so that it cannot collapse to 1 everywhere.
"""

from torch import Tensor

from spatialmem.losses.base import Criterion
from spatialmem.losses.normalize import check_confidence_values
from spatialmem.losses.regression import (
    NormMode,
    RegressionOutput,
    RegressionTerms,
    _check_options,
    reduce_terms,
    regression_terms,
    sequence_details,
)
from spatialmem.types import SequenceTarget, StepPredictions

__all__ = ["ConfidenceRegression", "alpha_schedule"]


def alpha_schedule(
    epoch: int | float, total_epochs: int = 120, start: float = 0.4, end: float = 0.2
) -> float:
    """The ``alpha`` of the official training script at a given epoch.

    Constant ``start`` for the first half of training, then linear down to ``end`` at
    ``epoch == total_epochs``: ``start - (start - end) * max((epoch - E/2) / (E/2), 0)``.
    Epochs past ``total_epochs`` keep ``end``.

    Args:
        epoch: current epoch (0-based, as in the official loop; fractions allowed).
        total_epochs: ``E``, the number of training epochs.
        start: ``alpha`` of the first half.
        end: ``alpha`` reached at ``epoch == total_epochs``.
    """
    if total_epochs <= 0:
        raise ValueError(f"`total_epochs` must be positive, got {total_epochs}")
    half = total_epochs / 2
    progress = min(max((epoch - half) / half, 0.0), 1.0)
    return start - (start - end) * progress


def confidence_output(
    terms: RegressionTerms, *, batch_coupled: bool, log_name: str
) -> RegressionOutput:
    """Reduce [`RegressionTerms`][spatialmem.losses.RegressionTerms] to the confidence-aware loss.

    ``loss = sum_k term_k / (T - 1)`` (twice the mean of the ``2 (T - 1)`` terms), each term the
    mean of ``d * C - alpha * log C`` over its valid pixels. ``details`` holds the official keys
    (``conf_loss_1``, ``conf_loss2``, ``conf_mean``, ``<log_name>_pts3d_1``, ...).
    """
    num_steps = len(terms.names) // 2
    weighted, weighted_ps = reduce_terms(
        terms.conf_weighted_sum, terms.count, batch_coupled=batch_coupled
    )
    dist, _ = reduce_terms(terms.dist_sum.detach(), terms.count, batch_coupled=batch_coupled)
    conf_mean, _ = reduce_terms(terms.conf_sum, terms.count, batch_coupled=batch_coupled)
    detached = weighted.detach()
    details: dict[str, Tensor] = {
        "conf_loss_1": 2 * detached[0],
        "conf_loss2": 2 * detached[1],
        "conf_mean": conf_mean.mean(),
    }
    details.update(sequence_details(log_name, terms.names, dist, terms.conf_mean_all))
    return RegressionOutput(
        loss=weighted.sum() / num_steps,
        details=details,
        term_names=terms.names,
        terms=weighted,
        term_dist=dist,
        term_valid=terms.count.sum(0),
        pr_factor=terms.pr_factor,
        gt_factor=terms.gt_factor,
        per_sample=None if batch_coupled else weighted_ps.sum(1) / num_steps,
    )


class ConfidenceRegression(Criterion):
    """Confidence-aware 3D regression over a sequence (paper Eq. 11-12; official ``ConfLoss_t``).

    Every term ``L0, L1, R1, ..., R(T-1)`` (see [`term_names`][spatialmem.losses.term_names]) is the
    mean over its valid pixels of ``d * C - alpha * log C``; the loss is their sum divided by
    ``T - 1``. ``d`` is the distance between the prediction and the ground truth (in frame 0's
    camera frame), each divided by its ``avg_dis`` factor with ``norm_mode="avg_dis"``.

    Args:
        alpha: weight of the confidence regulariser; change it during training with
            ``criterion.alpha = alpha_schedule(epoch)``.
        norm_mode: ``"avg_dis"`` (default, the official training setting) or ``"none"``.
        batch_coupled: reproduce the official batch coupling (batch-wide valid-pixel count in the
            normalisation factors, term means pooled over the batch). By default every sample is
            normalised and averaged on its own and ``loss`` is the mean of the per-sample losses,
            so a sample's loss does not depend on its batch-mates. Both agree for ``B = 1``.
        log_name: prefix of the official ``details`` keys (``Regr3D_t``).

    Shapes: ``pred`` is a [`StepPredictions`][spatialmem.types.StepPredictions] ``[B, S, H, W, 3]``,
    ``target`` a [`SequenceTarget`][spatialmem.types.SequenceTarget] with ``T = S + 1`` frames.
    """

    def __init__(
        self,
        alpha: float = 0.4,
        *,
        norm_mode: NormMode = "avg_dis",
        batch_coupled: bool = False,
        log_name: str = "Regr3D_t",
    ) -> None:
        super().__init__()
        _check_options(norm_mode, alpha)
        self.alpha = float(alpha)
        self.norm_mode = norm_mode
        self.batch_coupled = batch_coupled
        self.log_name = log_name

    def forward(self, pred: StepPredictions, target: SequenceTarget) -> RegressionOutput:
        """Compute the loss; ``terms`` holds the confidence-weighted term values.

        Raises:
            ValueError: mismatched shapes, a sample without valid pixel, NaN/Inf predictions or
                ground truth at a valid pixel, a confidence below 1 at a valid pixel, or a
                non-rigid ``camera_pose0`` (value checks, see
                [`set_value_checks`][spatialmem.set_value_checks]).
        """
        check_confidence_values(pred, target)
        terms = regression_terms(
            pred, target, alpha=self.alpha, norm_mode=self.norm_mode,
            batch_coupled=self.batch_coupled,
        )  # fmt: skip
        return confidence_output(terms, batch_coupled=self.batch_coupled, log_name=self.log_name)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha:g}, norm_mode={self.norm_mode!r}, "
            f"batch_coupled={self.batch_coupled}"
        )
