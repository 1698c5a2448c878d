"""Translations of the official training data structures (``preds_all``, ground-truth views).

The official Spann3R training loop passes the losses a list of per-step prediction pairs and a
list of per-frame ground-truth dicts; these functions stack them into spatialmem's
[`StepPredictions`][spatialmem.types.StepPredictions] and
[`SequenceTarget`][spatialmem.types.SequenceTarget].
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from spatialmem.types import SequenceTarget, StepPredictions

__all__ = ["sequence_target_from_official", "step_predictions_from_official"]

_PredGetter = Callable[[Mapping[str, Any], str], Tensor]


def _pts(res: Mapping[str, Any], where: str) -> Tensor:
    for key in ("pts3d", "pts3d_in_other_view"):
        if key in res:
            return res[key]
    raise KeyError(f"{where} has neither `pts3d` nor `pts3d_in_other_view`")


def _conf(res: Mapping[str, Any], where: str) -> Tensor:
    return res["conf"]


def _stacked(
    preds_all: Sequence[Sequence[Mapping[str, Any]]], view: int, get: _PredGetter
) -> Tensor:
    parts = [get(p[view], f"preds_all[{i}][{view}]") for i, p in enumerate(preds_all)]
    return torch.stack(parts, 1)


def step_predictions_from_official(
    preds_all: Sequence[Sequence[Mapping[str, Any]]],
) -> StepPredictions:
    """Stack the official ``preds_all`` list (``S`` pairs ``[res1, res2]`` of dicts).

    ``res1`` holds ``pts3d`` (step 0) or ``pts3d_in_other_view`` (later steps), ``res2`` holds
    ``pts3d_in_other_view``; both hold ``conf``. Each point tensor is ``[B, H, W, 3]`` and each
    confidence ``[B, H, W]``. Gradients flow back to the given tensors.

    Args:
        preds_all: the official per-step prediction pairs.

    Returns:
        The [`StepPredictions`][spatialmem.types.StepPredictions] with ``pts_view1`` /
        ``conf_view1`` from the ``res1`` dicts and ``pts_view2`` / ``conf_view2`` from the
        ``res2`` dicts, stacked along the step axis 1.

    Raises:
        ValueError: an empty list.
        KeyError: a dict without points.
    """
    if len(preds_all) == 0:
        raise ValueError("`preds_all` must hold at least one step, got an empty list")
    return StepPredictions(
        pts_view1=_stacked(preds_all, 0, _pts),
        conf_view1=_stacked(preds_all, 0, _conf),
        pts_view2=_stacked(preds_all, 1, _pts),
        conf_view2=_stacked(preds_all, 1, _conf),
    )


def sequence_target_from_official(views: Sequence[Mapping[str, Any]]) -> SequenceTarget:
    """Stack the official list of ground-truth views.

    Args:
        views: one dict per frame with ``pts3d [B, H, W, 3]``, ``valid_mask [B, H, W]`` and
            ``camera_pose [B, 4, 4]``; only frame 0's pose is kept.

    Returns:
        The [`SequenceTarget`][spatialmem.types.SequenceTarget] of the ``T = len(views)`` frames.

    Raises:
        ValueError: an empty list.
    """
    if len(views) == 0:
        raise ValueError("`views` must hold at least one view, got an empty list")
    return SequenceTarget(
        pts3d=torch.stack([v["pts3d"] for v in views], 1),
        valid=torch.stack([v["valid_mask"] for v in views], 1),
        camera_pose0=views[0]["camera_pose"],
    )
