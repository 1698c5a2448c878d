"""Reconstruction metrics of the Spann3R evaluation: accuracy, completion, normal consistency.

The paper (Sec. 4.1) uses accuracy, completion and normal consistency "as in prior works"
(NICE-SLAM-style evaluation); the official ``eval.py`` and ``spann3r/tools/eval_recon.py``
compute, for a predicted cloud ``P`` and a ground-truth cloud ``G``:

* accuracy: for every ``p`` in ``P`` the distance to its nearest ``g`` in ``G``; mean and median;
* completion: for every ``g`` in ``G`` the distance to its nearest ``p`` in ``P``; mean and median;
* normal consistency: ``|<n_p, n_g>|`` (absolute cosine, normals are unoriented) over the same
  matched pairs, once in each direction: ``NC1`` over the accuracy pairs (every predicted point
  and its nearest ground-truth point) and ``NC2`` over the completion pairs. The official script
  logs both; the single ``NC`` of the paper's tables is their average, ``(NC1 + NC2) / 2``, and
  ``NC med.`` the average of the two medians (the convention of the public re-evaluations of
  Spann3R). Normals are estimated on each cloud with Open3D's defaults (PCA of 30 nearest
  neighbours; here [`estimate_normals`][spatialmem.metrics.estimate_normals]);
* completion ratio (``eval_recon.completion_ratio``): fraction of ground-truth points with a
  predicted point closer than a threshold (strictly, default 0.05).

Medians are NumPy's (the mean of the two middle values for an even count). The Chamfer distance
here is the mean of accuracy and completion (``(acc + comp) / 2``).

Before measuring, the official script aligns the prediction: median scale-shift
([`median_scale_shift`][spatialmem.geometry.alignment.median_scale_shift], ``align="median"``),
then point-to-point ICP with a 0.1 correspondence threshold (100 for DTU, in millimetres;
``icp_threshold`` here). ``align="sim3"`` / ``"rigid"`` instead fit
[`umeyama`][spatialmem.geometry.alignment.umeyama] on pixel correspondences.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
from torch import Tensor

from spatialmem._checks import check_bool_mask, check_finite, check_tensor, internal_calls
from spatialmem._typing import Bool, Float
from spatialmem.metrics.icp import _icp
from spatialmem.metrics.neighbors import Backend, NeighborIndex, _check_chunk, _check_cloud
from spatialmem.metrics.normals import _pca_normals
from spatialmem.metrics.sampling import random_subset_indices, voxel_downsample_indices

__all__ = [
    "TABLE_COLUMNS",
    "Align",
    "NormalSource",
    "ReconstructionMetrics",
    "accuracy",
    "chamfer_distance",
    "completion",
    "completion_ratio",
    "evaluate_pointclouds",
    "evaluate_pointmaps",
    "format_table",
    "mean_metrics",
    "normal_consistency",
]

Align = Literal["none", "median", "sim3", "rigid"]
"""Alignment of the prediction onto the ground truth before measuring:

* ``"none"``: the prediction is used as is;
* ``"median"``: the median scale-shift of the official evaluation
  ([`median_scale_shift`][spatialmem.geometry.alignment.median_scale_shift]; points in frame 0's
  camera frame, ``z`` = depth);
* ``"sim3"``: weighted least-squares similarity on correspondences
  ([`umeyama`][spatialmem.geometry.alignment.umeyama]);
* ``"rigid"``: the same without scale (for metric predictions).
"""

NormalSource = Literal["cloud", "pointmap", "none"]
"""Where [`evaluate_pointmaps`][spatialmem.metrics.evaluate_pointmaps] takes normals from:
``"cloud"`` (PCA of nearest neighbours in the evaluated cloud, as the official script),
``"pointmap"`` (finite differences on the pixel grid), ``"none"`` (no normal consistency)."""

_ALIGNS = ("none", "median", "sim3", "rigid")
_NORMAL_SOURCES = ("cloud", "pointmap", "none")
_NAN = float("nan")


@dataclass(frozen=True)
class ReconstructionMetrics:
    """Metrics of one reconstruction, as the official Spann3R evaluation computes them.

    Medians are NumPy's (the mean of the two middle values for an even count); normal cosines
    are absolute (normals are unoriented).

    Distances are in the units of the ground truth. Lower is better for ``acc*``, ``comp*`` and
    ``chamfer``; higher for ``nc*`` and ``completion_ratio``.
    """

    acc: float
    """Accuracy: mean distance from each predicted point to the nearest ground-truth point."""
    acc_med: float
    """Median of those distances."""
    comp: float
    """Completion: mean distance from each ground-truth point to the nearest predicted point."""
    comp_med: float
    """Median of those distances."""
    nc: float
    """Normal consistency, ``(nc_acc + nc_comp) / 2`` (NaN without normals)."""
    nc_med: float
    """``(nc_acc_med + nc_comp_med) / 2`` (NaN without normals)."""
    chamfer: float
    """Chamfer distance, ``(acc + comp) / 2``."""
    completion_ratio: float
    """Fraction of ground-truth points with a predicted point closer than ``threshold``."""
    threshold: float
    """Distance threshold of ``completion_ratio``."""
    num_pred: int
    """Number of predicted points evaluated."""
    num_gt: int
    """Number of ground-truth points evaluated."""
    nc_acc: float = _NAN
    """Mean ``|cos|`` between each predicted point's normal and its nearest ground-truth point's
    (the official ``NC1``)."""
    nc_acc_med: float = _NAN
    """Median of the ``NC1`` cosines."""
    nc_comp: float = _NAN
    """Mean ``|cos|`` between each ground-truth point's normal and its nearest predicted point's
    (the official ``NC2``)."""
    nc_comp_med: float = _NAN
    """Median of the ``NC2`` cosines."""

    def as_dict(self) -> dict[str, float | int]:
        """The metrics as a plain ``{name: value}`` dict of floats and ints, in field order."""
        return asdict(self)


TABLE_COLUMNS = (
    "acc",
    "acc_med",
    "comp",
    "comp_med",
    "nc",
    "nc_med",
    "chamfer",
    "completion_ratio",
)
"""Columns of [`format_table`][spatialmem.metrics.format_table] by default."""


def format_table(
    results: ReconstructionMetrics
    | Mapping[str, ReconstructionMetrics]
    | Sequence[ReconstructionMetrics],
    *,
    columns: Sequence[str] = TABLE_COLUMNS,
    digits: int = 4,
    mean_row: bool = True,
) -> str:
    """A Markdown table of metrics, one row per scene, columns padded for a terminal.

    Args:
        results: one result, ``{scene name: result}``, or a sequence of results (rows named
            by position).
        columns: fields of [`ReconstructionMetrics`][spatialmem.metrics.ReconstructionMetrics]
            to show.
        digits: decimals of float values.
        mean_row: with more than one row, append the per-field mean over scenes
            ([`mean_metrics`][spatialmem.metrics.mean_metrics]), the paper's averaging.

    Returns:
        The table, lines joined by newlines (no trailing newline).

    Raises:
        ValueError: an unknown column, no results, or results with different thresholds when a
            mean row is asked for.

    Example:
        ```python
        import torch
        from spatialmem.metrics import evaluate_pointclouds, format_table

        gt = torch.rand(200, 3)
        table = format_table({"scene": evaluate_pointclouds(gt + 0.01, gt)})
        assert table.splitlines()[0].startswith("| scene")
        ```
    """
    known = {f.name for f in fields(ReconstructionMetrics)}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"unknown `columns` {unknown}; choose among {sorted(known)}")
    if isinstance(results, ReconstructionMetrics):
        rows = [("all", results)]
    elif isinstance(results, Mapping):
        rows = [(str(name), r) for name, r in results.items()]
    else:
        rows = [(str(i), r) for i, r in enumerate(results)]
    if not rows:
        raise ValueError("`results` is empty: nothing to tabulate")
    if mean_row and len(rows) > 1:
        rows.append(("mean", mean_metrics([r for _, r in rows])))

    def cell(value: float | int) -> str:
        if isinstance(value, int):
            return str(value)
        return f"{value:.{digits}f}"

    table = [["scene", *columns]]
    table += [[name, *(cell(getattr(r, c)) for c in columns)] for name, r in rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(table[0]))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        return "| " + " | ".join([first, *rest]) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if j else "-") for j, w in enumerate(widths)) + "|"
    return "\n".join([line(table[0]), rule, *(line(row) for row in table[1:])])


def mean_metrics(results: Sequence[ReconstructionMetrics]) -> ReconstructionMetrics:
    """Average over scenes, as the paper's tables do (the official script averages the per-scene
    means and the per-scene medians alike).

    Args:
        results: per-scene metrics, all with the same ``threshold``.

    Returns:
        Each float field averaged over scenes (NaN if any scene has NaN there); ``num_pred`` and
        ``num_gt`` are the totals.

    Raises:
        ValueError: no results, or different thresholds.
    """
    results = list(results)
    if not results:
        raise ValueError("`results` is empty: nothing to average")
    thresholds = {r.threshold for r in results}
    if len(thresholds) > 1:
        raise ValueError(f"`results` mix completion-ratio thresholds {sorted(thresholds)}")
    values: dict[str, float | int] = {}
    for f in fields(ReconstructionMetrics):
        column = [getattr(r, f.name) for r in results]
        if f.name in ("num_pred", "num_gt"):
            values[f.name] = sum(column)
        else:
            values[f.name] = math.fsum(column) / len(column)
    values["threshold"] = results[0].threshold
    return ReconstructionMetrics(**values)


# ----------------------------------------------------------------------------------------------
# helpers (float64 tensors, no argument checks)


def _median(x: Tensor) -> float:
    """NumPy's median: the mean of the two middle values for an even count."""
    n = x.numel()
    if n == 0:
        return _NAN
    lo = x.kthvalue((n + 1) // 2).values
    hi = x.kthvalue(n // 2 + 1).values
    return float((lo + hi) / 2)


def _unit(normals: Tensor) -> tuple[Tensor, Tensor]:
    """Unit normals and the mask of non-zero ones (a zero normal means "no normal")."""
    norm = torch.linalg.vector_norm(normals, dim=-1)
    has = norm > 0
    return normals / norm.clamp_min(torch.finfo(normals.dtype).tiny)[:, None], has


def _abs_cos(
    n_query: Tensor, has_query: Tensor, n_ref: Tensor, has_ref: Tensor, idx: Tensor
) -> Tensor:
    keep = has_query & has_ref[idx]
    return (n_query[keep] * n_ref[idx[keep]]).sum(-1).abs().clamp(max=1.0)


def _align_transform(pred: Tensor, gt: Tensor, align: str, weights: Tensor | None) -> Tensor:
    """``[4, 4]`` float64 transform of ``pred`` onto ``gt`` from correspondences ``[K, 3]``."""
    from spatialmem.geometry.alignment import median_scale_shift, umeyama

    eye = torch.eye(4, dtype=torch.float64, device=pred.device)
    if align == "none":
        return eye
    if align == "median":
        valid = torch.ones(1, pred.shape[0], dtype=torch.bool, device=pred.device)
        scale, shift = median_scale_shift(pred[None], gt[None], valid)
        out = eye * scale[0]
        out[3, 3] = 1.0
        out[:3, 3] = shift[0]
        return out
    if pred.shape[0] < 3:
        raise ValueError(f"align={align!r} needs at least 3 correspondences, got {pred.shape[0]}")
    w = None if weights is None else weights.to(torch.float64)[None]
    return umeyama(pred[None], gt[None], w, with_scale=align == "sim3")[0].to(torch.float64)


def _apply(transform: Tensor, points: Tensor) -> Tensor:
    return points @ transform[:3, :3].T + transform[:3, 3]


@dataclass(frozen=True, eq=False)
class _Distances:
    acc: Tensor  # N: pred -> nearest gt
    acc_idx: Tensor
    comp: Tensor  # M: gt -> nearest pred
    comp_idx: Tensor


def _distances(
    pred: Tensor, gt: Tensor, backend: str, chunk: int, workers: int
) -> tuple[_Distances, NeighborIndex, NeighborIndex]:
    gt_index = NeighborIndex(gt, backend=backend, chunk=chunk, workers=workers)
    pred_index = NeighborIndex(pred, backend=backend, chunk=chunk, workers=workers)
    d_acc, i_acc = gt_index.query(pred, 1)
    d_comp, i_comp = pred_index.query(gt, 1)
    return _Distances(d_acc[:, 0], i_acc[:, 0], d_comp[:, 0], i_comp[:, 0]), gt_index, pred_index


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"`threshold` must be a finite non-negative distance, got {threshold!r}")
    return value


def _check_normals(name: str, normals: object, cloud: Tensor, cloud_name: str) -> Tensor:
    n = cloud.shape[0]
    normals = check_tensor(name, normals, ndim=2, floating=True, dims={-1: 3}, expected="N 3")
    if normals.shape[0] != n:
        raise ValueError(
            f"`{name}` must have one normal per point of `{cloud_name}`: shape ({n}, 3), got "
            f"{tuple(normals.shape)}"
        )
    check_finite(name, normals)
    return normals


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")
    return str(value)


# ----------------------------------------------------------------------------------------------
# single metrics


def _one_way(query: Tensor, reference: Tensor, backend: Backend, chunk: int) -> tuple[float, float]:
    """Mean and median distance from each ``query`` point to its nearest ``reference`` point."""
    dist = NeighborIndex(reference, backend=backend, chunk=chunk).query(query, 1)[0][:, 0]
    return float(dist.mean()), _median(dist)


def accuracy(
    pred: Float[Tensor, "N 3"],
    gt: Float[Tensor, "M 3"],
    *,
    backend: Backend = "auto",
    chunk: int = 2048,
) -> tuple[float, float]:
    """Accuracy: mean and median distance from each predicted point to the nearest ground-truth
    point (lower is better).

    Args:
        pred: ``[N, 3]`` predicted points.
        gt: ``[M, 3]`` ground-truth points.
        backend: nearest-neighbour backend (``"kdtree"`` needs SciPy, the ``eval`` extra; see
            [`NeighborIndex`][spatialmem.metrics.NeighborIndex]).
        chunk: block size of the torch backend.

    Returns:
        ``(mean, median)``.

    Raises:
        TypeError: non-floating inputs.
        ValueError: clouds not ``[*, 3]``, empty, or with NaN/Inf.
    """
    _check_cloud("pred", pred, "N")
    _check_cloud("gt", gt, "M")
    return _one_way(pred, gt, backend, chunk)


def completion(
    pred: Float[Tensor, "N 3"],
    gt: Float[Tensor, "M 3"],
    *,
    backend: Backend = "auto",
    chunk: int = 2048,
) -> tuple[float, float]:
    """Completion: mean and median distance from each ground-truth point to the nearest
    predicted point (lower is better).

    Args:
        pred: ``[N, 3]`` predicted points.
        gt: ``[M, 3]`` ground-truth points.
        backend: nearest-neighbour backend (``"kdtree"`` needs SciPy, the ``eval`` extra).
        chunk: block size of the torch backend.

    Returns:
        ``(mean, median)``.

    Raises:
        TypeError: non-floating inputs.
        ValueError: clouds not ``[*, 3]``, empty, or with NaN/Inf.
    """
    _check_cloud("pred", pred, "N")
    _check_cloud("gt", gt, "M")
    return _one_way(gt, pred, backend, chunk)


def completion_ratio(
    pred: Float[Tensor, "N 3"],
    gt: Float[Tensor, "M 3"],
    threshold: float = 0.05,
    *,
    backend: Backend = "auto",
    chunk: int = 2048,
) -> float:
    """Fraction of ground-truth points with a predicted point closer than ``threshold``.

    Strict comparison (``distance < threshold``), as the official ``completion_ratio``; so it is
    0 at ``threshold = 0`` and non-decreasing in ``threshold``.

    Args:
        pred: ``[N, 3]`` predicted points.
        gt: ``[M, 3]`` ground-truth points.
        threshold: distance, ``>= 0``, in the units of the clouds.
        backend: nearest-neighbour backend (``"kdtree"`` needs SciPy, the ``eval`` extra).
        chunk: block size of the torch backend.

    Returns:
        The ratio in ``[0, 1]``.

    Raises:
        TypeError: non-floating inputs.
        ValueError: clouds not ``[*, 3]``, empty, or with NaN/Inf; a negative threshold.
    """
    _check_cloud("pred", pred, "N")
    _check_cloud("gt", gt, "M")
    tau = _check_threshold(threshold)
    index = NeighborIndex(pred, backend=backend, chunk=chunk)
    dist = index.query(gt, 1)[0][:, 0]
    return float((dist < tau).double().mean())


def chamfer_distance(
    pred: Float[Tensor, "N 3"],
    gt: Float[Tensor, "M 3"],
    *,
    backend: Backend = "auto",
    chunk: int = 2048,
) -> float:
    """Chamfer distance ``(accuracy + completion) / 2`` (means of the nearest-neighbour
    distances in both directions; symmetric in ``pred`` and ``gt``).

    Args:
        pred: ``[N, 3]`` predicted points.
        gt: ``[M, 3]`` ground-truth points.
        backend: nearest-neighbour backend (``"kdtree"`` needs SciPy, the ``eval`` extra).
        chunk: block size of the torch backend.

    Returns:
        The distance (0 for identical clouds).

    Raises:
        TypeError: non-floating inputs.
        ValueError: clouds not ``[*, 3]``, empty, or with NaN/Inf.
    """
    _check_cloud("pred", pred, "N")
    _check_cloud("gt", gt, "M")
    d, _, _ = _distances(pred.detach().double(), gt.detach().double(), backend, chunk, -1)
    return (float(d.acc.mean()) + float(d.comp.mean())) / 2


def normal_consistency(
    pred: Float[Tensor, "N 3"],
    gt: Float[Tensor, "M 3"],
    pred_normals: Float[Tensor, "N 3"],
    gt_normals: Float[Tensor, "M 3"],
    *,
    backend: Backend = "auto",
    chunk: int = 2048,
) -> tuple[float, float]:
    """Normal consistency: absolute cosine between the normals of nearest-neighbour pairs,
    averaged over both directions (higher is better, at most 1).

    ``(NC1 + NC2) / 2`` and ``(median NC1 + median NC2) / 2``, where ``NC1`` runs over every
    predicted point and its nearest ground-truth point and ``NC2`` over every ground-truth point
    and its nearest predicted point (the official ``NC1`` and ``NC2``). Normals need not be unit
    length or oriented; a zero normal marks a point without a normal, and pairs involving one
    are left out.

    Args:
        pred: ``[N, 3]`` predicted points.
        gt: ``[M, 3]`` ground-truth points.
        pred_normals: ``[N, 3]`` normals of ``pred``.
        gt_normals: ``[M, 3]`` normals of ``gt``.
        backend: nearest-neighbour backend (``"kdtree"`` needs SciPy, the ``eval`` extra).
        chunk: block size of the torch backend.

    Returns:
        ``(mean, median)``; NaN when no pair has two normals.

    Raises:
        TypeError: non-floating inputs.
        ValueError: shapes that do not match, empty clouds, NaN/Inf.
    """
    _check_cloud("pred", pred, "N")
    _check_cloud("gt", gt, "M")
    _check_normals("pred_normals", pred_normals, pred, "pred")
    _check_normals("gt_normals", gt_normals, gt, "gt")
    d, _, _ = _distances(pred.detach().double(), gt.detach().double(), backend, chunk, -1)
    n_pred, has_pred = _unit(pred_normals.detach().double())
    n_gt, has_gt = _unit(gt_normals.detach().double())
    nc1 = _abs_cos(n_pred, has_pred, n_gt, has_gt, d.acc_idx)
    nc2 = _abs_cos(n_gt, has_gt, n_pred, has_pred, d.comp_idx)
    return _nc_summary(nc1, nc2)[:2]


def _nc_summary(nc1: Tensor, nc2: Tensor) -> tuple[float, float, float, float, float, float]:
    m1 = float(nc1.mean()) if nc1.numel() else _NAN
    m2 = float(nc2.mean()) if nc2.numel() else _NAN
    med1, med2 = _median(nc1), _median(nc2)
    return (m1 + m2) / 2, (med1 + med2) / 2, m1, med1, m2, med2


# ----------------------------------------------------------------------------------------------
# full evaluation


def _evaluate(
    pred: Tensor,
    gt: Tensor,
    *,
    pred_normals: Tensor | None,
    gt_normals: Tensor | None,
    align: str,
    weights: Tensor | None,
    threshold: float,
    icp_threshold: float | None,
    icp_iterations: int,
    normals: bool,
    normal_k: int,
    backend: str,
    chunk: int,
    workers: int,
) -> ReconstructionMetrics:
    """The evaluation on float64 clouds (checked by the caller)."""
    transform = _align_transform(pred, gt, align, weights)
    gt_index = NeighborIndex(gt, backend=backend, chunk=chunk, workers=workers)
    if icp_threshold is not None:
        transform = _icp(
            pred,
            gt_index,
            gt,
            max_distance=icp_threshold,
            max_iterations=icp_iterations,
            tolerance=1e-6,
            init=transform,
            with_scale=False,
        ).transform
    pred = _apply(transform, pred)
    pred_index = NeighborIndex(pred, backend=backend, chunk=chunk, workers=workers)
    d_acc, i_acc = (t[:, 0] for t in gt_index.query(pred, 1))
    d_comp, i_comp = (t[:, 0] for t in pred_index.query(gt, 1))
    acc, comp = float(d_acc.mean()), float(d_comp.mean())

    nc = (_NAN,) * 6
    if pred_normals is not None:
        pred_normals = pred_normals @ transform[:3, :3].T  # the scale goes in the normalisation
    if normals or (pred_normals is not None and gt_normals is not None):
        if pred_normals is None and normals and pred.shape[0] >= 3:
            pred_normals = _pca_normals(pred, pred_index, normal_k, chunk)
        if gt_normals is None and normals and gt.shape[0] >= 3:
            gt_normals = _pca_normals(gt, gt_index, normal_k, chunk)
        if pred_normals is not None and gt_normals is not None:
            n_pred, has_pred = _unit(pred_normals)
            n_gt, has_gt = _unit(gt_normals)
            nc = _nc_summary(
                _abs_cos(n_pred, has_pred, n_gt, has_gt, i_acc),
                _abs_cos(n_gt, has_gt, n_pred, has_pred, i_comp),
            )
    return ReconstructionMetrics(
        acc=acc,
        acc_med=_median(d_acc),
        comp=comp,
        comp_med=_median(d_comp),
        nc=nc[0],
        nc_med=nc[1],
        chamfer=(acc + comp) / 2,
        completion_ratio=float((d_comp < threshold).double().mean()),
        threshold=threshold,
        num_pred=int(pred.shape[0]),
        num_gt=int(gt.shape[0]),
        nc_acc=nc[2],
        nc_acc_med=nc[3],
        nc_comp=nc[4],
        nc_comp_med=nc[5],
    )


def _check_options(
    align: object,
    threshold: float,
    icp_threshold: float | None,
    icp_iterations: int,
    normal_k: int,
    chunk: int,
) -> tuple[str, float, float | None]:
    align = _check_choice("align", align, _ALIGNS)
    tau = _check_threshold(threshold)
    if icp_threshold is not None:
        icp_threshold = float(icp_threshold)
        if not icp_threshold > 0 or math.isinf(icp_threshold):
            raise ValueError(f"`icp_threshold` must be positive and finite, got {icp_threshold!r}")
    if icp_iterations < 0:
        raise ValueError(f"`icp_iterations` must be non-negative, got {icp_iterations!r}")
    if isinstance(normal_k, bool) or not isinstance(normal_k, int) or normal_k < 3:
        raise ValueError(f"`normal_k` must be an integer >= 3, got {normal_k!r}")
    _check_chunk(chunk)
    return align, tau, icp_threshold


def evaluate_pointclouds(
    pred: Float[Tensor, "N 3"],
    gt: Float[Tensor, "M 3"],
    *,
    pred_normals: Float[Tensor, "N 3"] | None = None,
    gt_normals: Float[Tensor, "M 3"] | None = None,
    align: Align = "none",
    weights: Float[Tensor, "N"] | None = None,
    threshold: float = 0.05,
    icp_threshold: float | None = None,
    icp_iterations: int = 30,
    normals: bool = True,
    normal_k: int = 30,
    backend: Backend = "auto",
    chunk: int = 2048,
    workers: int = -1,
) -> ReconstructionMetrics:
    """Accuracy, completion, normal consistency, Chamfer distance and completion ratio of a
    predicted cloud against the ground truth.

    Steps: optional alignment on correspondences (``align``), optional ICP refinement
    (``icp_threshold``, see [`icp`][spatialmem.metrics.icp]), normals (given, or estimated on
    each cloud with [`estimate_normals`][spatialmem.metrics.estimate_normals]'s PCA of
    ``normal_k`` neighbours, Open3D's default that the official evaluation uses), then one
    nearest-neighbour search in each direction. Computed in float64. Conventions of the official
    evaluation: NC averaged over both directions, NumPy medians, strict threshold (see
    [`ReconstructionMetrics`][spatialmem.metrics.ReconstructionMetrics]). For pointmaps with
    pixel correspondences use [`evaluate_pointmaps`][spatialmem.metrics.evaluate_pointmaps].

    Args:
        pred: ``[N, 3]`` predicted points.
        gt: ``[M, 3]`` ground-truth points.
        pred_normals: ``[N, 3]`` normals of ``pred`` in its frame before alignment (rotated with
            it); a zero row marks a point without a normal. ``None``: estimated when
            ``normals``.
        gt_normals: ``[M, 3]`` normals of ``gt``, same conventions.
        align: ``"none"``; or, when ``pred[i]`` and ``gt[i]`` are the same surface point
            (``N == M``): ``"median"`` (official median scale-shift, ``z`` = depth of frame 0's
            camera), ``"sim3"`` or ``"rigid"`` (Umeyama). See
            [`Align`][spatialmem.metrics.Align].
        weights: ``[N]`` non-negative weights of the correspondences for ``"sim3"`` /
            ``"rigid"`` (e.g. confidences); ignored otherwise.
        threshold: distance of the completion ratio (official 0.05).
        icp_threshold: ICP inlier distance after the alignment (official 0.1, or 100 for DTU in
            millimetres); ``None`` skips ICP.
        icp_iterations: most ICP updates.
        normals: estimate missing normals (``False``: no estimation, so NC is NaN unless both
            normals are given).
        normal_k: neighbours of the normal estimation.
        backend: nearest-neighbour backend, ``"auto"``, ``"kdtree"`` (SciPy, the ``eval``
            extra) or ``"torch"``; see [`NeighborIndex`][spatialmem.metrics.NeighborIndex].
        chunk: block size of the torch backend and of the normal estimation.
        workers: threads of the k-d tree queries (``-1``: all cores).

    Returns:
        The [`ReconstructionMetrics`][spatialmem.metrics.ReconstructionMetrics]; the NC fields
        are NaN without normals (or for a cloud of fewer than 3 points, whose normals cannot be
        estimated).

    Raises:
        TypeError: non-floating points or normals.
        ValueError: clouds not ``[*, 3]``, empty, or with NaN/Inf; normals or weights whose
            shape does not match their cloud; ``align`` other than ``"none"`` with ``N != M``
            (or fewer than 3 points for ``"sim3"``/``"rigid"``); invalid options.
        ImportError: ``backend="kdtree"`` without SciPy.

    Example:
        ```python
        import torch
        from spatialmem.metrics import evaluate_pointclouds

        xy = torch.rand(2000, 2)
        floor = torch.cat([xy, torch.zeros(2000, 1)], dim=1)
        lifted = floor + torch.tensor([0.0, 0.0, 0.02])          # the same plane, 2 cm higher
        m = evaluate_pointclouds(lifted, floor)
        assert abs(m.acc - 0.02) < 1e-6 and abs(m.comp - 0.02) < 1e-6
        assert m.nc > 0.99 and m.completion_ratio == 1.0
        ```
    """
    _check_cloud("pred", pred, "N")
    _check_cloud("gt", gt, "M")
    align, tau, icp_threshold = _check_options(
        align, threshold, icp_threshold, icp_iterations, normal_k, chunk
    )
    if pred_normals is not None:
        _check_normals("pred_normals", pred_normals, pred, "pred")
    if gt_normals is not None:
        _check_normals("gt_normals", gt_normals, gt, "gt")
    if align != "none" and pred.shape != gt.shape:
        raise ValueError(
            f"align={align!r} needs corresponding points (`pred[i]` and `gt[i]` the same "
            f"surface point), so `pred` and `gt` must have the same shape [N, 3], got "
            f"{tuple(pred.shape)} and {tuple(gt.shape)}; use align='none', or "
            "evaluate_pointmaps for pointmaps with pixel correspondences"
        )
    if weights is not None:
        check_tensor("weights", weights, ndim=1, floating=True, expected="N")
        if weights.shape[0] != pred.shape[0]:
            raise ValueError(
                f"`weights` must have one weight per point of `pred`: shape ({pred.shape[0]},), "
                f"got {tuple(weights.shape)}"
            )
        check_finite("weights", weights)
    device = pred.device
    with internal_calls():
        return _evaluate(
            pred.detach().double(),
            gt.detach().to(device=device, dtype=torch.float64),
            pred_normals=None if pred_normals is None else pred_normals.detach().double(),
            gt_normals=None
            if gt_normals is None
            else gt_normals.detach().to(device=device, dtype=torch.float64),
            align=align,
            weights=None if weights is None else weights.detach().to(device),
            threshold=tau,
            icp_threshold=icp_threshold,
            icp_iterations=icp_iterations,
            normals=normals,
            normal_k=normal_k,
            backend=backend,
            chunk=chunk,
            workers=workers,
        )


def evaluate_pointmaps(
    pred: Float[Tensor, "*frames H W 3"],
    gt: Float[Tensor, "*frames H W 3"],
    valid: Bool[Tensor, "*frames H W"] | None = None,
    conf: Float[Tensor, "*frames H W"] | None = None,
    *,
    align: Align = "none",
    conf_threshold: float | None = None,
    threshold: float = 0.05,
    icp_threshold: float | None = None,
    icp_iterations: int = 30,
    normals: NormalSource = "cloud",
    normal_k: int = 30,
    voxel_size: float | None = None,
    max_points: int | None = None,
    seed: int = 0,
    backend: Backend = "auto",
    chunk: int = 2048,
    workers: int = -1,
) -> ReconstructionMetrics:
    """Evaluate the predicted pointmaps of one scene against ground-truth pointmaps.

    Predicted and ground-truth points of the same pixel correspond, which the alignment uses;
    the metrics then compare the two clouds of valid points, as the official evaluation does:

    1. ``keep = valid`` (and ``conf >= conf_threshold`` when given): the pixels used;
    2. alignment on the corresponding points of the kept pixels (``align``: official median
       scale-shift, or Umeyama ``"sim3"``/``"rigid"`` weighted by ``conf`` when given), applied
       to every predicted point;
    3. with ``normals="pointmap"``, normals of both pointmaps from the pixel grid
       ([`normals_from_pointmap`][spatialmem.geometry.normals.normals_from_pointmap]; pixels
       without a valid normal are left out of NC);
    4. the clouds: predicted points of the kept pixels, ground-truth points of the valid pixels;
    5. optional deterministic subsampling of each cloud for speed: first
       ``voxel_size`` (one original point per occupied voxel,
       [`voxel_downsample_indices`][spatialmem.metrics.voxel_downsample_indices]), then at most
       ``max_points`` points (seeded uniform subset,
       [`random_subset_indices`][spatialmem.metrics.random_subset_indices]). The paper's
       numbers use the full clouds (neither option);
    6. [`evaluate_pointclouds`][spatialmem.metrics.evaluate_pointclouds] on the two clouds
       (ICP with ``icp_threshold``, PCA normals on the evaluated clouds with
       ``normals="cloud"``).

    The official protocol is ``align="median", icp_threshold=0.1`` (100 for DTU in millimetres),
    with pointmaps in frame 0's camera frame. One scene per call: a batch ``[B, T, H, W, 3]`` is
    accepted only with ``B = 1``; loop over the scenes of a larger batch.

    Args:
        pred: predicted pointmaps ``[H, W, 3]``, ``[T, H, W, 3]`` or ``[1, T, H, W, 3]``.
        gt: ground-truth pointmaps, same shape (invalid pixels may hold NaN/Inf).
        valid: bool mask of pixels with ground truth, shape ``pred.shape[:-1]``; ``None``: every
            pixel.
        conf: predicted confidence, shape ``pred.shape[:-1]``: weights of the ``"sim3"`` and
            ``"rigid"`` fits and what ``conf_threshold`` compares with.
        align: see [`Align`][spatialmem.metrics.Align].
        conf_threshold: drop predicted pixels with ``conf`` below it (needs ``conf``).
        threshold: distance of the completion ratio (official 0.05).
        icp_threshold: ICP inlier distance after the alignment; ``None`` skips ICP.
        icp_iterations: most ICP updates.
        normals: ``"cloud"`` (PCA of ``normal_k`` neighbours, as the official script),
            ``"pointmap"`` or ``"none"``; see [`NormalSource`][spatialmem.metrics.NormalSource].
        normal_k: neighbours of the cloud normal estimation.
        voxel_size: voxel side of the subsampling; ``None``: none.
        max_points: most points kept in each cloud; ``None``: all.
        seed: seed of the ``max_points`` subset.
        backend: nearest-neighbour backend (``"kdtree"`` needs SciPy, the ``eval`` extra).
        chunk: block size of the torch backend and of the normal estimation.
        workers: threads of the k-d tree queries (``-1``: all cores).

    Returns:
        The [`ReconstructionMetrics`][spatialmem.metrics.ReconstructionMetrics] of the scene
        (``num_pred`` and ``num_gt`` count the evaluated points, after subsampling).

    Raises:
        TypeError: non-floating pointmaps or confidence, a non-bool mask.
        ValueError: shapes that do not match or are not pointmaps, a batch of several scenes,
            NaN/Inf at kept pixels, no valid pixel (or no kept one), ``conf_threshold``
            without ``conf``, invalid options.

    Example:
        ```python
        import torch
        from spatialmem.metrics import evaluate_pointmaps

        v, u = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 32), indexing="ij")
        depth = 2.0 + 0.3 * u                                    # a slanted wall
        gt = torch.stack([u * depth, v * depth, depth], dim=-1)[None].repeat(2, 1, 1, 1)
        pred = 0.5 * gt                                          # right shape, wrong scale
        m = evaluate_pointmaps(pred, gt, align="sim3")
        assert m.acc < 1e-5 and m.comp < 1e-5 and m.nc > 0.99
        ```
    """
    check_tensor("pred", pred, floating=True, dims={-1: 3}, expected="[B=1] [T] H W 3")
    if pred.ndim not in (3, 4, 5):
        raise ValueError(
            "`pred` must be pointmaps [H, W, 3], [T, H, W, 3] or [1, T, H, W, 3], got shape "
            f"{tuple(pred.shape)}"
        )
    if pred.ndim == 5 and pred.shape[0] != 1:
        raise ValueError(
            f"`pred` holds a batch of {pred.shape[0]} scenes (shape {tuple(pred.shape)}); "
            "evaluate_pointmaps evaluates one scene: call it once per scene (pred[b], gt[b], ...)"
        )
    shape = tuple(pred.shape)
    check_tensor("gt", gt, floating=True, expected="same shape as `pred`")
    if tuple(gt.shape) != shape:
        raise ValueError(f"`gt` must have the shape of `pred` {shape}, got {tuple(gt.shape)}")
    if valid is not None:
        check_bool_mask("valid", valid, shape[:-1], "pred.shape[:-1]")
    if conf is not None:
        check_tensor("conf", conf, floating=True, expected="pred.shape[:-1]")
        if tuple(conf.shape) != shape[:-1]:
            raise ValueError(
                f"`conf` must have shape pred.shape[:-1] = {shape[:-1]}, got {tuple(conf.shape)}"
            )
    if conf_threshold is not None and conf is None:
        raise ValueError("`conf_threshold` needs `conf`, the predicted confidence")
    normals = _check_choice("normals", normals, _NORMAL_SOURCES)
    align, tau, icp_threshold = _check_options(
        align, threshold, icp_threshold, icp_iterations, normal_k, chunk
    )
    if voxel_size is not None and not (float(voxel_size) > 0 and math.isfinite(voxel_size)):
        raise ValueError(f"`voxel_size` must be positive and finite, got {voxel_size!r}")
    if max_points is not None and max_points < 1:
        raise ValueError(f"`max_points` must be a positive integer, got {max_points!r}")

    h, w = shape[-3], shape[-2]
    device = pred.device
    pm = pred.detach().reshape(-1, h, w, 3).to(torch.float64)
    gm = gt.detach().reshape(-1, h, w, 3).to(device=device, dtype=torch.float64)
    ok = (
        torch.ones(pm.shape[:-1], dtype=torch.bool, device=device)
        if valid is None
        else valid.reshape(pm.shape[:-1]).to(device)
    )
    if not bool(ok.any()):
        raise ValueError("`valid` selects no pixel: there is no ground truth to evaluate against")
    check_finite("gt (at valid pixels)", gm[ok])
    keep = ok
    cf = None if conf is None else conf.detach().reshape(pm.shape[:-1]).to(device, torch.float64)
    if cf is not None:
        check_finite("conf (at valid pixels)", cf[ok])
        if conf_threshold is not None:
            keep = ok & (cf >= float(conf_threshold))
            if not bool(keep.any()):
                raise ValueError(
                    f"no valid pixel has `conf` >= conf_threshold={conf_threshold}: the "
                    "predicted cloud would be empty"
                )
    check_finite("pred (at kept pixels)", pm[keep])

    with internal_calls():
        weights = None if cf is None else cf[keep]
        transform = _align_transform(pm[keep], gm[keep], align, weights)
        pm = torch.where(keep[..., None], pm, 0.0)
        pm = pm @ transform[:3, :3].T + transform[:3, 3]
        pred_n = gt_n = None
        if normals == "pointmap":
            from spatialmem.geometry.normals import normals_from_pointmap

            pred_n = normals_from_pointmap(pm, keep)[0][keep]
            gt_n = normals_from_pointmap(torch.where(ok[..., None], gm, 0.0), ok)[0][ok]
        pred_pts, gt_pts = pm[keep], gm[ok]
        pred_sel = _subsample(pred_pts, voxel_size, max_points, seed)
        gt_sel = _subsample(gt_pts, voxel_size, max_points, seed)
        if pred_sel is not None:
            pred_pts = pred_pts[pred_sel]
            pred_n = None if pred_n is None else pred_n[pred_sel]
        if gt_sel is not None:
            gt_pts = gt_pts[gt_sel]
            gt_n = None if gt_n is None else gt_n[gt_sel]
        return _evaluate(
            pred_pts,
            gt_pts,
            pred_normals=pred_n,
            gt_normals=gt_n,
            align="none",
            weights=None,
            threshold=tau,
            icp_threshold=icp_threshold,
            icp_iterations=icp_iterations,
            normals=normals == "cloud",
            normal_k=normal_k,
            backend=backend,
            chunk=chunk,
            workers=workers,
        )


def _subsample(
    points: Tensor, voxel_size: float | None, max_points: int | None, seed: int
) -> Tensor | None:
    """Indices kept by the voxel and ``max_points`` subsampling (``None``: all points)."""
    sel = None
    if voxel_size is not None:
        sel = voxel_downsample_indices(points, voxel_size)
    if max_points is not None:
        n = points.shape[0] if sel is None else sel.shape[0]
        sub = random_subset_indices(n, max_points, seed=seed).to(points.device)
        sel = sub if sel is None else sel[sub]
    return sel
