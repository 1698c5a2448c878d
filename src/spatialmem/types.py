"""Containers shared by models, losses, data and inference: step predictions and targets.

A Spann3R training forward on ``T`` frames runs ``S = T - 1`` pair steps; step ``i`` decodes
frame ``i`` (view 1) against frame ``i + 1`` (view 2), both predicted in the camera frame of
frame 0. [`StepPredictions`][spatialmem.types.StepPredictions] stacks these ``2 S`` pointmaps along
a step axis; [`SequenceTarget`][spatialmem.types.SequenceTarget] holds the ground truth of the ``T``
frames.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from spatialmem._checks import check_bool_mask, check_tensor
from spatialmem._typing import Bool, Float
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = ["SequenceTarget", "StepPredictions", "check_matching"]


@dataclass(eq=False)
class StepPredictions(TensorDataclass):
    """Per-step pair predictions of a sequence model (what Spann3R's training forward returns).

    With ``T`` frames there are ``S = T - 1`` steps. Step ``i`` predicts frame ``i`` as view 1
    and frame ``i + 1`` as view 2; all points are in the camera frame of
    frame 0. In the official layout (``preds_all``) ``pts_view1[:, i]`` is ``preds_all[i][0]``'s
    ``pts3d`` (``i = 0``) or ``pts3d_in_other_view`` (``i > 0``) and ``pts_view2[:, i]`` is
    ``preds_all[i][1]``'s ``pts3d_in_other_view``. Interior frames ``1 .. T-2`` are therefore
    predicted twice (``pts_view1[:, j]`` and ``pts_view2[:, j - 1]``), frames ``0`` and ``T - 1``
    once. Confidences are ``>= 1`` (``1 + exp(x)``, paper Eq. 12).
    """

    pts_view1: Float[Tensor, "B S H W 3"]
    """View-1 points of step ``i``, i.e. frame ``i`` (``i = 0 .. S-1``)."""
    conf_view1: Float[Tensor, "B S H W"]
    """View-1 confidences of step ``i`` (frame ``i``)."""
    pts_view2: Float[Tensor, "B S H W 3"]
    """View-2 points of step ``i``, i.e. frame ``i + 1``, in frame 0's camera frame."""
    conf_view2: Float[Tensor, "B S H W"]
    """View-2 confidences of step ``i`` (frame ``i + 1``)."""

    def __post_init__(self) -> None:
        left = check_tensor(
            "StepPredictions.pts_view1", self.pts_view1, ndim=5, floating=True, dims={4: 3},
            expected="B S H W 3",
        )  # fmt: skip
        b, s, h, w, _ = left.shape
        if s < 1:
            raise ValueError("`StepPredictions` needs at least one step (S >= 1), got S = 0")
        check_tensor(
            "StepPredictions.pts_view2", self.pts_view2, ndim=5, floating=True,
            dims={0: b, 1: s, 2: h, 3: w, 4: 3}, expected=f"B S H W 3 = {b} {s} {h} {w} 3",
        )  # fmt: skip
        for name in ("conf_view1", "conf_view2"):
            check_tensor(
                f"StepPredictions.{name}", getattr(self, name), ndim=4, floating=True,
                dims={0: b, 1: s, 2: h, 3: w}, expected=f"B S H W = {b} {s} {h} {w}",
            )  # fmt: skip

    @property
    def num_steps(self) -> int:
        """Number of pair steps ``S``."""
        return self.pts_view1.shape[1]

    @property
    def num_frames(self) -> int:
        """Number of frames ``T = S + 1``."""
        return self.pts_view1.shape[1] + 1

    def frame_pts3d(self) -> Float[Tensor, "B T H W 3"]:
        """One pointmap per frame: view 1 of step ``t`` for ``t < T - 1``, view 2 of the last step
        for the last frame (the official ``preds`` list, stacked)."""
        return torch.cat([self.pts_view1, self.pts_view2[:, -1:]], dim=1)

    def frame_conf(self) -> Float[Tensor, "B T H W"]:
        """Confidences matching [`frame_pts3d`][spatialmem.types.StepPredictions.frame_pts3d]."""
        return torch.cat([self.conf_view1, self.conf_view2[:, -1:]], dim=1)


@dataclass(eq=False)
class SequenceTarget(TensorDataclass):
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
        check_bool_mask(
            "SequenceTarget.valid", self.valid, (b, t, h, w), f"B T H W = {b} {t} {h} {w}"
        )
        check_tensor(
            "SequenceTarget.camera_pose0", self.camera_pose0, ndim=3, floating=True,
            dims={0: b, 1: 4, 2: 4}, expected=f"B 4 4 = {b} 4 4",
        )  # fmt: skip

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return self.pts3d.shape[1]


def check_matching(pred: StepPredictions, target: SequenceTarget) -> None:
    """Raise ``ValueError`` unless ``pred`` and ``target`` describe the same batch of sequences."""
    b, s, h, w, _ = pred.pts_view1.shape
    tb, t, th, tw, _ = target.pts3d.shape
    if (tb, t, th, tw) != (b, s + 1, h, w):
        raise ValueError(
            "predictions and target do not match: `StepPredictions` has B S H W = "
            f"{b} {s} {h} {w} (so T = {s + 1} frames), `SequenceTarget` has B T H W = "
            f"{tb} {t} {th} {tw}"
        )
