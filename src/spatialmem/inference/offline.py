"""Offline reconstruction of unordered images (paper Sec. 3.3, supplementary Eq. 16).

Spann3R is an online model: it reconstructs frames in the order it receives them, in the camera
frame of the first one. For an unordered image collection an order is chosen first:

1. **Pair graph.** The plain pair model (``model.dust3r``, no memory) predicts every ordered pair
   of frames ``(i, j)``, ``i != j``. The pair's score is the mean over pixels of
   ``(C1 - 1) / C1`` plus the mean of ``(C2 - 1) / C2``, where ``C1``/``C2`` are the view-1 and
   view-2 confidences (``C >= 1``, so each mean lies in ``[0, 1)``). The scores fill an ``N x N``
   matrix (row = view 1, column = view 2, diagonal 0, not symmetric):
   [`pair_scores`][spatialmem.inference.pair_scores].
2. **Initial pair.** The largest entry of the matrix, the first in row-major order on exact ties
   ([`initial_pair`][spatialmem.inference.initial_pair]). Its row frame is view 1 of step 0, hence
   the reference frame of the whole reconstruction.
3. **Order.** Either *next best view* (the official procedure, default): after the online step
   on the initial pair, each step reads the memory with the previous step's query, tries every
   frame not used yet as view 2 against the memory-fused view-1 tokens, and keeps the one whose
   pair score is highest; or *spanning tree*: the order in which Prim's algorithm adds the frames
   to a maximum spanning tree of the symmetrised score matrix
   ([`spanning_tree_order`][spatialmem.inference.spanning_tree_order]).
4. **Reconstruction.** The ordinary online pass on the frames in that order: the result equals
   ``model(frames[:, order])`` in eval mode.

Cost: ``N (N - 1)`` pair predictions for the graph; next best view adds ``(N - 1)(N - 2) / 2``
candidate decodings (decoder + both heads, no encoder: every frame is encoded once and the
encodings are reused).

Differences from the official code (``eval.py --offline``), all deliberate:

* Per sample: every batch element gets its own pair graph, initial pair and order (the official
  bookkeeping is only sound at batch size 1; with ``B > 1`` it mixes up the elements' confidence
  maps and gives all elements one order). A batch gives exactly the per-sample results.
* Each ordered pair is predicted once. The official pair list is already symmetrised and its
  pair inference symmetrises every batch again, so it predicts each ordered pair twice; both
  predictions are bit-identical (reference README item 17), so nothing changes but the cost.
* Every frame is encoded once for the pair graph and the candidate search (the encoder does not
  depend on the memory); the official code re-encodes a frame for each pair and each candidate.
  Only float rounding differs (encoder batches of different sizes).
"""

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from spatialmem._checks import check_images, check_tensor, internal_calls, match_module
from spatialmem._typing import Float, Int, Shaped
from spatialmem.encoders import EncodedFrame
from spatialmem.models.dust3r import DUSt3R, PairDecoding
from spatialmem.models.outputs import SequenceOutput
from spatialmem.models.spann3r import SequenceDriver, Spann3R

__all__ = [
    "OfflineOrder",
    "OfflineResult",
    "ViewChoice",
    "initial_pair",
    "offline_reconstruction",
    "pair_scores",
    "spanning_tree_order",
]

logger = logging.getLogger(__name__)

OfflineOrder = Literal["next_best_view", "spanning_tree"]
"""How [`offline_reconstruction`][spatialmem.inference.offline_reconstruction] orders the frames."""

_ORDERS = ("next_best_view", "spanning_tree")


@dataclass
class ViewChoice:
    """One next-best-view decision (step ``k >= 1`` of the reconstruction).

    All frame numbers are indices into the frames as given (positions along ``N``).
    """

    step: int
    """Reconstruction step ``k`` (``1 .. N-2``)."""
    view1: int
    """The view-1 frame of the step (the previous step's view-2 frame)."""
    candidates: Int[Tensor, "K"]
    """Frames not used yet, in the order tried (ascending index)."""
    scores: Float[Tensor, "K"]
    """Pair score of each candidate (``view1_scores + view2_scores``)."""
    view1_scores: Float[Tensor, "K"]
    """Mean of ``(C1 - 1) / C1`` over the view-1 pixels, per candidate."""
    view2_scores: Float[Tensor, "K"]
    """Mean of ``(C2 - 1) / C2`` over the candidate's pixels."""
    chosen: int
    """The winner: the first candidate whose score is strictly greater than every earlier one."""


@dataclass
class OfflineResult:
    """Result of [`offline_reconstruction`][spatialmem.inference.offline_reconstruction] for a batch
    of ``B`` unordered collections.

    ``reconstruction`` lists the frames in reconstruction order: its entry ``k`` of sample ``b``
    is frame ``order[b, k]`` of the input, in the camera frame of frame ``order[b, 0]``. Use
    [`to_input_order`][spatialmem.inference.OfflineResult.to_input_order] to put per-frame tensors
    back in input order.
    """

    order: Int[Tensor, "B N"]
    """Reconstruction order: a permutation of ``0 .. N-1`` per sample (indices into the input)."""
    reconstruction: SequenceOutput
    """The online pass on the re-ordered frames (``pts3d [B, N, H, W, 3]``, ``conf [B, N, H, W]``
    in reconstruction order, ``steps`` when asked for, the final memory)."""
    score_matrix: Float[Tensor, "B N N"]
    """Pair scores: entry ``[b, i, j]`` scores view 1 = frame ``i``, view 2 = frame ``j``."""
    initial_pair: Int[Tensor, "B 2"]
    """``(view 1, view 2)`` frames of step 0 per sample."""
    choices: list[list[ViewChoice]]
    """Per sample, the ``N - 2`` next-best-view decisions (empty lists for ``"spanning_tree"``)."""
    method: str
    """``"next_best_view"`` or ``"spanning_tree"``."""

    @property
    def inverse_order(self) -> Int[Tensor, "B N"]:
        """``inverse_order[b, i]`` = position of input frame ``i`` in the reconstruction."""
        return torch.argsort(self.order, dim=1)

    def to_input_order(self, values: Shaped[Tensor, "B N *rest"]) -> Shaped[Tensor, "B N *rest"]:
        """Put a per-frame tensor given in reconstruction order back in input order.

        Args:
            values: ``[B, N, ...]`` with entry ``[b, k]`` belonging to frame ``order[b, k]``
                (e.g. ``reconstruction.pts3d``).

        Returns:
            ``[B, N, ...]`` with entry ``[b, i]`` belonging to input frame ``i``.
        """
        b, n = self.order.shape
        check_tensor("values", values, expected=f"B N ... with B N = {b} {n}")
        if values.ndim < 2 or tuple(values.shape[:2]) != (b, n):
            raise ValueError(
                f"`values` must have shape [B, N, ...] with B N = {b} {n} (entries in "
                f"reconstruction order), got {tuple(values.shape)}"
            )
        inv = self.inverse_order.to(values.device)
        rows = torch.arange(values.shape[0], device=values.device)[:, None]
        return values[rows, inv]


# ---------------------------------------------------------------------- pair graph
def _confidence_term(conf: Tensor) -> Tensor:
    """Mean over the pixels of ``(C - 1) / C`` per batch element (``[B, H, W] -> [B]``)."""
    return ((conf - 1.0) / conf).mean(dim=(-2, -1))


def _pair_terms(decoded: PairDecoding) -> tuple[Tensor, Tensor]:
    """View-1 and view-2 confidence terms of decoded pairs (``[B]`` each)."""
    assert decoded.view2 is not None
    return _confidence_term(decoded.view1.conf), _confidence_term(decoded.view2.conf)


def _pair_score(decoded: PairDecoding) -> Tensor:
    """The pair score of decoded pairs: the sum of both views' confidence terms (``[B]``)."""
    t1, t2 = _pair_terms(decoded)
    return t1 + t2


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    return batch_size


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode without autograd for the duration; the previous mode is restored."""
    modes = [(m, m.training) for m in module.modules()]  # submodules may differ (frozen parts)
    module.eval()
    try:
        with torch.no_grad(), internal_calls():
            yield
    finally:
        for m, training in modes:
            m.training = training


def _encode_all(
    encode: Callable[[Tensor], EncodedFrame], frames: Tensor, batch_size: int
) -> EncodedFrame:
    """Encode ``N`` frames in chunks into one ``[N, ...]`` encoded batch."""
    return EncodedFrame.cat([encode(chunk) for chunk in frames.split(batch_size)])


def _score_matrix(pair_model: DUSt3R, encoded: EncodedFrame, batch_size: int) -> Tensor:
    """Pair-score matrix from encoded frames (what ``pair_model(img_i, img_j)`` computes)."""
    n = encoded.batch_size
    device = encoded.tokens.device
    rows = torch.arange(n, device=device).repeat_interleave(n)
    cols = torch.arange(n, device=device).repeat(n)
    off = rows != cols  # every ordered pair (i, j), i != j, in row-major order
    rows, cols = rows[off], cols[off]
    scores = []
    for i, j in zip(rows.split(batch_size), cols.split(batch_size), strict=True):
        scores.append(_pair_score(pair_model.predict_pair(encoded[i], encoded[j])))
    matrix = encoded.tokens.new_zeros(n, n)
    matrix[rows, cols] = torch.cat(scores)
    return matrix


def _check_frames(name: str, frames: object, model: DUSt3R) -> Tensor:
    frames = check_tensor(name, frames, ndim=4, floating=True, dims={1: 3}, expected="N 3 H W")
    frames = match_module(name, frames, model)
    if frames.shape[0] < 2:
        raise ValueError(
            f"`{name}` needs at least 2 frames (N >= 2), got shape {tuple(frames.shape)}"
        )
    return check_images(name, frames, model.config.patch_size, pixel_range=True)


def pair_scores(
    pair_model: DUSt3R, frames: Float[Tensor, "N 3 H W"], batch_size: int = 8
) -> Float[Tensor, "N N"]:
    """Score every ordered pair of frames with the pair model (the offline pair graph).

    ``score[i, j]`` = mean over pixels of ``(C1 - 1) / C1`` + mean of ``(C2 - 1) / C2``, with
    ``C1``, ``C2`` the confidences of ``pair_model(frames[i], frames[j])`` (view 1 = ``i``,
    view 2 = ``j``). The diagonal is 0. Each ordered pair is predicted once (the official code
    predicts it twice, with bit-identical results). Every frame is encoded once and the encodings
    are shared by all its pairs, so this equals calling ``pair_model(img_i, img_j)`` per pair up to
    float rounding. Runs in eval mode without autograd (the module's mode is restored).

    Args:
        pair_model: a [`DUSt3R`][spatialmem.models.DUSt3R] (for Spann3R: ``model.dust3r``).
        frames: ``N >= 2`` frames in [-1, 1] of one size, ``H``/``W`` multiples of the patch
            size, on the model's device (any floating dtype, cast to the model's parameter
            dtype).
        batch_size: pairs (and frames, for the encoder) per forward pass.

    Returns:
        ``[N, N]`` float scores on the frames' device (row = view 1, column = view 2).

    Raises:
        TypeError: ``pair_model`` is not a DUSt3R, ``frames`` not a floating tensor.
        ValueError: bad shape or ``batch_size``, ``frames`` on another device than the model,
            NaN/Inf values or values far outside [-1, 1] (value checks, see
            [`set_value_checks`][spatialmem.set_value_checks]).
    """
    if not isinstance(pair_model, DUSt3R):
        raise TypeError(f"`pair_model` must be a DUSt3R, got {type(pair_model).__name__}")
    frames = _check_frames("frames", frames, pair_model)
    batch_size = _check_batch_size(batch_size)
    with _eval_mode(pair_model):
        encoded = _encode_all(pair_model.encode, frames, batch_size)
        return _score_matrix(pair_model, encoded, batch_size)


def _check_scores(scores: object) -> Tensor:
    scores = check_tensor("scores", scores, ndim=2, floating=True, expected="N N")
    n = scores.shape[0]
    if scores.shape[1] != n or n < 2:
        raise ValueError(
            f"`scores` must be a square N x N matrix with N >= 2, got shape {tuple(scores.shape)}"
        )
    return scores


def initial_pair(scores: Float[Tensor, "N N"]) -> tuple[int, int]:
    """The initial pair: position of the largest off-diagonal score.

    Ties go to the first maximum in row-major order (``torch.argmax`` on the flattened matrix
    returns the first maximal index). The diagonal is excluded, which changes nothing unless
    every pair scores 0.

    Args:
        scores: pair-score matrix from [`pair_scores`][spatialmem.inference.pair_scores].

    Returns:
        ``(view1, view2)``; ``view1`` becomes the reference frame of the reconstruction.
    """
    scores = _check_scores(scores)
    n = scores.shape[0]
    masked = scores.detach().clone()
    masked.fill_diagonal_(float("-inf"))
    flat = int(torch.argmax(masked.flatten()))  # one host sync per collection
    return flat // n, flat % n


def spanning_tree_order(scores: Float[Tensor, "N N"], root: int) -> Int[Tensor, "N"]:
    """Frame order of a maximum spanning tree of the symmetrised pair graph (Prim's algorithm).

    The graph is complete with edge weights ``w(i, j) = (scores[i, j] + scores[j, i]) / 2``. Prim's
    algorithm grows a maximum spanning tree from ``root``: at every step it adds the frame not yet
    in the tree with the largest weight to any frame in it (ties: the smallest frame index). The
    order returned is the order in which frames join the tree, so each frame after the first is
    attached by a tree edge to a frame reconstructed before it (and hence held in the memory).

    Args:
        scores: pair-score matrix from [`pair_scores`][spatialmem.inference.pair_scores].
        root: the first frame (for
            [`offline_reconstruction`][spatialmem.inference.offline_reconstruction]: the initial
            pair's view 1).

    Returns:
        ``[N]`` int64 permutation of ``0 .. N-1`` starting with ``root`` (on the CPU).
    """
    scores = _check_scores(scores)
    n = scores.shape[0]
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < n:
        raise ValueError(f"`root` must be a frame index in [0, {n}), got {root!r}")
    # Hand-rolled O(N^2) Prim on the dense matrix: N is the number of images of one collection
    # (tens to hundreds, and the pair graph already costs N^2 network passes), and it fixes the
    # tie-breaking, which a sparse-graph library leaves unspecified.
    w = scores.detach().float().cpu()
    w = (w + w.T) / 2
    in_tree = torch.zeros(n, dtype=torch.bool)
    in_tree[root] = True
    link = w[root].clone()  # best weight from each frame to the tree
    order = [root]
    for _ in range(n - 1):
        nxt = int(torch.argmax(link.masked_fill(in_tree, float("-inf"))))
        order.append(nxt)
        in_tree[nxt] = True
        link = torch.maximum(link, w[nxt])
    return torch.tensor(order, dtype=torch.long)


# ---------------------------------------------------------------------- next best view
def _score_candidates(
    driver: SequenceDriver, encoded: EncodedFrame, candidates: list[int], batch_size: int
) -> tuple[Tensor, Tensor]:
    """View-1 and view-2 confidence terms of each candidate tried as the driver's view 2."""
    index = torch.tensor(candidates, dtype=torch.long, device=encoded.tokens.device)
    terms = [_pair_terms(driver.predict(encoded[chunk])) for chunk in index.split(batch_size)]
    return torch.cat([t1 for t1, _ in terms]), torch.cat([t2 for _, t2 in terms])


def _first_strict_max(scores: list[float], candidates: list[int]) -> int:
    """The official rule: the first candidate strictly better than the best so far (from 0.0)."""
    best, winner = 0.0, None
    for cand, score in zip(candidates, scores, strict=True):
        if score > best:
            best, winner = score, cand
    # No score above 0 (all confidences exactly 1, or NaN): the official code has no winner;
    # take the first candidate so that the procedure stays defined.
    return candidates[0] if winner is None else winner


def _next_best_view(
    model: Spann3R,
    frames: Tensor,
    encoded: EncodedFrame,
    first: tuple[int, int],
    bs: int,
    return_steps: bool,
) -> tuple[list[int], SequenceOutput, list[ViewChoice]]:
    """Official next-best-view procedure for one collection ``frames [N, 3, H, W]``."""
    n = frames.shape[0]
    i0, j0 = first
    driver = SequenceDriver(model)
    # Step 0 exactly as the online forward: both frames in one encoder batch, no memory read.
    view1, view2 = model.encode_pair(frames[i0 : i0 + 1], frames[j0 : j0 + 1])
    driver.start(view1)
    steps = [driver.advance(view2, predict_view2=return_steps or n == 2)]
    order, choices = [i0, j0], []
    for k in range(1, n - 1):
        used = set(order)
        candidates = [f for f in range(n) if f not in used]
        # The driver reads the memory once for this step: every candidate is decoded against the
        # same read-out, and the winner's step below reuses it.
        t1, t2 = _score_candidates(driver, encoded, candidates, bs)
        scores = t1 + t2
        winner = _first_strict_max(scores.tolist(), candidates)  # one host sync per step
        choices.append(
            ViewChoice(
                step=k,
                view1=order[-1],
                candidates=torch.tensor(candidates, dtype=torch.long),
                scores=scores,
                view1_scores=t1,
                view2_scores=t2,
                chosen=winner,
            )
        )
        logger.debug("offline step %d: next best view %d (of %s)", k, winner, candidates)
        # The winner's step, exactly as the online forward runs it (frame encoded alone): the
        # reconstruction therefore equals `model(frames[order])`.
        view2 = model.encode(frames[winner : winner + 1])
        steps.append(driver.advance(view2, predict_view2=return_steps or k == n - 2))
        order.append(winner)
    assert driver.state is not None
    return order, SequenceOutput.from_steps(steps, driver.state, with_steps=return_steps), choices


def offline_reconstruction(
    model: Spann3R,
    frames: Float[Tensor, "*B N 3 H W"],
    order: OfflineOrder = "next_best_view",
    *,
    batch_size: int = 8,
    return_steps: bool = False,
) -> OfflineResult:
    """Reconstruct unordered image collections: choose an order, then run the online pass.

    Per collection: score every ordered pair with ``model.dust3r``
    ([`pair_scores`][spatialmem.inference.pair_scores]), take the best pair as step 0
    ([`initial_pair`][spatialmem.inference.initial_pair]; its view 1 is the reference frame), then
    order the remaining frames:

    * ``"next_best_view"`` (official, paper Sec. 3.3): step 0 is the online step on the initial
      pair. At step ``k >= 1`` view 1 is the previous step's view-2 frame; the memory is read
      once with the previous step's query, every frame not used yet is tried as view 2 (in
      ascending index order) against those fused tokens, both heads are applied and the pair is
      scored as in [`pair_scores`][spatialmem.inference.pair_scores]; the winner is the first
      candidate whose score is strictly greater than the best so far (starting at 0.0), so exact
      ties go to the smaller index. The step then finishes as an online step with the winner (keys,
      value, memory update with the similarity gate). Each choice depends on the memory built from
      the earlier ones.
    * ``"spanning_tree"``: the frames in the order Prim's algorithm adds them to a maximum
      spanning tree of the symmetrised scores, grown from the initial pair's view 1
      ([`spanning_tree_order`][spatialmem.inference.spanning_tree_order]); then the online pass on
      that order. Cheaper (no candidate search) but blind to the memory.

    Either way the reconstruction equals the eval-mode ``model(frames[:, order])``. Every batch
    element is processed on its own (own order), so a batch returns exactly the per-sample
    results. Runs in eval mode without autograd; the module's mode is restored afterwards.

    Cost: ``N (N - 1)`` pair predictions, plus ``(N - 1)(N - 2) / 2`` candidate decodings (decoder
    and heads only) for ``"next_best_view"``, plus the online pass. Each frame is encoded once
    for the pair graph and the candidate search, and once more by the online pass. The choices
    need one host sync per step.

    Args:
        model: a [`Spann3R`][spatialmem.models.Spann3R].
        frames: ``[B, N, 3, H, W]`` (or ``[N, 3, H, W]``, treated as ``B = 1``) with ``N >= 2``
            frames per collection in [-1, 1], ``H``/``W`` multiples of the patch size, on the
            model's device (any floating dtype, cast to the model's parameter dtype). The
            frames' order is irrelevant except for tie-breaking.
        order: ``"next_best_view"`` or ``"spanning_tree"``.
        batch_size: pairs / candidates (and frames, for the encoder) per forward pass.
        return_steps: also return both views of every step
            ([`steps`][spatialmem.models.SequenceOutput.steps], in reconstruction order).

    Returns:
        [`OfflineResult`][spatialmem.inference.OfflineResult] (the reconstruction is in
        reconstruction order; see
        [`OfflineResult.to_input_order`][spatialmem.inference.OfflineResult.to_input_order]).

    Raises:
        TypeError: ``model`` is not a Spann3R, ``frames`` not a floating tensor.
        ValueError: bad shape, ``order`` or ``batch_size``, ``frames`` on another device than the
            model, NaN/Inf values or values far outside [-1, 1] (value checks, see
            [`set_value_checks`][spatialmem.set_value_checks]).
    """
    if not isinstance(model, Spann3R):
        raise TypeError(f"`model` must be a Spann3R, got {type(model).__name__}")
    if order not in _ORDERS:
        raise ValueError(f"`order` must be one of {_ORDERS}, got {order!r}")
    batch_size = _check_batch_size(batch_size)
    check_tensor("frames", frames, floating=True, expected="B N 3 H W or N 3 H W")
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    check_tensor("frames", frames, ndim=5, floating=True, dims={2: 3}, expected="B N 3 H W")
    frames = match_module("frames", frames, model)
    if frames.shape[1] < 2:
        raise ValueError(
            f"`frames` needs at least 2 frames per collection (N >= 2), got {tuple(frames.shape)}"
        )
    check_images("frames", frames.flatten(0, 1), model.config.dust3r.patch_size, pixel_range=True)

    orders, outs, matrices, firsts, all_choices = [], [], [], [], []
    with _eval_mode(model):
        for sample in frames:
            encoded = _encode_all(model.dust3r.encode, sample, batch_size)
            matrix = _score_matrix(model.dust3r, encoded, batch_size)
            first = initial_pair(matrix)
            logger.debug("offline: initial pair %s", first)
            if order == "next_best_view":
                idx, out, choices = _next_best_view(
                    model, sample, encoded, first, batch_size, return_steps
                )
            else:
                idx = spanning_tree_order(matrix, first[0]).tolist()
                out = model(sample[idx].unsqueeze(0), return_steps=return_steps)
                choices = []
            orders.append(idx)
            outs.append(out)
            matrices.append(matrix)
            firsts.append(first)
            all_choices.append(choices)
    return OfflineResult(
        order=torch.tensor(orders, dtype=torch.long, device=frames.device),
        reconstruction=SequenceOutput.cat(outs),
        score_matrix=torch.stack(matrices),
        initial_pair=torch.tensor(firsts, dtype=torch.long, device=frames.device),
        choices=all_choices,
        method=order,
    )
