"""Pure memory maths shared by training and inference (no module state, no host syncs).

Every function works on whole batches with per-sample masks, so one call gives exactly the
per-sample results. They are the building blocks of the default
[`SpatialMemory`][spatialmem.memory.SpatialMemory] policies and can be reused by subclasses.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from spatialmem._typing import Bool, Float, Int

__all__ = [
    "clip_and_renormalise",
    "compaction_index",
    "gather_rows",
    "keep_top_k",
    "masked_softmax",
    "working_frame_similarity",
]


def masked_softmax(
    logits: Float[Tensor, "B P X"], valid: Bool[Tensor, "B X"]
) -> Float[Tensor, "B P X"]:
    """Softmax over the valid tokens of each row; invalid entries get exactly 0.

    A row without any valid token is all zeros (never NaN).

    Args:
        logits: attention logits.
        valid: which memory rows hold a token.

    Returns:
        Probabilities, each row summing to 1 over the valid tokens (0 for an empty memory).
    """
    mask = valid.unsqueeze(1)
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    probs = torch.softmax(filled, dim=-1)
    return probs.masked_fill(~mask, 0.0)


def clip_and_renormalise(probs: Float[Tensor, "B P X"], threshold: float) -> Float[Tensor, "B P X"]:
    """Zero the weights below ``threshold`` and renormalise each row to sum 1.

    Fallback (a fix of the official code, which divides by zero there and returns NaN): a row in
    which *every* weight is below the threshold keeps its unclipped probabilities (renormalised,
    i.e. unchanged up to rounding). The clip exists
    to drop outliers next to confident matches; a row without any confident match keeps plain
    attention instead. An all-zero row (empty memory) stays all zero.

    Args:
        probs: attention probabilities (rows sum to 1 or are all zero).
        threshold: clip threshold (``0`` keeps everything and only renormalises).

    Returns:
        Applied weights.
    """
    kept = probs >= threshold
    fallback = ~kept.any(dim=-1, keepdim=True)  # no weight survives (or an empty row)
    clipped = probs * (kept | fallback)
    total = clipped.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
    return clipped / total


def gather_rows(x: Tensor, index: Int[Tensor, "B X"]) -> Tensor:
    """``x[b, index[b, j], ...]`` for a tensor ``x`` of shape ``[B, X, ...]``."""
    if x.ndim == 2:
        return x.gather(1, index)
    idx = index.reshape(*index.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, idx)


def working_frame_similarity(
    keys: Float[Tensor, "B X C"],
    count: Int[Tensor, "B"],
    work_frames: Int[Tensor, "B"],
    key: Float[Tensor, "B P C"],
    max_frames: int,
) -> Float[Tensor, "B Fw"]:
    """Similarity of a new key to each working-memory frame (the official gate score).

    For frame ``f`` of the working memory: the cosine similarity between ``key[b, p]`` and the
    frame's raw key at the same patch index ``p``, averaged over patches.

    Args:
        keys: raw memory keys, valid rows first in chronological order.
        count: tokens per sample.
        work_frames: working-memory frames per sample (the last ``work_frames * P`` rows).
        key: raw key of the new frame.
        max_frames: ``Fw``, the most frames a working memory holds.

    Returns:
        Scores with the working-memory frames oldest first in columns ``0..work_frames-1``;
        the other columns are ``-inf``.
    """
    b, x, c = keys.shape
    p = key.shape[1]
    start = count - work_frames * p
    offsets = torch.arange(max_frames * p, device=keys.device)
    rows = (start[:, None] + offsets[None, :]).clamp(0, x - 1)
    frames = gather_rows(keys, rows).view(b, max_frames, p, c)
    cos = F.cosine_similarity(frames, key.unsqueeze(1).to(frames.dtype), dim=-1)
    sims = cos.mean(dim=-1)
    present = torch.arange(max_frames, device=keys.device)[None, :] < work_frames[:, None]
    return sims.masked_fill(~present, float("-inf"))


def keep_top_k(
    scores: Float[Tensor, "B X"],
    protected: Bool[Tensor, "B X"],
    working: Bool[Tensor, "B X"],
    valid: Bool[Tensor, "B X"],
    age: Int[Tensor, "B X"],
    k: int,
) -> Bool[Tensor, "B X"]:
    """Select ``k`` tokens per sample: working memory, then protected, then the best scores.

    Priority tiers: working-memory tokens first, then the other protected tokens (newest first),
    then the rest by decreasing score (a NaN score counts as ``-inf``). Ties are broken by row
    (older first) with stable sorts, so the choice is deterministic and independent of the other
    samples of the batch. Invalid rows are never selected.

    Args:
        scores: consolidation score per token (higher is kept first).
        protected: tokens that outrank every score.
        working: tokens that outrank even the protected ones.
        valid: which rows hold a token.
        age: token ages, used to rank protected tokens among themselves.
        k: tokens to keep (fewer if fewer are valid).

    Returns:
        Mask of the kept tokens.
    """
    x = scores.shape[1]
    k = max(0, min(int(k), x))
    scores = torch.nan_to_num(scores, nan=float("-inf"))
    secondary = torch.where(protected, -age.to(scores.dtype), scores)
    tier = torch.where(working, 3, torch.where(protected, 2, 1))
    tier = torch.where(valid, tier, 0)
    order = torch.sort(secondary, dim=1, descending=True, stable=True).indices
    order = order.gather(
        1, torch.sort(tier.gather(1, order), dim=1, descending=True, stable=True).indices
    )
    keep = torch.zeros_like(valid).scatter(1, order[:, :k], True)
    return keep & valid


def compaction_index(kept: Bool[Tensor, "B X"]) -> tuple[Int[Tensor, "B X"], Int[Tensor, "B"]]:
    """Source rows that move the kept rows to the front, preserving their order.

    Args:
        kept: rows to keep.

    Returns:
        ``(src, n)``: ``gather_rows(t, src)`` puts the kept rows of ``t`` first in their original
        order (the rows after ``n[b]`` are unspecified), and ``n`` is the number kept per sample.
    """
    b, x = kept.shape
    rows = torch.arange(x, device=kept.device).expand(b, x)
    dest = torch.where(kept, kept.long().cumsum(dim=1) - 1, x)
    src = torch.zeros(b, x + 1, dtype=torch.long, device=kept.device).scatter(1, dest, rows)
    return src[:, :x], kept.sum(dim=1)
