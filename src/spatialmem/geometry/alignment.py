"""Aligning point clouds: weighted Umeyama Sim(3) / rigid fits and the median scale-shift
alignment of the Spann3R / DUSt3R evaluation.

Two ways to bring a prediction known only up to a similarity onto the ground truth:

* [`umeyama`][spatialmem.geometry.alignment.umeyama]: the weighted least-squares similarity (or
  rigid transform) between corresponding points, closed form (Umeyama 1991). It is also the
  inner step of point-to-point ICP.
* [`median_scale_shift`][spatialmem.geometry.alignment.median_scale_shift]: the robust alignment
  of the official Spann3R evaluation (``Regr3D_t_ScaleShiftInv`` with ``gt_scale=True`` in
  ``eval.py``; the paper aligns "following DUSt3R"): a median depth shift along the camera ``z``
  axis and a median-distance scale, computed in frame 0's camera frame. The official script then
  refines with ICP before measuring accuracy, completion and normal consistency.

Every function is batched (one independent problem per batch element ``B``) and computes in
float32 (float64 only when given float64).
"""

import torch
from torch import Tensor

from spatialmem._checks import check_bool_mask, check_tensor, value_checks_enabled
from spatialmem._typing import Bool, Float
from spatialmem.geometry.transforms import sim3, transform_points

__all__ = [
    "apply_scale_shift",
    "masked_median",
    "median_scale",
    "median_scale_shift",
    "trimmed_umeyama",
    "umeyama",
]

_PRED_SCALE_RANGE = (1e-3, 1e3)
_TINY = 1e-12


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32, or float64 when an input is float64 (half precision is promoted)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_points(name: str, x: object, expected: str) -> Tensor:
    return check_tensor(name, x, ndim=3, floating=True, dims={-1: 3}, expected=expected)


def _check_mask_like(name: str, x: object, shape: tuple[int, ...], *, floating: bool) -> Tensor:
    want = " ".join(str(s) for s in shape)
    if not floating:
        return check_bool_mask(name, x, shape, f"B N = {want}")
    x = check_tensor(name, x, floating=True, expected=f"B N = {want}")
    if tuple(x.shape) != shape:
        raise ValueError(f"`{name}` must have shape [B, N] = {list(shape)}, got {tuple(x.shape)}")
    return x


def umeyama(
    src: Float[Tensor, "B N 3"],
    dst: Float[Tensor, "B N 3"],
    weights: Float[Tensor, "B N"] | None = None,
    mask: Bool[Tensor, "B N"] | None = None,
    *,
    with_scale: bool = True,
) -> Float[Tensor, "B 4 4"]:
    """Weighted least-squares similarity (or rigid transform) mapping ``src`` onto ``dst``.

    Minimises ``sum_n w_n |dst_n - (s R src_n + t)|^2`` per batch element in closed form
    (Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", TPAMI 1991): centre both clouds on their weighted means, take the SVD
    ``U D V^T`` of the weighted cross-covariance, ``R = U S V^T`` with
    ``S = diag(1, 1, det(U) det(V))`` (the reflection fix: ``R`` is always a proper rotation),
    ``s = trace(D S) / var(src)`` and ``t = mean(dst) - s R mean(src)``.

    Computed in float32 (float64 for float64 inputs) on centred data. Masked-out points may hold
    NaN or Inf: they are replaced before any arithmetic. Gradients flow through
    ``torch.linalg.svd`` (undefined where singular values repeat, e.g. for symmetric clouds).

    Args:
        src: ``[B, N, 3]`` source points.
        dst: ``[B, N, 3]`` corresponding target points.
        weights: ``[B, N]`` non-negative weight of each correspondence (e.g. a confidence);
            ``None`` weighs all equally.
        mask: ``[B, N]`` bool, ``False`` drops a correspondence (same as a zero weight).
        with_scale: fit a similarity; ``False`` fits a rigid transform (``s = 1``).

    Returns:
        ``[B, 4, 4]`` transforms ``[[s R, t], [0, 1]]`` with ``dst ≈ T @ src``, in float32
        (float64 for float64 inputs). Apply them with
        [`transform_points`][spatialmem.geometry.transforms.transform_points].

    Raises:
        TypeError: non-tensor or non-floating points, or a mask that is not bool.
        ValueError: shapes that are not ``[B, N, 3]`` / ``[B, N]``, NaN/Inf points of positive
            weight, negative weights, or a batch element with fewer than three points of
            positive weight (the fit is then not unique). The last three checks read tensor
            values; with value checks off
            ([`set_value_checks(False)`][spatialmem.set_value_checks]) they are skipped and such
            an element gets the identity.

    Example:
        ```python
        import torch
        from spatialmem.geometry import sim3, transform_points, umeyama

        rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        truth = sim3(torch.tensor([2.0]), rot[None], torch.tensor([[1.0, 2.0, 3.0]]))
        src = torch.randn(1, 100, 3)
        fit = umeyama(src, transform_points(truth, src))
        assert torch.allclose(fit, truth, atol=1e-4)
        ```
    """
    src = _check_points("src", src, "B N 3")
    dst = _check_points("dst", dst, "B N 3")
    if src.shape != dst.shape:
        raise ValueError(
            f"`src` and `dst` must have the same shape [B, N, 3], got {tuple(src.shape)} and "
            f"{tuple(dst.shape)}"
        )
    bn = tuple(src.shape[:2])
    dtype = _compute_dtype(src, dst)
    if weights is None:
        w = torch.ones(bn, dtype=dtype, device=src.device)
    else:
        w = _check_mask_like("weights", weights, bn, floating=True).to(dtype)
    if mask is not None:
        w = torch.where(_check_mask_like("mask", mask, bn, floating=False), w, 0.0)
    keep = w > 0  # also drops NaN weights
    degenerate = keep.sum(1) < 3
    if value_checks_enabled():
        for name, pts in (("src", src), ("dst", dst)):
            n_bad = int((~torch.isfinite(pts).all(-1) & keep).sum())
            if n_bad:
                raise ValueError(
                    f"`{name}` holds NaN/Inf at {n_bad} point(s) of positive weight (shape "
                    f"{tuple(pts.shape)}); mask them out with `mask` or `weights`"
                )
        if weights is not None and bool((w < 0).any()):
            raise ValueError("`weights` must be non-negative")
        if bool(degenerate.any()):
            bad = degenerate.nonzero()[:, 0].tolist()
            raise ValueError(
                "umeyama needs at least 3 points of positive weight (and `mask` true) in every "
                f"batch element; batch elements {bad} have fewer"
            )
    w = torch.where(keep, w, 0.0)
    s = torch.where(keep[..., None], src.to(dtype), 0.0)
    d = torch.where(keep[..., None], dst.to(dtype), 0.0)
    wn = w / w.sum(1, keepdim=True).clamp_min(_TINY)  # normalised weights
    mu_s = torch.einsum("bn,bni->bi", wn, s)
    mu_d = torch.einsum("bn,bni->bi", wn, d)
    sc = torch.where(keep[..., None], s - mu_s[:, None], 0.0)
    dc = torch.where(keep[..., None], d - mu_d[:, None], 0.0)
    cov = torch.einsum("bn,bni,bnj->bij", wn, dc, sc)  # dst x src
    u, sig, vh = torch.linalg.svd(cov)
    # Reflection fix: det(U) det(V) is +-1 (also for coplanar clouds, where det(cov) = 0).
    last = torch.where(torch.linalg.det(u) * torch.linalg.det(vh) < 0, -1.0, 1.0).to(dtype)
    diag = torch.stack([torch.ones_like(last), torch.ones_like(last), last], dim=-1)
    rot = u @ (diag[:, :, None] * vh)
    if with_scale:
        var_s = torch.einsum("bn,bn->b", wn, sc.square().sum(-1))
        scale = (sig * diag).sum(-1) / var_s.clamp_min(_TINY)
    else:
        scale = torch.ones_like(sig[:, 0])
    trans = mu_d - scale[:, None] * (rot @ mu_s[:, :, None])[..., 0]
    out = sim3(scale, rot, trans)
    if not value_checks_enabled():
        eye = torch.eye(4, dtype=dtype, device=out.device)
        out = torch.where(degenerate[:, None, None], eye, out)
    return out


def trimmed_umeyama(
    src: Float[Tensor, "B N 3"],
    dst: Float[Tensor, "B N 3"],
    weights: Float[Tensor, "B N"],
    trim: float,
    *,
    rounds: int = 2,
) -> Float[Tensor, "B 4 4"]:
    """Weighted [`umeyama`][spatialmem.geometry.alignment.umeyama] similarity refitted
    ``rounds`` times without the ``trim`` fraction of points with the largest residuals, so
    that a few badly predicted points do not tilt the fit.

    Args:
        src: ``[B, N, 3]`` points to map.
        dst: ``[B, N, 3]`` the same points in the target coordinates.
        weights: ``[B, N]`` non-negative weights (e.g. products of confidences).
        trim: fraction of points left out of each refit, in ``[0, 1)``; ``0`` fits once on all.
        rounds: refits after the first fit.

    Returns:
        ``[B, 4, 4]`` similarities mapping ``src`` onto ``dst``.

    Raises:
        ValueError: ``trim`` is not in ``[0, 1)``, ``rounds`` is negative, or the points and
            weights are refused by [`umeyama`][spatialmem.geometry.alignment.umeyama].
    """
    if isinstance(trim, bool) or not isinstance(trim, int | float) or not 0.0 <= trim < 1.0:
        raise ValueError(f"`trim` must be a number in [0, 1), got {trim!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"`rounds` must be a non-negative int, got {rounds!r}")
    sim = umeyama(src, dst, weights=weights)
    if trim <= 0:
        return sim
    for _ in range(rounds):
        residual = (transform_points(sim, src) - dst).norm(dim=-1)
        keep = residual <= torch.quantile(residual, 1.0 - trim, dim=1, keepdim=True)
        sim = umeyama(src, dst, weights=weights, mask=keep)
    return sim


def masked_median(
    values: Float[Tensor, "B *rest"], valid: Bool[Tensor, "B *rest"]
) -> Float[Tensor, "B"]:
    """Median of each sample's valid values.

    The "lower" median (the lower middle value for an even count), as ``torch.nanmedian`` and
    the official evaluation compute it.

    Args:
        values: ``[B, ...]`` values of each sample (any trailing shape).
        valid: ``[B, ...]`` bool, same shape: which values count.

    Returns:
        ``[B]`` medians; NaN for a sample without valid values.
    """
    masked = torch.where(valid, values, torch.nan)
    return masked.flatten(1).nanmedian(dim=1).values


def median_scale(
    pts3d: Float[Tensor, "B *rest 3"], valid: Bool[Tensor, "B *rest"]
) -> Float[Tensor, "B"]:
    """Median distance of each sample's valid points to their per-coordinate median point.

    Args:
        pts3d: ``[B, ..., 3]`` points of each sample (e.g. ``[B, T, H, W, 3]``).
        valid: ``[B, ...]`` bool: which points count.

    Returns:
        ``[B]`` scales (lower medians, see
        [`masked_median`][spatialmem.geometry.alignment.masked_median]); NaN for a sample
        without valid points.
    """
    masked = torch.where(valid[..., None], pts3d, torch.nan).flatten(1, -2)  # B M 3
    centre = masked.nanmedian(dim=1).values  # B 3
    dist = torch.linalg.vector_norm(masked - centre[:, None], dim=-1)  # NaN where invalid
    return dist.nanmedian(dim=1).values


def _z_vector(z: Tensor) -> Tensor:
    zeros = torch.zeros_like(z)
    return torch.stack([zeros, zeros, z], dim=-1)


def median_scale_shift(
    pred: Float[Tensor, "B *rest 3"],
    gt: Float[Tensor, "B *rest 3"],
    valid: Bool[Tensor, "B *rest"],
    *,
    scale_range: tuple[float, float] = _PRED_SCALE_RANGE,
) -> tuple[Float[Tensor, "B"], Float[Tensor, "B 3"]]:
    """The median scale-shift alignment of the official Spann3R evaluation.

    The paper (Sec. 4.1) aligns the reconstruction "following DUSt3R"; the official
    ``eval.py`` does it with ``Regr3D_t_ScaleShiftInv(gt_scale=True)`` (reference README items
    30-34), per batch element, on points in frame 0's camera frame (``z`` = depth):

    1. shift: ``z_gt`` = median ``z`` of the valid ground-truth points, ``z_pred`` = median
       ``z`` of the predictions at the same pixels; only ``z`` is shifted;
    2. scale: ``scale_gt`` and ``scale_pred`` =
       [`median_scale`][spatialmem.geometry.alignment.median_scale] of the shifted clouds,
       ``scale_pred`` clipped to ``scale_range``;
    3. ``aligned = (pred - (0, 0, z_pred)) * scale_gt / scale_pred + (0, 0, z_gt)``, in the
       ground truth's frame and scale (the official script adds ``z_gt`` back to both clouds
       before ICP and the metrics).

    This function returns that map as ``aligned = scale * pred + shift``; apply it with
    [`apply_scale_shift`][spatialmem.geometry.alignment.apply_scale_shift]. Medians are lower
    medians; scale and shift carry no gradient (as in the official code; gradients still flow
    into ``pred`` through the alignment). The loss
    [`ScaleShiftInvariant`][spatialmem.losses.ScaleShiftInvariant] applies the same alignment to
    the step predictions of a sequence.

    Args:
        pred: ``[B, ..., 3]`` predicted points, one pointmap per frame (e.g. ``[B, T, H, W, 3]``),
            in a camera frame whose ``z`` is the depth.
        gt: ground-truth points in the same layout, in frame 0's camera frame.
        valid: ``[B, ...]`` bool: pixels with ground truth.
        scale_range: clip of the prediction's median scale (official ``[1e-3, 1e3]``).

    Returns:
        ``(scale [B], shift [B, 3])`` with ``shift = (0, 0, z_gt - scale * z_pred)``; NaN for a
        batch element without valid points.

    Raises:
        ValueError: ``pred``, ``gt`` and ``valid`` shapes that do not match, or a last
            dimension other than 3.
    """
    check_tensor("pred", pred, floating=True, dims={-1: 3}, expected="B ... 3")
    check_tensor("gt", gt, floating=True, dims={-1: 3}, expected="B ... 3")
    check_bool_mask("valid", valid, None, "B ...")
    if pred.shape != gt.shape or tuple(valid.shape) != tuple(pred.shape[:-1]):
        raise ValueError(
            "`pred` [B, ..., 3], `gt` [B, ..., 3] and `valid` [B, ...] must match, got "
            f"{tuple(pred.shape)}, {tuple(gt.shape)} and {tuple(valid.shape)}"
        )
    with torch.no_grad():
        gt_shift = masked_median(gt[..., 2], valid)
        pred_shift = masked_median(pred[..., 2], valid)
        gt_scale = median_scale(gt - _z_vector(gt_shift).view(-1, *[1] * (gt.ndim - 2), 3), valid)
        pred_scale = median_scale(
            pred - _z_vector(pred_shift).view(-1, *[1] * (pred.ndim - 2), 3), valid
        ).clamp(*scale_range)
        scale = gt_scale / pred_scale
        shift = _z_vector(gt_shift - scale * pred_shift)
    return scale, shift


def apply_scale_shift(
    points: Float[Tensor, "B *rest 3"], scale: Float[Tensor, "B"], shift: Float[Tensor, "B 3"]
) -> Float[Tensor, "B *rest 3"]:
    """``scale[b] * points[b] + shift[b]`` for every point of each batch element.

    Args:
        points: ``[B, ..., 3]`` points.
        scale: ``[B]`` scales.
        shift: ``[B, 3]`` translations.

    Returns:
        The transformed points, shaped like ``points``.
    """
    check_tensor("points", points, floating=True, dims={-1: 3}, expected="B ... 3")
    b = points.shape[0]
    check_tensor("scale", scale, ndim=1, floating=True, dims={0: b}, expected=f"B = {b}")
    check_tensor("shift", shift, ndim=2, floating=True, dims={0: b, 1: 3}, expected=f"{b} 3")
    view = (b, *[1] * (points.ndim - 2))
    return points * scale.view(*view, 1) + shift.view(*view, 3)
