"""Streaming (online) reconstruction with Spann3R: one frame in, one finished frame out.

Spann3R reconstructs frame ``t`` as view 1 of step ``t``, a step that needs frame ``t + 1`` as
its view 2. [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor] therefore returns each
frame's result one frame late: [`step`][spatialmem.inference.OnlineReconstructor.step] with frame
``t + 1`` returns the final result of frame ``t``, and
[`finish`][spatialmem.inference.OnlineReconstructor.finish] returns the last frame's (view 2 of the
last step). Over a whole sequence the results equal
[`Spann3R.forward`][spatialmem.models.Spann3R.forward] in eval mode.
"""

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from spatialmem._checks import (
    check_pixel_range,
    check_tensor,
    internal_calls,
    match_module,
)
from spatialmem._typing import Float
from spatialmem.encoders import EncodedFrame
from spatialmem.heads import HeadOutput
from spatialmem.memory import MemoryState
from spatialmem.models.spann3r import SequenceDriver, Spann3R
from spatialmem.optimize import InferencePlan, optimize_for_inference
from spatialmem.optimize.core import would_change

__all__ = ["FrameResult", "OnlineReconstructor", "StreamLoop"]

logger = logging.getLogger(__name__)

_STATE_DICT_VERSION = 2


@dataclass
class FrameResult:
    """The reconstruction of one processed frame (of every stream of a batch).

    Tensors have a leading batch dimension ``B`` exactly when the stream was fed batched frames
    ``[B, 3, H, W]``; a stream of single frames ``[3, H, W]`` gets results without it. They are
    created under `torch.inference_mode` (use ``.clone()`` to take part in autograd).
    """

    index: int
    """Position of the frame among the processed frames (keyframes) of the stream, from 0; the
    frame's index in [`Spann3R.forward`][spatialmem.models.Spann3R.forward] on the processed
    frames."""
    input_index: int
    """Position of the frame among all frames given to
    [`OnlineReconstructor.step`][spatialmem.inference.OnlineReconstructor.step]
    (``index * keyframe_every``)."""
    pts3d: Float[Tensor, "*batch H W 3"]
    """Points of every pixel in frame 0's camera frame."""
    conf: Float[Tensor, "*batch H W"]
    """Confidence (``>= 1`` for the published heads) of every point."""
    image: Float[Tensor, "*batch 3 H W"]
    """The input frame, in [-1, 1] (``(image + 1) / 2`` gives RGB colours in [0, 1])."""
    final: bool = True
    """``False`` for a provisional
    [`OnlineReconstructor.preview`][spatialmem.inference.OnlineReconstructor.preview], which the
    next frame's step replaces with the final result."""


def check_keyframe_every(keyframe_every: object) -> int:
    """``keyframe_every`` if it is a positive int, else ``ValueError`` naming it."""
    if isinstance(keyframe_every, bool) or not isinstance(keyframe_every, int):
        raise ValueError(f"`keyframe_every` must be a positive int, got {keyframe_every!r}")
    if keyframe_every < 1:
        raise ValueError(f"`keyframe_every` must be a positive int, got {keyframe_every}")
    return keyframe_every


class StreamLoop:
    """Whole-sequence drivers shared by the streaming reconstructors: a class with ``reset()``,
    ``step(frame) -> FrameResult | None`` and ``finish() -> FrameResult | None`` gets
    [`stream`][spatialmem.inference.StreamLoop.stream] and
    [`run`][spatialmem.inference.StreamLoop.run]."""

    def reset(self) -> None:
        """Start a new stream (implemented by the reconstructor)."""
        raise NotImplementedError

    def step(self, frame: Tensor) -> FrameResult | None:
        """Feed one frame; the previous processed frame's result (implemented by the
        reconstructor)."""
        raise NotImplementedError

    def finish(self) -> FrameResult | None:
        """End the stream; the last frame's result (implemented by the reconstructor)."""
        raise NotImplementedError

    def stream(
        self, frames: Iterable[Tensor], *, progress: bool = False, reset: bool = True
    ) -> Iterator[FrameResult]:
        """Reconstruct a sequence lazily: yield every processed frame's result, the last one
        (from `finish`) after the input is exhausted.

        Args:
            frames: an iterable of frames for `step`, a tensor ``[T, 3, H, W]`` (one stream) or
                ``[B, T, 3, H, W]`` (``B`` streams, the layout of
                [`Spann3R.forward`][spatialmem.models.Spann3R.forward]).
            progress: show a ``tqdm`` progress bar (needs the ``eval`` extra; without ``tqdm``
                the run continues without a bar).
            reset: start a new stream first; ``False`` continues the current one (e.g. after
                [`OnlineReconstructor.load_state_dict`][spatialmem.inference.OnlineReconstructor.load_state_dict]).

        Yields:
            [`FrameResult`][spatialmem.inference.FrameResult] of every processed frame, in order.

        Raises:
            ValueError: ``frames`` holds no frame at all (with ``reset=True``), or exactly one
                processed frame (see `finish`); the errors of `step`.
        """
        if reset:
            self.reset()
        if isinstance(frames, Tensor) and frames.ndim == 5:
            frames = frames.unbind(1)
        total = len(frames) if hasattr(frames, "__len__") else None
        bar = _progress_bar(total) if progress else None
        seen = 0
        try:
            for frame in frames:
                seen += 1
                result = self.step(frame)
                if bar is not None:
                    bar.update(1)
                if result is not None:
                    yield result
            if seen == 0 and reset:
                raise ValueError(
                    "`frames` is empty: a stream needs at least 2 frames (Spann3R reconstructs "
                    "frames in pairs)"
                )
            last = self.finish()
            if last is not None:
                yield last
        finally:
            if bar is not None:
                bar.close()

    def run(
        self, frames: Iterable[Tensor], *, progress: bool = False, reset: bool = True
    ) -> list[FrameResult]:
        """Reconstruct a whole sequence: `stream` collected in a list.

        Args:
            frames: as for `stream`.
            progress: show a ``tqdm`` progress bar (optional dependency, extra ``eval``).
            reset: start a new stream first (``False``: continue the current one).

        Returns:
            One [`FrameResult`][spatialmem.inference.FrameResult] per processed frame, in order;
            for an [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor],
            ``[r.pts3d for r in out]`` stacked along a new frame axis equals
            ``Spann3R.forward(frames).pts3d``.

        Raises:
            ValueError: as for `stream` (e.g. an empty ``frames``).
        """
        return list(self.stream(frames, progress=progress, reset=reset))


class OnlineReconstructor(StreamLoop):
    """Feed a Spann3R model one frame at a time; get each frame's points once they are final.

    Frames are ``[3, H, W]`` (one stream) or ``[B, 3, H, W]`` (``B`` independent streams in one
    batch) in [-1, 1], all of one stream with the size and batch of its first frame, ``H`` and
    ``W`` multiples of the patch size, on the model's device (another device is refused; floating
    frames are cast to the model's dtype). Each processed frame is copied, so the caller may
    reuse its frame buffer.

    **One frame of latency.** Frame ``t`` is reconstructed by the step that pairs it with frame
    ``t + 1``, so [`step`][spatialmem.inference.OnlineReconstructor.step] returns the *previous*
    processed frame's final result (``None`` for the first one) and
    [`finish`][spatialmem.inference.OnlineReconstructor.finish] returns the last frame's. The
    results of [`step`][spatialmem.inference.OnlineReconstructor.step] over a sequence followed by
    [`finish`][spatialmem.inference.OnlineReconstructor.finish] equal
    [`Spann3R.forward`][spatialmem.models.Spann3R.forward] on the sequence in eval mode (points,
    confidences and the final memory [`state`][spatialmem.inference.OnlineReconstructor.state]). The
    second prediction head runs only in [`finish`][spatialmem.inference.OnlineReconstructor.finish]
    (the view-2 decoder tokens of the latest step are kept for it), unless ``preview=True`` asks for
    a provisional result of the newest frame at every step.

    **Keyframes.** With ``keyframe_every=k`` only input frames ``0, k, 2k, ...`` are processed
    (the others are counted and [`step`][spatialmem.inference.OnlineReconstructor.step] returns
    ``None`` for them); the results equal ``forward`` on the subsampled sequence. A last input frame
    that is not a keyframe is not reconstructed.

    **Constant memory.** The reconstructor holds only the memory state (fixed capacity in eval
    mode), the encoding, the view-2 decoder tokens and the query of the latest frame: memory use
    does not grow with the stream's length. [`run`][spatialmem.inference.StreamLoop.run]
    collects the results it returns; iterate over
    [`stream`][spatialmem.inference.StreamLoop.stream] (or call
    [`step`][spatialmem.inference.OnlineReconstructor.step]) to keep nothing.

    **Fast path.** With ``optimize=True`` (default) the steps run on
    [`optimize_for_inference`][spatialmem.optimize.optimize_for_inference]``(model)``, made when a
    stream's first frame arrives (its token count is what the linear layers are timed with) and
    made again when the model's converted weights changed (e.g. a checkpoint loaded into it): on
    CPU the linear layers take whichever of eager ``F.linear`` and oneDNN on the same weight
    this machine runs fastest, in float32, so results equal the eager model's within 1e-5. The
    model is not modified, and its weights are shared, not copied (a model already optimised
    in place, ``optimize_for_inference(model, inplace=True)``, is used as it is).
    ``optimize=False`` runs the model eagerly.

    Every step runs under `torch.inference_mode`, so results and the memory state are
    inference tensors. The model must be in eval mode (training mode changes the memory's
    behaviour: no similarity gate, no consolidation, dropout); a model in training mode raises
    ``ValueError``.

    Example:
        ```python
        recon = OnlineReconstructor(model.eval())
        for frame in frames:              # [3, H, W] each
            result = recon.step(frame)    # frame t-1, or None for the first frame
            if result is not None:
                use(result.pts3d)         # [H, W, 3], frame 0's camera frame
        last = recon.finish()
        ```

    Args:
        model: a [`Spann3R`][spatialmem.models.Spann3R] in eval mode; it is not modified.
        keyframe_every: process every ``k``-th input frame (``1``: all of them).
        preview: also predict the newest frame provisionally at each step (runs the second head
            every step), available as [`preview`][spatialmem.inference.OnlineReconstructor.preview].
        optimize: run the steps on the model's fast inference form (see above); ``False``: on
            the model as it is.

    Raises:
        TypeError: ``model`` is not a [`Spann3R`][spatialmem.models.Spann3R].
        ValueError: ``model`` is in training mode or ``keyframe_every`` is not a positive int.
    """

    def __init__(
        self,
        model: Spann3R,
        *,
        keyframe_every: int = 1,
        preview: bool = False,
        optimize: bool = True,
    ) -> None:
        if not isinstance(model, Spann3R):
            raise TypeError(f"`model` must be a Spann3R model, got {type(model).__name__}")
        self.model = model
        self.keyframe_every = check_keyframe_every(keyframe_every)
        self.preview_enabled = bool(preview)
        self.optimize = bool(optimize)
        self._net: Spann3R | None = None  # what the steps run (the optimised copy or the model)
        self.reset()

    # ------------------------------------------------------------------ stream state
    def reset(self) -> None:
        """Forget the current stream (memory, pending frame, counters); the next frame starts a
        new one, possibly of another size or batch."""
        self._check_submodules_eval()
        # The driver holds the memory, the latest processed frame (view 1 of the next step,
        # from frame 1 on) and the query of the next read.
        self._driver = SequenceDriver(self.model)
        self._first_image: Tensor | None = None  # frame 0, until frame 1 arrives
        self._pending_input_index = 0
        self._dec2: list[Tensor] | None = None
        self._preview: FrameResult | None = None
        self._shape: tuple[int, ...] | None = None  # shape of the stream's frames as given
        self._num_inputs = 0
        self._num_processed = 0
        self._finished = False
        self._net_checked = False  # the network is chosen when the stream's first frame arrives

    @property
    def plan(self) -> InferencePlan | None:
        """What the fast path changed (``None`` before the first frame, with
        ``optimize=False``, or when optimising failed)."""
        net = self._net
        return None if net is None else getattr(net, "inference_plan", None)

    @property
    def state(self) -> MemoryState | None:
        """The spatial memory after the latest step (``None`` until two frames were processed).

        It holds the frames up to the one before the newest (the newest is written by the next
        step). Later steps may update its key/value buffers in place: ``state.clone()`` takes a
        snapshot. After [`finish`][spatialmem.inference.OnlineReconstructor.finish] it equals
        ``Spann3R.forward(...).memory``.
        """
        return self._driver.state

    @property
    def preview(self) -> FrameResult | None:
        """Provisional result of the newest processed frame (``final=False``), or ``None``.

        Only computed with ``preview=True``; it is what
        [`finish`][spatialmem.inference.OnlineReconstructor.finish] would return if the stream ended
        now (the step of the next frame replaces it with the final result).
        """
        return self._preview

    @property
    def num_inputs(self) -> int:
        """Frames given to [`step`][spatialmem.inference.OnlineReconstructor.step] in this stream
        (skipped ones included)."""
        return self._num_inputs

    @property
    def num_processed(self) -> int:
        """Keyframes processed in this stream."""
        return self._num_processed

    @property
    def finished(self) -> bool:
        """Whether [`finish`][spatialmem.inference.OnlineReconstructor.finish] ended the stream
        (call [`reset`][spatialmem.inference.OnlineReconstructor.reset] to start another)."""
        return self._finished

    # ------------------------------------------------------------------ streaming
    def step(self, frame: Float[Tensor, "3 H W"] | Float[Tensor, "B 3 H W"]) -> FrameResult | None:
        """Feed the next frame of the stream.

        Args:
            frame: ``[3, H, W]`` or ``[B, 3, H, W]`` in [-1, 1] (see
                [`to_model_range`][spatialmem.data.to_model_range]); the same shape as the
                stream's first frame, ``H``/``W`` multiples of the patch size, on the model's
                device. Any floating dtype is accepted and cast to the model's parameter dtype.

        Returns:
            The final [`FrameResult`][spatialmem.inference.FrameResult] of the previously processed
            frame; ``None`` for the stream's first frame and for frames skipped by
            ``keyframe_every``.

        Raises:
            TypeError: ``frame`` is not a floating tensor.
            ValueError: bad frame shape, size or batch; a frame on another device than the model;
                NaN/Inf values or values far outside [-1, 1] (value checks, see
                [`set_value_checks`][spatialmem.set_value_checks]); model in training mode.
            RuntimeError: the stream was finished (call
                [`reset`][spatialmem.inference.OnlineReconstructor.reset]).
        """
        self._check_eval()
        if self._finished:
            raise RuntimeError(
                "this stream is finished; call reset() before feeding the frames of a new one"
            )
        input_index = self._num_inputs
        keyframe = input_index % self.keyframe_every == 0
        images = self._validate(frame, read_values=keyframe)
        self._num_inputs += 1
        if not keyframe:
            return None
        with torch.inference_mode(), internal_calls():
            return self._advance(images, input_index)

    def finish(self) -> FrameResult | None:
        """End the stream and return the last processed frame's result (view 2 of the last step).

        The memory [`state`][spatialmem.inference.OnlineReconstructor.state] stays available;
        [`reset`][spatialmem.inference.OnlineReconstructor.reset] starts a new stream.

        Returns:
            The last frame's [`FrameResult`][spatialmem.inference.FrameResult], or ``None`` when no
            frame was processed.

        Raises:
            ValueError: exactly one frame was processed (Spann3R needs at least two).
            RuntimeError: the stream was already finished.
        """
        self._check_eval()
        if self._finished:
            raise RuntimeError("this stream is already finished; call reset() to start a new one")
        if self._num_processed == 1:
            raise ValueError(
                "Spann3R reconstructs frames in pairs: a stream needs at least 2 processed frames, "
                "got 1 (feed another frame before finish())"
            )
        result = None
        if self._num_processed >= 2:
            if self._preview is not None:
                result = dataclasses.replace(self._preview, final=True)
            else:
                with torch.inference_mode(), internal_calls():
                    result = self._last_frame_result()
        self._finished = True
        state = self._driver.state
        self._driver = SequenceDriver(self.model)
        self._driver.state = state  # the final memory stays readable through `state`
        self._first_image = self._dec2 = self._preview = None
        return result

    # ------------------------------------------------------------------ pause / resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the stream later, possibly in another process.

        Holds copies (not views) of the memory state
        ([`MemoryState.state_dict`][spatialmem.memory.MemoryState.state_dict]), of the latest
        frame's encoding, view-2 decoder tokens and query, and the counters. Save it with
        ``torch.save``; it loads with ``torch.load(..., weights_only=True)``. The model's weights
        are not included.

        Returns:
            A dict of tensors, lists, tuples and numbers.
        """
        d = self._driver
        pending = None if d.view1 is None else _frame_dict(d.view1.clone())
        return {
            "version": _STATE_DICT_VERSION,
            "keyframe_every": self.keyframe_every,
            "num_inputs": self._num_inputs,
            "num_processed": self._num_processed,
            "finished": self._finished,
            "shape": None if self._shape is None else tuple(self._shape),
            "pending_input_index": self._pending_input_index,
            "memory": None if d.state is None else d.state.clone().state_dict(),
            "pending": pending,
            "first_image": None if self._first_image is None else self._first_image.clone(),
            "query": None if d.query is None else d.query.clone(),
            "dec2": None if self._dec2 is None else [t.clone() for t in self._dec2],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume a stream saved with
        [`state_dict`][spatialmem.inference.OnlineReconstructor.state_dict] (tensors are copied to
        the model's device). ``keyframe_every`` must match.

        Args:
            state_dict: output of
                [`state_dict`][spatialmem.inference.OnlineReconstructor.state_dict].

        Raises:
            ValueError: unknown version or a different ``keyframe_every``.
            KeyError: an entry is missing.
        """
        sd = state_dict
        if sd.get("version") != _STATE_DICT_VERSION:
            raise ValueError(
                f"unsupported OnlineReconstructor state_dict version {sd.get('version')}"
            )
        if sd["keyframe_every"] != self.keyframe_every:
            raise ValueError(
                f"state_dict was saved with keyframe_every={sd['keyframe_every']}, this "
                f"reconstructor has keyframe_every={self.keyframe_every}"
            )
        device = self._device()
        self.reset()
        with torch.inference_mode():

            def move(t: Tensor | None) -> Tensor | None:
                return None if t is None else t.to(device=device, copy=True)

            state = None
            if sd["memory"] is not None:
                state = MemoryState.from_state_dict(sd["memory"], device=device)
            p = sd["pending"]
            pending = None if p is None else EncodedFrame(**p).to(device=device, copy=True)
            self._driver.resume(state, pending, move(sd["query"]), max(sd["num_processed"] - 1, 0))
            self._first_image = move(sd["first_image"])
            self._dec2 = None if sd["dec2"] is None else [move(t) for t in sd["dec2"]]
            self._shape = None if sd["shape"] is None else tuple(sd["shape"])
            self._num_inputs = int(sd["num_inputs"])
            self._num_processed = int(sd["num_processed"])
            self._pending_input_index = int(sd["pending_input_index"])
            self._finished = bool(sd["finished"])
            if self.preview_enabled and self._dec2 is not None and pending is not None:
                self._preview = self._last_frame_result(final=False)

    # ------------------------------------------------------------------ internals
    def _network(self, frame_shape: tuple[int, ...]) -> Spann3R:
        """The model the steps run, chosen once per stream (at its first frame)."""
        if not self._net_checked:
            self._net_checked = True
            self._driver.model = self._choose_network(frame_shape)
        return self._driver.model

    def _choose_network(self, frame_shape: tuple[int, ...]) -> Spann3R:
        model = self.model
        if not self.optimize or getattr(model, "inference_plan", None) is not None:
            self._net = model
            return model
        net = self._net
        plan = None if net is None else getattr(net, "inference_plan", None)
        if net is not None and (plan is None or plan.is_current(model)):
            return net
        patch = model.config.dust3r.patch_size
        batch = frame_shape[0] if len(frame_shape) == 4 else 1
        tokens = max(1, batch * (frame_shape[-2] // patch) * (frame_shape[-1] // patch))
        try:
            if net is None and not would_change(model, tokens=tokens):
                self._net = model  # nothing is faster here: no copy
                return model
            net = optimize_for_inference(model, tokens=tokens)
        except Exception as err:  # a missing op or an unusual model: run it eagerly
            logger.warning(
                "optimize_for_inference failed (%s: %s); streaming with the model as it is",
                type(err).__name__,
                err,
            )
            self._net = model
            return model
        self._net = net
        return net

    def _advance(self, images: Tensor, input_index: int) -> FrameResult | None:
        model, driver = self._network(tuple(images.shape)), self._driver
        images = images.clone()  # the caller may reuse its buffer (_validate checked the device)
        k = self._num_processed
        self._num_processed += 1
        if k == 0:  # frame 0 waits for frame 1: the first step encodes both in one batch
            self._first_image = images
            self._pending_input_index = input_index
            return None
        if k == 1:
            assert self._first_image is not None
            first, view2 = model.encode_pair(self._first_image, images)
            self._first_image = None
            driver.start(first)
        else:
            view2 = model.encode(images)
        view1 = driver.view1
        assert view1 is not None
        out = driver.advance(view2, predict_view2=self.preview_enabled)
        result = self._result(out.view1, view1, k - 1, self._pending_input_index, final=True)
        self._dec2 = out.dec2
        self._pending_input_index = input_index
        if out.view2 is not None:
            self._preview = self._result(out.view2, view2, k, input_index, final=False)
        return result

    def _last_frame_result(self, final: bool = True) -> FrameResult:
        pending = self._driver.view1
        assert pending is not None and self._dec2 is not None
        head = self._network(tuple(pending.image.shape)).predict_view2(self._dec2, pending)
        return self._result(
            head, pending, self._num_processed - 1, self._pending_input_index, final=final
        )

    def _result(
        self, head: HeadOutput, frame: EncodedFrame, index: int, input_index: int, final: bool
    ) -> FrameResult:
        pts3d, conf, image = head.pts3d, head.conf, frame.image
        if self._shape is not None and len(self._shape) == 3:  # unbatched stream
            pts3d, conf, image = pts3d[0], conf[0], image[0]
        return FrameResult(index, input_index, pts3d, conf, image, final)

    def _validate(self, frame: object, read_values: bool) -> Tensor:
        """Check a frame against the stream; return it as ``[B, 3, H, W]`` (not yet copied).

        ``read_values`` also rejects NaN/Inf (a device sync; skipped for frames not processed).
        """
        x = check_tensor("frame", frame, floating=True, expected="3 H W or B 3 H W")
        x = match_module("frame", x, self.model)
        shape = tuple(x.shape)
        if x.ndim not in (3, 4) or shape[-3] != 3:
            raise ValueError(
                f"`frame` must be one frame [3, H, W] or a batch of streams [B, 3, H, W], got a "
                f"tensor of shape {shape}"
            )
        patch = self.model.config.dust3r.patch_size
        h, w = shape[-2:]
        if h % patch or w % patch or h == 0 or w == 0 or (x.ndim == 4 and shape[0] == 0):
            raise ValueError(
                f"`frame` height and width must be positive multiples of the patch size {patch}, "
                f"got H={h}, W={w} (shape {shape})"
            )
        if self._shape is not None and shape != self._shape:
            raise ValueError(
                f"`frame` has shape {shape} but this stream's frames have shape {self._shape}: "
                "all frames of a stream must have the size and batch of its first frame "
                "(call reset() to start a new stream)"
            )
        if read_values:
            check_pixel_range("frame", x)  # NaN/Inf and the [-1, 1] range, one host sync
        self._shape = shape
        return x[None] if x.ndim == 3 else x

    def _device(self) -> torch.device:
        ref = next(iter(self.model.parameters()), None)
        return ref.device if ref is not None else torch.device("cpu")

    def _check_eval(self) -> None:
        # Per frame only the flags that change the memory's behaviour are read; every submodule
        # is checked when a stream starts (reset).
        if self.model.training or self.model.memory.training:
            self._raise_training()

    def _check_submodules_eval(self) -> None:
        if any(m.training for m in self.model.modules()):
            self._raise_training()

    @staticmethod
    def _raise_training() -> None:
        raise ValueError(
            "the model (or one of its submodules) is in training mode; call model.eval() before "
            "streaming (training mode disables the memory's similarity gate and consolidation "
            "and applies dropout)"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(keyframe_every={self.keyframe_every}, "
            f"preview={self.preview_enabled}, optimize={self.optimize}, inputs={self._num_inputs}, "
            f"processed={self._num_processed}, finished={self._finished})"
        )


def _progress_bar(total: int | None) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.debug("tqdm is not installed (extra 'eval'): no progress bar")
        return None
    return tqdm(total=total, desc="Spann3R", unit="frame")


def _frame_dict(frame: EncodedFrame) -> dict[str, Any]:
    """An encoded frame as a plain dict (loadable with ``torch.load(..., weights_only=True)``)."""
    return {f.name: getattr(frame, f.name) for f in dataclasses.fields(frame)}
