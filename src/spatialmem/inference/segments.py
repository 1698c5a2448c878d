"""Streaming in overlapping segments: short memory horizons chained by similarity fits.

A Spann3R model places every frame in frame 0's camera through its memory. A model that
registers frames reliably only a few frames away from its first one (the small CPU-trained
model shipped with the package registers about 6 frames at a stride of 2 video frames, then
drifts; see the results page) can still reconstruct a long sequence when the stream is cut into
segments: each segment restarts the memory on the last ``overlap`` frames of the previous one,
so those frames are predicted twice, once in the sequence's coordinates and once in the
segment's. A confidence-weighted similarity (Umeyama, with the worst residuals trimmed) between
the two predictions of the same pixels maps the segment's new frames into the sequence's
coordinates. Everything stays online: the map is fitted on frames processed before any of the
segment's new frames is returned.

The price is ``overlap / segment_frames`` extra frame passes (0.5 with the defaults) and drift
that grows with the number of segments rather than a memory that forgets. When the camera comes
back to a place it has seen, the stream's [`LoopClosure`][spatialmem.inference.LoopClosure]
(on by default) pairs the two views and spreads the drift over the segments at the end of the
stream (see [`spatialmem.inference.loops`][spatialmem.inference.loops]). With a model whose
memory registers the whole sequence, plain streaming
([`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor]) is the method of the paper.
"""

import collections
import dataclasses
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from spatialmem._checks import internal_calls, outside_stacklevel
from spatialmem._typing import Float
from spatialmem.geometry.alignment import trimmed_umeyama
from spatialmem.geometry.transforms import sim3_scale, transform_points
from spatialmem.inference.loops import LoopClosure, LoopGraph
from spatialmem.inference.online import (
    FrameResult,
    OnlineReconstructor,
    StreamLoop,
    check_keyframe_every,
)
from spatialmem.memory import MemoryState
from spatialmem.models.spann3r import Spann3R

__all__ = ["SegmentScaleWarning", "SegmentedReconstructor", "Segments", "recommended_segments"]


class SegmentScaleWarning(UserWarning):
    """A segmented stream's later segments were drawn at a very different scale from its first
    (see
    [`segment_scales`][spatialmem.inference.SegmentedReconstructor.segment_scales])."""


@dataclass(frozen=True)
class Segments:
    """How [`SegmentedReconstructor`][spatialmem.inference.SegmentedReconstructor] cuts a stream.

    Every segment runs ``overlap + frames`` processed frames through a fresh memory: the first
    segment frames ``0 .. overlap + frames - 1``, each later one the previous segment's last
    ``overlap`` frames again and then ``frames`` new ones.
    """

    frames: int = 6
    """New frames per segment."""
    overlap: int = 3
    """Frames each segment repeats from the previous one (what its similarity is fitted on)."""
    trim: float = 0.3
    """Fraction of the overlap's pixels with the largest residuals left out of the refit
    (twice), so that badly predicted pixels do not tilt the segment; ``0`` fits once on all."""
    warn_scale: float = 4.0
    """Warn ([`SegmentScaleWarning`][spatialmem.inference.SegmentScaleWarning]) at the end of a
    stream when a segment's scale relative to the first segment fell below ``1 / warn_scale``
    or rose above ``warn_scale`` (``0.0``: never)."""
    loop_closure: LoopClosure | None = dataclasses.field(default_factory=LoopClosure)
    """Recognise places seen again and spread the drift over the segments at the end of the
    stream (see [`LoopClosure`][spatialmem.inference.LoopClosure]); ``None``: chain only."""

    def __post_init__(self) -> None:
        for name in ("frames", "overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if not isinstance(self.trim, int | float) or not 0.0 <= self.trim < 1.0:
            raise ValueError(f"`trim` must be a number in [0, 1), got {self.trim!r}")
        scale = self.warn_scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not (scale == 0 or scale > 1)
        ):
            raise ValueError(f"`warn_scale` must be 0 (off) or a number > 1, got {scale!r}")
        if self.loop_closure is not None and not isinstance(self.loop_closure, LoopClosure):
            raise TypeError(
                "`loop_closure` must be a LoopClosure or None, got "
                f"{type(self.loop_closure).__name__}"
            )

    @property
    def length(self) -> int:
        """Processed frames per segment (``overlap + frames``)."""
        return self.overlap + self.frames


_SHORT_HORIZON_PRESETS = frozenset({"spann3r_small_synthetic"})
"""Registered presets whose (shipped) weights register only a short horizon through the memory."""


def recommended_segments(model_name: str) -> Segments | None:
    """How a registered preset is best streamed: the default
    [`Segments`][spatialmem.inference.Segments] (6 new and 3 repeated frames per segment, loops
    closed) for ``spann3r_small_synthetic``, whose shipped weights keep frame 0's coordinates
    for about 6 frames (on 20 test rooms, 3.0 % of the scene's diameter in segments against
    8.0 % with one memory: see the results page); ``None``, one memory as in the paper, for
    every other name.

    ``--segments auto``, the default of ``spatialmem reconstruct``, ``evaluate`` and ``demo``,
    is this choice.

    Example:
        ```python
        from spatialmem.inference import recommended_segments

        assert recommended_segments("spann3r_vitl_dpt512") is None
        segments = recommended_segments("spann3r_small_synthetic")
        assert (segments.frames, segments.overlap) == (6, 3)
        ```

    Raises:
        TypeError: ``model_name`` is not a str.
    """
    if not isinstance(model_name, str):
        raise TypeError(f"`model_name` must be a str, got {type(model_name).__name__}")
    return Segments() if model_name in _SHORT_HORIZON_PRESETS else None


class SegmentedReconstructor(StreamLoop):
    """Stream frames through a Spann3R model in overlapping segments chained by similarity fits
    (see the module's description); the interface of
    [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor].

    Results come one frame late as there
    ([`step`][spatialmem.inference.SegmentedReconstructor.step] returns the previous processed
    frame, [`finish`][spatialmem.inference.SegmentedReconstructor.finish] the last), every point
    in frame 0's camera frame. Each segment is an
    [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor] stream of its own frames
    (so a segment's last frame comes from the second head, as a stream's last frame always
    does): the first segment's results are exactly that stream's, a stream no longer than one
    segment is reconstructed exactly as without segments, and every later segment is its
    stream mapped by one similarity.

    **Loop closure** (``segments.loop_closure``, on by default): revisits are detected and
    paired as the frames arrive, and the pose graph is solved in
    [`finish`][spatialmem.inference.SegmentedReconstructor.finish]. Results already returned
    stay as they were chained; [`run`][spatialmem.inference.SegmentedReconstructor.run] returns
    the closed reconstruction, and
    [`close_loops`][spatialmem.inference.SegmentedReconstructor.close_loops] moves results
    collected from [`step`][spatialmem.inference.SegmentedReconstructor.step] or
    [`stream`][spatialmem.inference.StreamLoop.stream] the same way.

    Example:
        ```python
        recon = SegmentedReconstructor(model.eval(), Segments(frames=6, overlap=3))
        results = recon.run(frames)        # [T, 3, H, W] -> T results
        pts3d = torch.stack([r.pts3d for r in results])  # [T, H, W, 3]
        ```

    Args:
        model: a [`Spann3R`][spatialmem.models.Spann3R] in eval mode; it is not modified.
        segments: how to cut the stream.
        keyframe_every: process every ``k``-th input frame (``1``: all of them).
        optimize: run the steps on the model's fast inference form (made once, shared by every
            segment), as [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor] does.

    Raises:
        TypeError: ``model`` is not a [`Spann3R`][spatialmem.models.Spann3R] or ``segments`` is
            not a [`Segments`][spatialmem.inference.Segments].
        ValueError: ``model`` is in training mode or ``keyframe_every`` is not a positive int.
    """

    def __init__(
        self,
        model: Spann3R,
        segments: Segments | None = None,
        *,
        keyframe_every: int = 1,
        optimize: bool = True,
    ) -> None:
        segments = Segments() if segments is None else segments
        if not isinstance(segments, Segments):
            raise TypeError(f"`segments` must be a Segments, got {type(segments).__name__}")
        # One inner stream, reset at every segment: its fast model is made once.
        self._inner = OnlineReconstructor(model, keyframe_every=1, optimize=optimize)
        self.model = model
        self.segments = segments
        self.keyframe_every = check_keyframe_every(keyframe_every)
        self.reset()

    def reset(self) -> None:
        """Forget the current stream; the next frame starts a new one."""
        self._inner.reset()
        self._num_inputs = 0
        self._num_processed = 0
        self._finished = False
        # Global (index, input_index) of each frame fed to the current segment, in order.
        self._fed: list[tuple[int, int]] = []
        self._sim: Tensor | None = None  # segment -> sequence coordinates; None: the first
        self._scales: list[Tensor] = []  # [B] scale of each later segment's similarity
        self._batch, self._unbatched = 1, True  # of the stream's first frame
        self._recent: collections.deque[FrameResult] = collections.deque(
            maxlen=self.segments.overlap
        )
        loops = self.segments.loop_closure
        self._loops = None if loops is None else LoopGraph(loops, self._run_pair)
        self._pair: OnlineReconstructor | None = None

    @property
    def num_inputs(self) -> int:
        """Frames given to [`step`][spatialmem.inference.SegmentedReconstructor.step] in this
        stream (skipped ones included)."""
        return self._num_inputs

    @property
    def num_processed(self) -> int:
        """Keyframes processed in this stream (each once, however many segments saw it)."""
        return self._num_processed

    @property
    def state(self) -> MemoryState | None:
        """The memory of the current segment (see
        [`OnlineReconstructor.state`][spatialmem.inference.OnlineReconstructor.state])."""
        return self._inner.state

    @property
    def segment_scales(self) -> Float[Tensor, "S"] | Float[Tensor, "S B"] | None:
        """Scale of every segment of the stream in the sequence's coordinates, relative to the
        first segment (``1`` for the first): the cube root of its similarity's determinant.
        ``[S]`` for an unbatched stream, ``[S, B]`` for a batched one; ``None`` before the first
        frame. After [`finish`][spatialmem.inference.SegmentedReconstructor.finish] with loop
        closure on, the scales after the loops were closed (the end-of-stream warning looks at
        the chained ones).

        A model that registers the camera motion keeps these near ``1`` (the shipped small
        model on the synthetic rooms' walk-throughs and forward paths: within 0.5-2). Values
        that run away from ``1`` mean that each segment is fitted onto the previous one's
        shrunken (or swollen) last frames and the error compounds: the later part of the
        reconstruction is drawn at the wrong size (on orbits the shipped model's segments
        shrink 30-100x over 48 frames; see the results page)."""
        if self._num_processed == 0:
            return None
        closed = None if self._loops is None else self._loops.closed_scales()
        if closed is not None:
            scales = closed
        else:
            first = self._scales[0].new_ones(()) if self._scales else torch.ones(())
            scales = torch.stack([first.expand(self._batch), *self._scales])  # [S, B]
        return scales[:, 0] if self._unbatched else scales

    @property
    def loops(self) -> list[tuple[int, int]] | list[list[tuple[int, int]]] | None:
        """The loops closed at the end of the stream: ``(earlier, later)`` processed-frame
        indices of every revisit kept in the pose graph (a list per stream of a batched
        stream); ``None`` before [`finish`][spatialmem.inference.SegmentedReconstructor.finish]
        or without loop closure."""
        if self._loops is None or self._loops.corrections is None:
            return None
        closed = self._loops.closed
        return closed[0] if self._unbatched else closed

    def close_loops(self, results: list[FrameResult]) -> list[FrameResult]:
        """Move results returned by this stream's
        [`step`][spatialmem.inference.SegmentedReconstructor.step] and
        [`finish`][spatialmem.inference.SegmentedReconstructor.finish] to where the loop
        closure put their segments (call it after
        [`finish`][spatialmem.inference.SegmentedReconstructor.finish]).

        Args:
            results: results of this stream (any subset, any order).

        Returns:
            The results with corrected ``pts3d``, in the same order; unchanged without loop
            closure or when no loop was found.

        Raises:
            RuntimeError: the stream is not finished.
        """
        if not self._finished:
            raise RuntimeError("close_loops() needs a finished stream: call finish() first")
        if self._loops is None:
            return list(results)
        closed = []
        for result in results:
            correction = self._loops.correction_of(result.index)
            if correction is None:
                closed.append(result)
                continue
            pts3d = result.pts3d
            flat = pts3d.reshape(correction.shape[0], -1, 3)
            moved = transform_points(correction, flat.float()).to(pts3d.dtype)
            closed.append(dataclasses.replace(result, pts3d=moved.reshape(pts3d.shape)))
        return closed

    def run(
        self, frames: Iterable[Tensor], *, progress: bool = False, reset: bool = True
    ) -> list[FrameResult]:
        """Reconstruct a whole sequence, loops closed: the results of
        [`stream`][spatialmem.inference.StreamLoop.stream] passed through
        [`close_loops`][spatialmem.inference.SegmentedReconstructor.close_loops] (the same
        results when ``loop_closure`` is ``None`` or no loop was found).

        Args:
            frames: as for [`stream`][spatialmem.inference.StreamLoop.stream].
            progress: show a ``tqdm`` progress bar (optional dependency, extra ``eval``).
            reset: start a new stream first (``False``: continue the current one).

        Returns:
            One [`FrameResult`][spatialmem.inference.FrameResult] per processed frame, in order.

        Raises:
            ValueError: as for [`stream`][spatialmem.inference.StreamLoop.stream].
        """
        return self.close_loops(super().run(frames, progress=progress, reset=reset))

    @property
    def num_segments(self) -> int:
        """Segments started in this stream."""
        if self._num_processed == 0:
            return 0
        extra = max(0, self._num_processed - self.segments.length)
        return 1 + -(-extra // self.segments.frames)

    def step(self, frame: Float[Tensor, "3 H W"] | Float[Tensor, "B 3 H W"]) -> FrameResult | None:
        """Feed the next frame of the stream.

        Args:
            frame: as for
                [`OnlineReconstructor.step`][spatialmem.inference.OnlineReconstructor.step].

        Returns:
            The final [`FrameResult`][spatialmem.inference.FrameResult] of the previously
            processed frame, in frame 0's camera frame; ``None`` for the stream's first frame and
            for frames skipped by ``keyframe_every``.

        Raises:
            TypeError: ``frame`` is not a floating tensor.
            ValueError: as for
                [`OnlineReconstructor.step`][spatialmem.inference.OnlineReconstructor.step]; a
                refused frame leaves the stream as it was.
            RuntimeError: the stream was finished (call
                [`reset`][spatialmem.inference.SegmentedReconstructor.reset]).
        """
        if self._finished:
            raise RuntimeError(
                "this stream is finished; call reset() before feeding the frames of a new one"
            )
        input_index, index = self._num_inputs, self._num_processed
        ids = (index, input_index)
        keyframe = input_index % self.keyframe_every == 0
        with torch.inference_mode(), internal_calls():
            if not keyframe:
                # Skipped frames are only checked, as the inner stream checks them.
                self._inner._check_eval()
                self._inner._validate(frame, read_values=False)
                result = None
            elif len(self._fed) < self.segments.length:
                local = self._feed(frame, ids)  # the inner stream checks the frame first
                if index == 0:
                    self._unbatched = frame.ndim == 3
                    self._batch = 1 if self._unbatched else frame.shape[0]
                    if self._loops is not None:
                        eye = torch.eye(4, device=frame.device).expand(self._batch, 4, 4)
                        self._loops.start_segment(eye)
                result = None if local is None else self._to_sequence(local)
                self._remember(index, frame)
            else:
                # A new segment changes the stream before the frame is fed: check it first so
                # that a refused frame leaves the stream intact (same package: its own checks).
                self._inner._check_eval()
                self._inner._validate(frame, read_values=True)
                result = self._next_segment(frame, ids)
        self._num_inputs += 1
        self._num_processed += int(keyframe)
        return result

    def finish(self) -> FrameResult | None:
        """End the stream and return the last processed frame's result.

        Returns:
            The last frame's [`FrameResult`][spatialmem.inference.FrameResult], or ``None`` when
            no frame was processed.

        Raises:
            ValueError: exactly one frame was processed (Spann3R needs at least two).
            RuntimeError: the stream was already finished.
        """
        if self._finished:
            raise RuntimeError("this stream is already finished; call reset() to start a new one")
        local = self._inner.finish()
        self._finished = True
        with torch.inference_mode():
            last = None if local is None else self._to_sequence(local)
            if self._loops is not None and self._num_processed > 0:
                self._loops.solve()
        self._warn_scale()
        return last

    # ------------------------------------------------------------------ internals
    def _feed(self, frame: Tensor, ids: tuple[int, int]) -> FrameResult | None:
        """Feed a frame to the current segment; its previous frame's result, in the segment's
        coordinates and numbering. Nothing changes when the inner stream refuses the frame."""
        local = self._inner.step(frame)
        self._fed.append(ids)
        return local

    def _next_segment(self, frame: Tensor, ids: tuple[int, int]) -> FrameResult:
        """Close the current segment, restart the memory on its last ``overlap`` frames, fit the
        new segment's similarity on them and feed ``frame`` as its first new frame."""
        last = self._inner.finish()
        assert last is not None
        closing = self._to_sequence(last)
        anchors = list(self._recent)  # the overlap, in sequence coordinates (closing included)
        self._inner.reset()
        self._fed = []
        local: list[FrameResult] = []
        for anchor in anchors:
            out = self._feed(anchor.image, (anchor.index, anchor.input_index))
            if out is not None:
                local.append(out)
        out = self._feed(frame, ids)
        assert out is not None
        local.append(out)
        self._sim = self._fit(local, anchors)
        self._scales.append(sim3_scale(self._sim))
        if self._loops is not None:
            self._loops.start_segment(self._sim)
            for out in local[:-1]:  # the overlap, in the new segment's coordinates
                self._loops.add_points(out, self._fed[out.index][0], returned=False)
        self._remember(ids[0], frame)
        return closing

    def _remember(self, index: int, frame: Tensor) -> None:
        """Give a newly processed frame to the loop closure (a revisit is paired now)."""
        if self._loops is not None:
            images = frame if frame.ndim == 4 else frame[None]
            self._loops.add_frame(index, images.detach().clone())

    def _run_pair(self, early: Tensor, late: Tensor) -> tuple[FrameResult, FrameResult]:
        """Stream two frames ``[3, H, W]`` alone through the network the segments run."""
        if self._pair is None:
            net = self._inner._net if self._inner._net is not None else self.model
            self._pair = OnlineReconstructor(net, optimize=False)
        first, second = self._pair.run(torch.stack([early, late]))
        return first, second

    def _warn_scale(self) -> None:
        """Once per stream (one host sync): warn when a segment's scale ran away."""
        bound = self.segments.warn_scale
        if not bound or not self._scales:
            return
        scales = torch.stack(self._scales)  # [S - 1, B]
        low, high = float(scales.min()), float(scales.max())
        if low >= 1.0 / bound and high <= bound:
            return
        warnings.warn(
            f"the scale of this stream's {len(self._scales) + 1} segments, relative to the first,"
            f" ranged from {low:.3g} to {high:.3g}: each "
            "segment was fitted onto the previous one's last frames, which the model drew at "
            "another size, and the error compounded, so the later part of the reconstruction "
            "is drawn at the wrong size. The model does not register this camera motion well "
            "(see SegmentedReconstructor.segment_scales; Segments(warn_scale=0.0) silences this).",
            SegmentScaleWarning,
            stacklevel=outside_stacklevel(),
        )

    def _fit(self, local: list[FrameResult], anchors: list[FrameResult]) -> Tensor:
        def flat(results: list[FrameResult], name: str) -> Tensor:
            """``[B, N]`` confidences or ``[B, N, 3]`` points of the frames (``B = 1`` for an
            unbatched stream, whose confidences are ``[H, W]``)."""
            x = torch.stack([getattr(r, name) for r in results], dim=-3 if name == "conf" else -4)
            b = 1 if results[0].conf.ndim == 2 else x.shape[0]
            return x.reshape(b, -1, 3) if name == "pts3d" else x.reshape(b, -1)

        weights = flat(local, "conf") * flat(anchors, "conf")
        return trimmed_umeyama(
            flat(local, "pts3d").float(),
            flat(anchors, "pts3d").float(),
            weights.float(),
            self.segments.trim,
        )

    def _to_sequence(self, local: FrameResult) -> FrameResult:
        """A result of the current segment in the sequence's coordinates and numbering."""
        index, input_index = self._fed[local.index]
        pts3d = local.pts3d
        if self._sim is not None:
            flat = pts3d.reshape(self._sim.shape[0], -1, 3)  # [B, H W, 3], B = 1 unbatched
            moved = transform_points(self._sim, flat.float()).to(pts3d.dtype)
            pts3d = moved.reshape(pts3d.shape)
        if self._loops is not None:
            self._loops.add_points(local, index, returned=True)
        result = dataclasses.replace(local, index=index, input_index=input_index, pts3d=pts3d)
        self._recent.append(result)
        return result
