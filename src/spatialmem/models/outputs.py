"""What a Spann3R step and a Spann3R sequence pass return."""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from spatialmem._typing import Float
from spatialmem.heads import HeadOutput
from spatialmem.memory import MemoryState
from spatialmem.tensor_dataclass import TensorDataclass
from spatialmem.types import StepPredictions

__all__ = ["PairStep", "SequenceOutput"]


@dataclass(eq=False)
class PairStep(TensorDataclass):
    """What one Spann3R step computed (step ``i``: view 1 = frame ``i``, view 2 = frame
    ``i + 1``)."""

    view1: HeadOutput
    """Frame ``i``: ``pts3d [B, H, W, 3]`` in frame 0's coordinates, ``conf [B, H, W]``."""
    view2: HeadOutput | None
    """Frame ``i + 1`` seen from the memory (``None`` when the step did not run the second
    head; [Spann3R.predict_view2][spatialmem.models.Spann3R.predict_view2] computes it from
    [dec2][spatialmem.models.PairStep.dec2] later)."""
    fused: Float[Tensor, "B P Ce"]
    """View-1 tokens the decoder received (memory read-out, or encoder output at step 0)."""
    dec2: list[Tensor]
    """View 2's decoder token list (``L + 1`` entries)."""
    key: Float[Tensor, "B P C"]
    """Memory key of frame ``i`` (inserted at the end of the step)."""
    query: Float[Tensor, "B P C"]
    """Key of frame ``i + 1``: the query of the next step's memory read."""
    value: Float[Tensor, "B P C"] | None
    """Memory value written for frame ``i`` (memory-encoder output + key); ``None`` when the step
    wrote nothing (the last step of a forward with ``return_memory=False``)."""


@dataclass(eq=False)
class SequenceOutput(TensorDataclass):
    """Reconstruction of a batch of sequences."""

    pts3d: Float[Tensor, "B T H W 3"]
    """Frame ``t``'s points in frame 0's camera frame (official ``preds[t]``)."""
    conf: Float[Tensor, "B T H W"]
    """Confidences ``>= 1`` of those points."""
    steps: StepPredictions | None
    """Per-step pair predictions (both views of every step) for the training loss; present in
    training mode or with ``return_steps=True``."""
    memory: MemoryState | None
    """The memory after the last step; ``None`` from a forward with ``return_memory=False``
    (which skips the last write)."""

    @classmethod
    def from_steps(
        cls, steps: Sequence[PairStep], memory: MemoryState | None, *, with_steps: bool = False
    ) -> "SequenceOutput":
        """Stack the steps of one pass: frame ``t`` is view 1 of step ``t``, the last frame view 2
        of the last step (which must therefore have run its second head).

        Args:
            steps: the ``T - 1`` steps in order.
            memory: the memory after the last step (``None``: not kept).
            with_steps: also fill [steps][spatialmem.models.SequenceOutput.steps] (every step
                needs its view 2).

        Raises:
            ValueError: a step that had to run its second head did not.
        """
        final = steps[-1].view2
        if final is None or (with_steps and any(s.view2 is None for s in steps)):
            raise ValueError("the last step (every step with `with_steps`) must predict view 2")
        frames = HeadOutput.stack([s.view1 for s in steps] + [final], dim=1)
        predictions = None
        if with_steps:
            seconds = HeadOutput.stack([s.view2 for s in steps if s.view2 is not None], dim=1)
            predictions = StepPredictions(
                pts_view1=frames.pts3d[:, :-1],
                conf_view1=frames.conf[:, :-1],
                pts_view2=seconds.pts3d,
                conf_view2=seconds.conf,
            )
        return cls(pts3d=frames.pts3d, conf=frames.conf, steps=predictions, memory=memory)
