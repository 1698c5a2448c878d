"""Typed inputs of the sequence losses: :class:`StepPredictions` and :class:`SequenceTarget`.

A Spann3R training forward on ``T`` frames runs ``S = T - 1`` pair steps; step ``i`` decodes
frame ``i`` (view 1, "left") against frame ``i + 1`` (view 2, "right"), both predicted in the
camera frame of frame 0. :class:`StepPredictions` stacks these ``2 S`` pointmaps along a step
axis; :class:`SequenceTarget` holds the ground truth of the ``T`` frames.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Bool, Float

__all__ = ["SequenceTarget", "StepPredictions"]


def _check_mask(name: str, mask: object, shape: tuple[int, ...], expected: str) -> None:
    check_tensor(name, mask, ndim=len(shape), expected=expected)
    assert isinstance(mask, Tensor)
    if mask.dtype != torch.bool:
        raise TypeError(
            f"`{name}` must have dtype torch.bool (expected {expected}), got dtype {mask.dtype}"
        )
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"`{name}` must have shape {shape} (expected {expected}), got {tuple(mask.shape)}"
        )


@dataclass(eq=False)
class StepPredictions:
    """Per-step pair predictions of a sequence model (what Spann3R's training forward returns).

    With ``T`` frames there are ``S = T - 1`` steps. Step ``i`` predicts frame ``i`` as view 1
    ("left") and frame ``i + 1`` as view 2 ("right"); all points are in the camera frame of
    frame 0. In the official layout (``preds_all``) ``pts_left[:, i]`` is ``preds_all[i][0]``'s
    ``pts3d`` (``i = 0``) or ``pts3d_in_other_view`` (``i > 0``) and ``pts_right[:, i]`` is
    ``preds_all[i][1]``'s ``pts3d_in_other_view``. Interior frames ``1 .. T-2`` are therefore
    predicted twice (``pts_left[:, j]`` and ``pts_right[:, j - 1]``), frames ``0`` and ``T - 1``
    once. Confidences are ``>= 1`` (``1 + exp(x)``, paper Eq. 12).
    """

    pts_left: Float[Tensor, "B S H W 3"]
    """View-1 points of step ``i``, i.e. frame ``i`` (``i = 0 .. S-1``)."""
    conf_left: Float[Tensor, "B S H W"]
    """View-1 confidences of step ``i`` (frame ``i``)."""
    pts_right: Float[Tensor, "B S H W 3"]
    """View-2 points of step ``i``, i.e. frame ``i + 1``, in frame 0's camera frame."""
    conf_right: Float[Tensor, "B S H W"]
    """View-2 confidences of step ``i`` (frame ``i + 1``)."""

    def __post_init__(self) -> None:
        left = check_tensor(
            "StepPredictions.pts_left", self.pts_left, ndim=5, floating=True, dims={4: 3},
            expected="B S H W 3",
        )  # fmt: skip
        b, s, h, w, _ = left.shape
        if s < 1:
            raise ValueError("`StepPredictions` needs at least one step (S >= 1), got S = 0")
        check_tensor(
            "StepPredictions.pts_right", self.pts_right, ndim=5, floating=True,
            dims={0: b, 1: s, 2: h, 3: w, 4: 3}, expected=f"B S H W 3 = {b} {s} {h} {w} 3",
        )  # fmt: skip
        for name in ("conf_left", "conf_right"):
            check_tensor(
                f"StepPredictions.{name}", getattr(self, name), ndim=4, floating=True,
                dims={0: b, 1: s, 2: h, 3: w}, expected=f"B S H W = {b} {s} {h} {w}",
            )  # fmt: skip

    @property
    def num_steps(self) -> int:
        """Number of pair steps ``S``."""
        return self.pts_left.shape[1]

    @property
    def num_frames(self) -> int:
        """Number of frames ``T = S + 1``."""
        return self.pts_left.shape[1] + 1

    def frame_pts3d(self) -> Float[Tensor, "B T H W 3"]:
        """One pointmap per frame: view 1 of step ``t`` for ``t < T - 1``, view 2 of the last step
        for the last frame (the official ``preds`` list, stacked)."""
        return torch.cat([self.pts_left, self.pts_right[:, -1:]], dim=1)

    def frame_conf(self) -> Float[Tensor, "B T H W"]:
        """Confidences matching :meth:`frame_pts3d`."""
        return torch.cat([self.conf_left, self.conf_right[:, -1:]], dim=1)

    @classmethod
    def from_official(cls, preds_all: Sequence[Sequence[Mapping[str, Any]]]) -> "StepPredictions":
        """Stack the official ``preds_all`` list (``S`` pairs ``[res1, res2]`` of dicts).

        ``res1`` holds ``pts3d`` (step 0) or ``pts3d_in_other_view`` (later steps), ``res2`` holds
        ``pts3d_in_other_view``; both hold ``conf``. Each point tensor is ``[B, H, W, 3]`` and each
        confidence ``[B, H, W]``. Gradients flow back to the given tensors.
        """
        if len(preds_all) == 0:
            raise ValueError("`preds_all` must hold at least one step, got an empty list")

        def pts(res: Mapping[str, Any], where: str) -> Tensor:
            for key in ("pts3d", "pts3d_in_other_view"):
                if key in res:
                    return res[key]
            raise KeyError(f"{where} has neither `pts3d` nor `pts3d_in_other_view`")

        def stacked(view: int, get: Any) -> Tensor:
            parts = [get(p[view], f"preds_all[{i}][{view}]") for i, p in enumerate(preds_all)]
            return torch.stack(parts, 1)

        def conf(res: Mapping[str, Tensor], where: str) -> Tensor:
            return res["conf"]

        return cls(
            pts_left=stacked(0, pts),
            conf_left=stacked(0, conf),
            pts_right=stacked(1, pts),
            conf_right=stacked(1, conf),
        )


@dataclass(eq=False)
class SequenceTarget:
    """Ground truth of a sequence of ``T`` frames for the sequence losses.

    Only ``pts3d`` and ``valid`` of every frame and the camera pose of frame 0 are read: the
    losses map the world points into frame 0's camera frame (the frame of the predictions).
    """

    pts3d: Float[Tensor, "B T H W 3"]
    """World points of every pixel. Values at invalid pixels are ignored (they may be anything,
    even non-finite)."""
    valid: Bool[Tensor, "B T H W"]
    """Which pixels take part in the losses (official ``valid_mask``)."""
    camera_pose0: Float[Tensor, "B 4 4"]
    """Camera-to-world pose of frame 0 (official ``camera_pose`` of the first view)."""

    def __post_init__(self) -> None:
        pts = check_tensor(
            "SequenceTarget.pts3d", self.pts3d, ndim=5, floating=True, dims={4: 3},
            expected="B T H W 3",
        )  # fmt: skip
        b, t, h, w, _ = pts.shape
        if t < 2:
            raise ValueError(f"`SequenceTarget.pts3d` needs at least 2 frames, got T = {t}")
        _check_mask("SequenceTarget.valid", self.valid, (b, t, h, w), f"B T H W = {b} {t} {h} {w}")
        check_tensor(
            "SequenceTarget.camera_pose0", self.camera_pose0, ndim=3, floating=True,
            dims={0: b, 1: 4, 2: 4}, expected=f"B 4 4 = {b} 4 4",
        )  # fmt: skip

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return self.pts3d.shape[1]

    @classmethod
    def from_official(cls, views: Sequence[Mapping[str, Any]]) -> "SequenceTarget":
        """Stack the official list of ground-truth views (dicts with ``pts3d [B,H,W,3]``,
        ``valid_mask [B,H,W]`` and ``camera_pose [B,4,4]``; only frame 0's pose is kept)."""
        if len(views) == 0:
            raise ValueError("`views` must hold at least one view, got an empty list")
        return cls(
            pts3d=torch.stack([v["pts3d"] for v in views], 1),
            valid=torch.stack([v["valid_mask"] for v in views], 1),
            camera_pose0=views[0]["camera_pose"],
        )


def check_matching(pred: StepPredictions, target: SequenceTarget) -> None:
    """Raise ``ValueError`` unless ``pred`` and ``target`` describe the same batch of sequences."""
    b, s, h, w, _ = pred.pts_left.shape
    tb, t, th, tw, _ = target.pts3d.shape
    if (tb, t, th, tw) != (b, s + 1, h, w):
        raise ValueError(
            "predictions and target do not match: `StepPredictions` has B S H W = "
            f"{b} {s} {h} {w} (so T = {s + 1} frames), `SequenceTarget` has B T H W = "
            f"{tb} {t} {th} {tw}"
        )
