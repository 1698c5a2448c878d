"""Per-term 3D regression over a sequence (the official ``Regr3D_t`` bookkeeping).

With ``T`` frames and ``S = T - 1`` steps there are ``K = 2 S`` loss terms, in the official order
``L0, L1, R1, L2, R2, ..., L(T-2), R(T-2), R(T-1)``: ``Lj`` compares the view-1 prediction of
frame ``j`` (``pts_view1[:, j]``) and ``Rj`` the view-2 prediction of frame ``j``
(``pts_view2[:, j - 1]``) with ground-truth frame ``j``. Only ground-truth valid pixels take part.

Each term is a mean over valid pixels. Two ways to take it:

* per sample (default): the mean over each sample's own valid pixels, then averaged over the
  samples, so a sample's contribution does not depend on its batch-mates;
* ``batch_coupled=True`` (official): one mean over the valid pixels of the whole batch pooled
  together (a sample with more valid pixels weighs more).

A term with no valid pixel at all (in a sample, or in the whole batch when pooled) is 0 (the
official code returns NaN there).
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from spatialmem._checks import value_checks_enabled
from spatialmem._typing import Bool, Float, Int, Shaped
from spatialmem.losses.base import Criterion, LossOutput
from spatialmem.losses.normalize import (
    _sequence_factor,
    avg_distance_factor,
    check_loss_values,
    gt_in_camera0,
)
from spatialmem.types import SequenceTarget, StepPredictions, check_matching

__all__ = [
    "NormMode",
    "PointRegression",
    "RegressionOutput",
    "RegressionTerms",
    "interleave_terms",
    "reduce_terms",
    "regression_terms",
    "term_names",
]

NormMode = Literal["avg_dis", "none"]
"""Normalisation of predictions and ground truth: by their average distance (``"avg_dis"``) or
none (``"none"``)."""


def term_names(num_frames: int) -> tuple[str, ...]:
    """Names of the ``2 (T - 1)`` terms in official order: ``("L0", "L1", "R1", ..., "R<T-1>")``."""
    if num_frames < 2:
        raise ValueError(f"`num_frames` must be at least 2, got {num_frames}")
    names = ["L0"]
    for j in range(1, num_frames - 1):
        names += [f"L{j}", f"R{j}"]
    names.append(f"R{num_frames - 1}")
    return tuple(names)


def _term_order(num_steps: int, device: torch.device) -> Tensor:
    # Index into cat([left (S), right (S)]): L0, L1, R1, ..., L(S-1), R(S-1), R(S).
    order = [0]
    for j in range(1, num_steps):
        order += [j, num_steps + j - 1]
    order.append(2 * num_steps - 1)
    return torch.tensor(order, device=device)


def interleave_terms(
    left: Shaped[Tensor, "B S"], right: Shaped[Tensor, "B S"]
) -> Shaped[Tensor, "B K"]:
    """Arrange per-step values of the view-1 (``left``) and view-2 (``right``) predictions in the
    official term order ``L0, L1, R1, ..., L(S-1), R(S-1), R(S)`` (``K = 2 S``)."""
    order = _term_order(left.shape[1], left.device)
    return torch.cat([left, right], dim=1).index_select(1, order)


@dataclass(eq=False)
class RegressionTerms:
    """Per-sample, per-term sums over valid pixels; the common ground of the sequence losses.

    ``K = 2 (T - 1)`` terms in official order (see [`term_names`][spatialmem.losses.term_names]).
    Sums over invalid pixels are exactly zero and carry no gradient.
    """

    names: tuple[str, ...]
    """Term names, ``("L0", "L1", "R1", ..., "R<T-1>")``."""
    dist_sum: Float[Tensor, "B K"]
    """Sum over valid pixels of the distance between normalised prediction and ground truth."""
    conf_weighted_sum: Float[Tensor, "B K"]
    """Sum over valid pixels of ``distance * C - alpha * log(C)`` (paper Eq. 11)."""
    conf_sum: Float[Tensor, "B K"]
    """Sum over valid pixels of the confidence ``C`` (detached)."""
    count: Int[Tensor, "B K"]
    """Valid pixels of each sample and term."""
    conf_mean_all: Float[Tensor, "K"]
    """Mean confidence over all pixels of the batch, invalid ones included (detached)."""
    pr_factor: Float[Tensor, "B"]
    """Prediction normalisation factor (ones with ``norm_mode="none"``)."""
    gt_factor: Float[Tensor, "B"]
    """Ground-truth normalisation factor (ones with ``norm_mode="none"``)."""


def reduce_terms(
    sums: Float[Tensor, "B K"], count: Int[Tensor, "B K"], *, batch_coupled: bool = False
) -> tuple[Float[Tensor, "K"], Float[Tensor, "B K"]]:
    """Means over valid pixels from per-sample sums.

    Args:
        sums: per-sample, per-term sums over valid pixels.
        count: matching valid-pixel counts.
        batch_coupled: pool the batch (official) instead of averaging per-sample means.

    Returns:
        ``(term_means [K], per_sample_means [B, K])``. ``term_means`` is the mean over samples of
        ``per_sample_means`` (default) or the pooled mean (``batch_coupled=True``). Empty means
        are 0.
    """
    per_sample = sums / count.clamp_min(1).to(sums.dtype)
    if batch_coupled:
        pooled = sums.sum(0) / count.sum(0).clamp_min(1).to(sums.dtype)
        return pooled, per_sample
    return per_sample.mean(0), per_sample


def check_some_valid(valid: Bool[Tensor, "B T H W"]) -> None:
    """Raise ``ValueError`` if a sample has no valid pixel in any frame (when value checks are on;
    this reads the mask and so synchronises with the GPU)."""
    if not value_checks_enabled():
        return
    has_valid = valid.flatten(1).any(1)
    if not bool(has_valid.all()):
        empty = torch.nonzero(~has_valid).flatten().tolist()
        raise ValueError(
            f"`SequenceTarget.valid` has no valid pixel for batch element(s) {empty} "
            f"(mask of shape {tuple(valid.shape)}); every sample needs at least one valid pixel. "
            "Disable this check with spatialmem.set_value_checks(False); such a sample then "
            "contributes 0 to the loss."
        )


def _check_options(norm_mode: str, alpha: float) -> None:
    if norm_mode not in ("avg_dis", "none"):
        raise ValueError(f"`norm_mode` must be 'avg_dis' or 'none', got {norm_mode!r}")
    if not alpha >= 0.0:
        raise ValueError(f"`alpha` must be >= 0, got {alpha!r}")


def _zero_invalid(
    pred: StepPredictions, target: SequenceTarget
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Ground truth in frame 0's camera frame and the predictions, with every invalid pixel set to
    0 (points) or 1 (confidences).

    Whatever the invalid pixels hold (even NaN), they then add exactly 0 to every sum and receive
    exactly 0 gradient.

    Returns:
        ``(gt [B, T, H, W, 3], pts_l, pts_r [B, S, H, W, 3], conf_l, conf_r [B, S, H, W])``.
    """
    valid = target.valid
    valid_l, valid_r = valid[:, :-1], valid[:, 1:]
    gt = torch.where(valid[..., None], gt_in_camera0(target.pts3d, target.camera_pose0), 0.0)
    pts_l = torch.where(valid_l[..., None], pred.pts_view1, 0.0)
    pts_r = torch.where(valid_r[..., None], pred.pts_view2, 0.0)
    conf_l = torch.where(valid_l, pred.conf_view1, 1.0)
    conf_r = torch.where(valid_r, pred.conf_view2, 1.0)
    return gt, pts_l, pts_r, conf_l, conf_r


def _normalise(
    gt: Tensor,
    pts_l: Tensor,
    pts_r: Tensor,
    valid: Tensor,
    *,
    norm_mode: NormMode,
    batch_coupled: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Divide the predictions and the ground truth by their average-distance factors
    (``norm_mode="avg_dis"``) or leave them as they are (factors of one).

    Returns:
        ``(gt, pts_l, pts_r, pr_factor [B], gt_factor [B])``.
    """
    if norm_mode != "avg_dis":
        return gt, pts_l, pts_r, gt.new_ones(gt.shape[0]), gt.new_ones(gt.shape[0])
    pr_factor = _sequence_factor(pts_l, pts_r[:, -1], valid, batch_coupled)
    gt_factor = avg_distance_factor(gt, valid, batch_coupled=batch_coupled)
    scale = pr_factor[:, None, None, None, None]
    gt = gt / gt_factor[:, None, None, None, None]
    return gt, pts_l / scale, pts_r / scale, pr_factor, gt_factor


def _distances(pts: Tensor, gt: Tensor, conf: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Per pixel ``d = ||pts - gt||`` and the confidence-weighted ``d * C - alpha * log(C)``."""
    dist = torch.linalg.vector_norm(pts - gt, dim=-1)
    return dist, dist * conf - alpha * torch.log(conf)


def _per_term(left: Tensor, right: Tensor) -> Tensor:
    """Per-sample sums over the pixels of view-1 / view-2 maps ``[B, S, H, W]``, in term order."""
    return interleave_terms(left.sum((2, 3)), right.sum((2, 3)))


def _conf_mean_all(pred: StepPredictions) -> Float[Tensor, "K"]:
    """Mean confidence of each term over all pixels of the batch, invalid ones included
    (detached; summed into the official ``conf_left`` / ``conf_right`` log entries)."""
    with torch.no_grad():
        return interleave_terms(
            pred.conf_view1.mean((0, 2, 3))[None], pred.conf_view2.mean((0, 2, 3))[None]
        )[0]


def regression_terms(
    pred: StepPredictions,
    target: SequenceTarget,
    *,
    alpha: float = 0.0,
    norm_mode: NormMode = "avg_dis",
    batch_coupled: bool = False,
) -> RegressionTerms:
    """Normalise predictions and ground truth and sum the per-pixel terms over valid pixels.

    1. The ground truth is mapped into frame 0's camera frame
       ([`gt_in_camera0`][spatialmem.losses.gt_in_camera0]).
    2. ``norm_mode="avg_dis"``: the predictions are divided by the average-distance factor of
       one prediction per frame ([`sequence_pred_factor`][spatialmem.losses.sequence_pred_factor]),
       the ground truth by its own factor over the ``T`` frames; gradients flow through the
       prediction factor.
    3. Per valid pixel: ``d = ||pred / pr_factor - gt / gt_factor||`` and
       ``d * C - alpha * log(C)``.

    Args:
        pred: step predictions ``[B, S, H, W, ...]``.
        target: ground truth of the ``T = S + 1`` frames.
        alpha: weight of the ``-log C`` confidence regulariser (Eq. 11).
        norm_mode: ``"avg_dis"`` (training default) or ``"none"``.
        batch_coupled: official batch-wide valid-pixel count in the normalisation factors.

    Returns:
        The per-sample, per-term sums (reduce them with
        [`reduce_terms`][spatialmem.losses.reduce_terms]).
    """
    check_matching(pred, target)
    _check_options(norm_mode, alpha)
    check_some_valid(target.valid)
    check_loss_values(pred, target)
    valid = target.valid
    valid_l, valid_r = valid[:, :-1], valid[:, 1:]
    gt, pts_l, pts_r, conf_l, conf_r = _zero_invalid(pred, target)
    gt, pts_l, pts_r, pr_factor, gt_factor = _normalise(
        gt, pts_l, pts_r, valid, norm_mode=norm_mode, batch_coupled=batch_coupled
    )
    dist_l, weighted_l = _distances(pts_l, gt[:, :-1], conf_l, alpha)
    dist_r, weighted_r = _distances(pts_r, gt[:, 1:], conf_r, alpha)
    with torch.no_grad():
        conf_sum = _per_term(
            torch.where(valid_l, pred.conf_view1, 0.0), torch.where(valid_r, pred.conf_view2, 0.0)
        )
    return RegressionTerms(
        names=term_names(pred.num_frames),
        dist_sum=_per_term(dist_l, dist_r),
        conf_weighted_sum=_per_term(weighted_l, weighted_r),
        conf_sum=conf_sum,
        count=_per_term(valid_l, valid_r),
        conf_mean_all=_conf_mean_all(pred),
        pr_factor=pr_factor,
        gt_factor=gt_factor,
    )


def sequence_details(
    log_name: str,
    names: tuple[str, ...],
    term_dist: Tensor,
    conf_mean_all: Tensor,
) -> dict[str, Tensor]:
    """The official per-sequence log entries shared by the training and evaluation criteria.

    ``<log_name>_pts3d_1`` / ``_pts3d_2``: mean distance of the first two terms;
    ``<log_name>loss_left`` / ``loss_right``: sums of the mean distances of ``L1..L(T-2)`` /
    ``R1..R(T-2)``; ``<log_name>conf_left`` / ``conf_right``: sums of their mean confidences over
    all pixels.
    """
    term_dist = term_dist.detach()
    left = [k for k, n in enumerate(names) if n[0] == "L" and n != "L0"]
    right = [k for k, n in enumerate(names) if n[0] == "R" and k != len(names) - 1]
    zero = term_dist.new_zeros(())
    return {
        f"{log_name}_pts3d_1": term_dist[0],
        f"{log_name}_pts3d_2": term_dist[1],
        f"{log_name}loss_left": term_dist[left].sum() if left else zero,
        f"{log_name}loss_right": term_dist[right].sum() if right else zero,
        f"{log_name}conf_left": conf_mean_all[left].sum() if left else zero,
        f"{log_name}conf_right": conf_mean_all[right].sum() if right else zero,
    }


@dataclass(eq=False, kw_only=True)
class RegressionOutput(LossOutput):
    """Result of a sequence regression criterion
    ([`PointRegression`][spatialmem.losses.PointRegression],
    [`ConfidenceRegression`][spatialmem.losses.ConfidenceRegression])."""

    term_names: tuple[str, ...]
    """``("L0", "L1", "R1", ..., "R<T-1>")``."""
    terms: Float[Tensor, "K"]
    """The value of each term that enters ``loss`` (``loss = terms.sum() / (T - 1)``)."""
    term_dist: Float[Tensor, "K"]
    """Mean normalised distance of each term."""
    term_valid: Int[Tensor, "K"]
    """Valid pixels of each term over the whole batch."""
    pr_factor: Float[Tensor, "B"]
    """Prediction normalisation factor of each sample (ones with ``norm_mode="none"``)."""
    gt_factor: Float[Tensor, "B"]
    """Ground-truth normalisation factor of each sample (ones with ``norm_mode="none"``)."""
    per_sample: Float[Tensor, "B"] | None
    """Each sample's loss (``loss`` is their mean); ``None`` when batch-coupled."""


class PointRegression(Criterion):
    """Confidence-free 3D regression: mean normalised point distance over the sequence terms.

    ``loss = sum_k mean_valid(||pred_k / pr_factor - gt_k / gt_factor||) / (T - 1)``, i.e. twice
    the mean over the ``2 (T - 1)`` terms (the official ``Regr3D_t`` aggregation).

    Args:
        norm_mode: ``"avg_dis"`` (default) or ``"none"``.
        batch_coupled: reproduce the official batch coupling (batch-wide counts in the
            normalisation, pooled means); by default every sample is handled on its own.

    Shapes: ``pred`` is a [`StepPredictions`][spatialmem.types.StepPredictions] ``[B, S, H, W, 3]``,
    ``target`` a [`SequenceTarget`][spatialmem.types.SequenceTarget] with ``T = S + 1`` frames.
    """

    def __init__(self, *, norm_mode: NormMode = "avg_dis", batch_coupled: bool = False) -> None:
        super().__init__()
        _check_options(norm_mode, 0.0)
        self.norm_mode = norm_mode
        self.batch_coupled = batch_coupled

    def forward(self, pred: StepPredictions, target: SequenceTarget) -> RegressionOutput:
        """Compute the loss; see [`RegressionOutput`][spatialmem.losses.RegressionOutput] for the
        fields."""
        t = regression_terms(
            pred, target, norm_mode=self.norm_mode, batch_coupled=self.batch_coupled
        )
        dist, dist_ps = reduce_terms(t.dist_sum, t.count, batch_coupled=self.batch_coupled)
        num_steps = pred.num_steps
        return RegressionOutput(
            loss=dist.sum() / num_steps,
            details=sequence_details("PointRegression", t.names, dist, t.conf_mean_all),
            term_names=t.names,
            terms=dist,
            term_dist=dist,
            term_valid=t.count.sum(0),
            pr_factor=t.pr_factor,
            gt_factor=t.gt_factor,
            per_sample=None if self.batch_coupled else dist_ps.sum(1) / num_steps,
        )

    def extra_repr(self) -> str:
        return f"norm_mode={self.norm_mode!r}, batch_coupled={self.batch_coupled}"
