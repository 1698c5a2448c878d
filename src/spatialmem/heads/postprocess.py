"""Mapping of raw head outputs to pointmaps and confidences (official ``postprocess``).

A head predicts four channels per pixel: ``xyz`` (channels 0-2) and a confidence logit
(channel 3). [`postprocess`][spatialmem.heads.postprocess.postprocess] moves the channels last and
maps them with a [`DepthMode`][spatialmem.heads.DepthMode] and a
[`ConfMode`][spatialmem.heads.ConfMode]. [`unmap_depth`][spatialmem.heads.unmap_depth] and
[`unmap_conf`][spatialmem.heads.unmap_conf] are the exact inverses of
[`map_depth`][spatialmem.heads.map_depth] and [`map_conf`][spatialmem.heads.map_conf] (useful to
initialise a head from target values or to compare raw outputs).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = [
    "ConfMode",
    "DepthMode",
    "HeadOutput",
    "map_conf",
    "map_depth",
    "postprocess",
    "unmap_conf",
    "unmap_depth",
]

_DEPTH_KINDS = ("linear", "square", "exp")
_CONF_KINDS = ("exp", "sigmoid")
_EPS = 1e-8  # lower bound of the norm divided by (official value)


def _check_bounds(cls_name: str, vmin: float, vmax: float) -> tuple[float, float]:
    vmin, vmax = float(vmin), float(vmax)
    if math.isnan(vmin) or math.isnan(vmax):
        raise ValueError(f"{cls_name}: bounds must not be NaN, got vmin={vmin}, vmax={vmax}")
    if vmin >= vmax:
        raise ValueError(f"{cls_name}: vmin must be < vmax, got vmin={vmin}, vmax={vmax}")
    return vmin, vmax


@dataclass(frozen=True)
class DepthMode:
    """How the ``xyz`` channels become 3-D points (official ``depth_mode``).

    With ``d = |xyz|``:

    * ``"linear"``: ``xyz`` itself, clamped elementwise to ``[vmin, vmax]``.
    * ``"square"``: ``xyz / max(d, 1e-8) * d**2``.
    * ``"exp"``: ``xyz / max(d, 1e-8) * expm1(d)`` (the published models).

    For ``"square"`` and ``"exp"`` finite bounds (which the official code rejects) clamp the
    output *distance* to ``[max(vmin, 0), vmax]``; the direction is kept.

    Args:
        kind: ``"linear"``, ``"square"`` or ``"exp"``.
        vmin: lower bound (``-inf`` for none).
        vmax: upper bound (``inf`` for none).

    Raises:
        ValueError: unknown kind, NaN bounds, ``vmin >= vmax``, or ``vmax <= 0`` for a
            distance mode.
    """

    kind: Literal["linear", "square", "exp"] = "exp"
    vmin: float = -math.inf
    vmax: float = math.inf

    def __post_init__(self) -> None:
        if self.kind not in _DEPTH_KINDS:
            raise ValueError(f"DepthMode: kind must be one of {_DEPTH_KINDS}, got {self.kind!r}")
        vmin, vmax = _check_bounds("DepthMode", self.vmin, self.vmax)
        if self.kind != "linear" and vmax <= 0:
            raise ValueError(
                f"DepthMode: {self.kind!r} bounds the distance |pts3d| >= 0, so vmax must be "
                f"> 0, got vmax={vmax}"
            )
        object.__setattr__(self, "vmin", vmin)
        object.__setattr__(self, "vmax", vmax)


@dataclass(frozen=True)
class ConfMode:
    """How the confidence channel becomes a confidence (official ``conf_mode``).

    * ``"exp"``: ``vmin + exp(x)``, the exponential clipped at ``vmax - vmin``; ``conf >= vmin``.
    * ``"sigmoid"``: ``(vmax - vmin) * sigmoid(x) + vmin``; ``conf`` in ``[vmin, vmax]``.

    Args:
        kind: ``"exp"`` or ``"sigmoid"``.
        vmin: lowest confidence; must be finite.
        vmax: highest confidence; must be finite for ``"sigmoid"``.

    Raises:
        ValueError: unknown kind, NaN or infinite ``vmin``, ``vmin >= vmax``, or an infinite
            ``vmax`` with ``"sigmoid"``.
    """

    kind: Literal["exp", "sigmoid"] = "exp"
    vmin: float = 1.0
    vmax: float = math.inf

    def __post_init__(self) -> None:
        if self.kind not in _CONF_KINDS:
            raise ValueError(f"ConfMode: kind must be one of {_CONF_KINDS}, got {self.kind!r}")
        vmin, vmax = _check_bounds("ConfMode", self.vmin, self.vmax)
        if not math.isfinite(vmin):
            raise ValueError(f"ConfMode: vmin must be finite, got vmin={vmin}")
        if self.kind == "sigmoid" and not math.isfinite(vmax):
            raise ValueError(f"ConfMode: 'sigmoid' needs finite bounds, got vmax={vmax}")
        object.__setattr__(self, "vmin", vmin)
        object.__setattr__(self, "vmax", vmax)


@dataclass
class HeadOutput(TensorDataclass):
    """Typed output of a prediction head."""

    pts3d: Float[Tensor, "B H W 3"]
    """3-D point of every pixel, ``[B, H, W, 3]``."""
    conf: Float[Tensor, "B H W"]
    """Confidence of every pixel, ``[B, H, W]``."""


def _clamp_finite(x: Tensor, lo: float, hi: float) -> Tensor:
    lo_ = lo if math.isfinite(lo) else None
    hi_ = hi if math.isfinite(hi) else None
    if lo_ is None and hi_ is None:
        return x
    return x.clamp(min=lo_, max=hi_)


def map_depth(xyz: Float[Tensor, "*batch 3"], mode: DepthMode) -> Float[Tensor, "*batch 3"]:
    """Map raw ``xyz`` to 3-D points (official ``reg_dense_depth``).

    Args:
        xyz: raw values ``[..., 3]``.
        mode: the depth mode (see [`DepthMode`][spatialmem.heads.DepthMode]).

    Returns:
        Points ``[..., 3]``.
    """
    check_tensor("xyz", xyz, floating=True, dims={-1: 3}, expected="... 3")
    if mode.kind == "linear":
        return _clamp_finite(xyz, mode.vmin, mode.vmax)
    d = xyz.norm(dim=-1, keepdim=True)
    dist = d.square() if mode.kind == "square" else torch.expm1(d)
    dist = _clamp_finite(dist, max(mode.vmin, 0.0), mode.vmax)
    return xyz / d.clamp(min=_EPS) * dist


def unmap_depth(pts3d: Float[Tensor, "*batch 3"], mode: DepthMode) -> Float[Tensor, "*batch 3"]:
    """Inverse of [`map_depth`][spatialmem.heads.map_depth].

    For ``xyz`` whose mapped value lies inside the bounds (and ``|xyz| >= 1e-8`` for the distance
    modes), ``unmap_depth(map_depth(xyz, mode), mode) == xyz`` up to float rounding. ``"linear"``
    is the identity (a clamp cannot be undone).

    Args:
        pts3d: points ``[..., 3]``.
        mode: the depth mode used by [`map_depth`][spatialmem.heads.map_depth].

    Returns:
        Raw values ``[..., 3]``.
    """
    check_tensor("pts3d", pts3d, floating=True, dims={-1: 3}, expected="... 3")
    if mode.kind == "linear":
        return pts3d
    r = pts3d.norm(dim=-1, keepdim=True)
    d = r.sqrt() if mode.kind == "square" else torch.log1p(r)
    return pts3d / r.clamp(min=torch.finfo(r.dtype).tiny) * d


def map_conf(x: Float[Tensor, "*batch"], mode: ConfMode) -> Float[Tensor, "*batch"]:
    """Map the raw confidence channel to a confidence (official ``reg_dense_conf``).

    Args:
        x: raw values of any shape.
        mode: the confidence mode (see [`ConfMode`][spatialmem.heads.ConfMode]).

    Returns:
        Confidences, same shape; ``>= vmin`` (and ``<= vmax``).
    """
    check_tensor("x", x, floating=True)
    if mode.kind == "exp":
        e = x.exp()
        if math.isfinite(mode.vmax):
            e = e.clamp(max=mode.vmax - mode.vmin)
        return mode.vmin + e
    return (mode.vmax - mode.vmin) * torch.sigmoid(x) + mode.vmin


def unmap_conf(conf: Float[Tensor, "*batch"], mode: ConfMode) -> Float[Tensor, "*batch"]:
    """Inverse of [`map_conf`][spatialmem.heads.map_conf].

    For confidences strictly inside ``(vmin, vmax)``, ``unmap_conf(map_conf(x, mode), mode) == x``
    up to float rounding (the subtraction of ``vmin`` loses relative precision when ``exp(x)`` is
    far below the float resolution of ``vmin``). ``conf == vmin`` maps to ``-inf``.

    Args:
        conf: confidences of any shape.
        mode: the confidence mode used by [`map_conf`][spatialmem.heads.map_conf].

    Returns:
        Raw values, same shape.
    """
    check_tensor("conf", conf, floating=True)
    if mode.kind == "exp":
        return torch.log(conf - mode.vmin)
    return torch.logit((conf - mode.vmin) / (mode.vmax - mode.vmin))


def postprocess(
    raw: Float[Tensor, "B 4 H W"], depth_mode: DepthMode, conf_mode: ConfMode
) -> HeadOutput:
    """Turn a raw head output into points and confidences (official ``postprocess``).

    Args:
        raw: ``[B, 4, H, W]``; channels 0-2 are ``xyz``, channel 3 the confidence.
        depth_mode: mapping of ``xyz`` ([`map_depth`][spatialmem.heads.map_depth]).
        conf_mode: mapping of the confidence ([`map_conf`][spatialmem.heads.map_conf]).

    Returns:
        [`HeadOutput`][spatialmem.heads.HeadOutput] with ``pts3d [B, H, W, 3]`` and
        ``conf [B, H, W]``.
    """
    check_tensor("raw", raw, ndim=4, floating=True, dims={1: 4}, expected="B 4 H W")
    fmap = raw.permute(0, 2, 3, 1)
    return HeadOutput(
        pts3d=map_depth(fmap[..., 0:3], depth_mode), conf=map_conf(fmap[..., 3], conf_mode)
    )
