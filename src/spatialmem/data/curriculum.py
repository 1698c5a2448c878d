"""Curriculum sampling of training clips (Spann3R, supplementary Eq. 14-15).

Spann3R is trained on short clips of ``T = 5`` frames drawn from long videos. To learn both
short- and long-range matching, the *sampling interval* between adjacent frames of a clip grows
with training progress and, for the last quarter of training, shrinks again so that the
training frame interval ends close to the one used at inference.

With training ratio ``η ∈ [0, 1]`` (fraction of training done) the paper defines the *active
ratio* (Eq. 15):

```text
η_a = min(1, 2η)            if η < 0.75
η_a = max(0.5, 4 - 4η)      otherwise
```

and the sampling interval (Eq. 14):

```text
interval = T_min + η_a (T_max - T_min)
```

so the interval rises linearly from ``T_min`` to ``T_max`` over the first half of training,
stays at ``T_max`` until 75 %, falls linearly to ``(T_min + T_max) / 2`` at 87.5 % and stays
there until the end. (The paper calls the interval ``T``; in this library ``T`` is the number of
frames of a clip, ``num_frames``.)

Everything here works on integers only: a video length goes in, frame indices come out, so the
sampler is independent of any dataset format.
"""

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from spatialmem._typing import Int

__all__ = [
    "CurriculumClips",
    "CurriculumConfig",
    "active_ratio",
    "sample_clip_indices",
    "sampling_interval",
    "training_progress",
]

logger = logging.getLogger(__name__)

SampleMode = Literal["stride", "window"]


def _check_progress(progress: int | float) -> float:
    if isinstance(progress, bool) or not 0.0 <= progress <= 1.0:  # also rejects NaN
        raise ValueError(f"`progress` must be a number in [0, 1], got {progress!r}")
    return float(progress)


def training_progress(epoch: int | float, num_epochs: int) -> float:
    """Training ratio ``η = epoch / num_epochs`` of the paper.

    Args:
        epoch: epochs completed so far, ``0 <= epoch <= num_epochs`` (fractional values, e.g.
            ``epoch + step / steps_per_epoch``, give a per-iteration schedule).
        num_epochs: total number of training epochs, ``>= 1``.

    Returns:
        ``η`` in [0, 1].

    Raises:
        ValueError: if ``num_epochs < 1`` or ``epoch`` lies outside ``[0, num_epochs]``.
    """
    if isinstance(num_epochs, bool) or num_epochs < 1:
        raise ValueError(f"`num_epochs` must be an integer >= 1, got {num_epochs!r}")
    if isinstance(epoch, bool) or not 0 <= epoch <= num_epochs:
        raise ValueError(f"`epoch` must lie in [0, num_epochs={num_epochs}], got {epoch!r}")
    return float(epoch) / num_epochs


def active_ratio(progress: int | float) -> float:
    """Active ratio ``η_a`` of the training ratio ``η`` (Eq. 15).

    ``η_a = min(1, 2η)`` for ``η < 0.75`` and ``max(0.5, 4 - 4η)`` otherwise: it rises from 0 to
    1 over the first half of training, stays at 1 until 75 %, then falls to 0.5 at 87.5 % and
    stays there. The function is continuous.

    Args:
        progress: training ratio ``η`` in [0, 1].

    Returns:
        ``η_a`` in [0, 1].

    Raises:
        ValueError: if ``progress`` is outside [0, 1] (or NaN).
    """
    eta = _check_progress(progress)
    if eta < 0.75:
        return min(1.0, 2.0 * eta)
    return max(0.5, 4.0 - 4.0 * eta)


def sampling_interval(
    progress: int | float, min_interval: int | float, max_interval: int | float
) -> float:
    """Sampling interval between adjacent frames of a clip (Eq. 14), before rounding.

    ``interval = T_min + η_a (T_max - T_min)`` with ``η_a = active_ratio(progress)``.

    Args:
        progress: training ratio ``η`` in [0, 1].
        min_interval: ``T_min``, the smallest interval in frames, ``>= 1``.
        max_interval: ``T_max``, the largest interval in frames, ``>= min_interval``.

    Returns:
        The real-valued interval in ``[min_interval, max_interval]``.

    Raises:
        ValueError: if ``progress`` is outside [0, 1] or the interval bounds are invalid.
    """
    _check_intervals(min_interval, max_interval)
    return min_interval + active_ratio(progress) * (max_interval - min_interval)


def _check_intervals(min_interval: int | float, max_interval: int | float) -> None:
    if isinstance(min_interval, bool) or not min_interval >= 1:
        raise ValueError(f"`min_interval` must be a number >= 1, got {min_interval!r}")
    if isinstance(max_interval, bool) or not max_interval >= min_interval:
        raise ValueError(
            f"`max_interval` must be a number >= min_interval={min_interval!r}, "
            f"got {max_interval!r}"
        )
    if not math.isfinite(max_interval):
        raise ValueError(f"`max_interval` must be finite, got {max_interval!r}")


@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    """Settings of the curriculum clip sampler.

    Args:
        max_interval: ``T_max`` of Eq. 14, the largest interval (in frames) between adjacent
            frames of a clip, reached between 50 % and 75 % of training. ``>= min_interval``.
        min_interval: ``T_min`` of Eq. 14, the interval at the start of training. ``>= 1``.
        num_frames: frames per clip ``T`` (the paper uses 5). ``>= 2``.
        mode: how frames are placed once the interval ``s`` is known (the paper leaves this
            open). ``"stride"``: frames ``start + k * s`` for ``k = 0..T-1`` with a random
            ``start``, i.e. every adjacent pair is exactly ``s`` apart. ``"window"``: ``T``
            distinct frames drawn uniformly inside a random window of ``(T - 1) * s + 1``
            frames (the "sample window size" of the main text), so adjacent gaps vary but
            average at most ``s``.

    Raises:
        ValueError: for invalid values, naming the field.
    """

    max_interval: int | float
    min_interval: int | float = 1
    num_frames: int = 5
    mode: SampleMode = "stride"

    def __post_init__(self) -> None:
        _check_intervals(self.min_interval, self.max_interval)
        if isinstance(self.num_frames, bool) or self.num_frames < 2:
            raise ValueError(f"`num_frames` must be an integer >= 2, got {self.num_frames!r}")
        if self.mode not in ("stride", "window"):
            raise ValueError(f"`mode` must be 'stride' or 'window', got {self.mode!r}")

    def interval(self, progress: int | float) -> int:
        """Integer interval at training ratio ``progress``: Eq. 14 rounded to nearest (halves up).

        Args:
            progress: training ratio ``η`` in [0, 1].

        Returns:
            The interval ``s >= 1`` in frames, before any shortening for a short video.
        """
        value = sampling_interval(progress, self.min_interval, self.max_interval)
        return max(1, math.floor(value + 0.5))


def _make_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool):
        raise ValueError(
            f"`generator` must be a torch.Generator, an int seed or None, got {generator!r}"
        )
    return torch.Generator().manual_seed(generator)


def sample_clip_indices(
    num_video_frames: int,
    progress: int | float,
    config: CurriculumConfig,
    generator: torch.Generator | int | None = None,
) -> Int[Tensor, "T"]:
    """Sorted frame indices of one training clip drawn with the curriculum interval.

    The interval ``s = config.interval(progress)`` (Eq. 14-15, rounded) is shortened to
    ``(num_video_frames - 1) // (T - 1)`` when the video is too short for ``T`` frames spaced by
    ``s``; the clip start is then drawn uniformly among all positions where the clip fits.

    Args:
        num_video_frames: number of frames ``N`` of the video, ``>= config.num_frames``.
        progress: training ratio ``η`` in [0, 1] (see
            [`training_progress`][spatialmem.data.training_progress]).
        config: sampler settings.
        generator: random source; an ``int`` is used as a seed of a fresh CPU generator,
            ``None`` uses torch's global generator. Equal seeds give equal clips.

    Returns:
        ``[T]`` int64 indices into the video, strictly increasing, in ``[0, N)``.

    Raises:
        ValueError: if the video has fewer than ``T`` frames or ``progress`` is outside [0, 1].
    """
    n = config.num_frames
    if isinstance(num_video_frames, bool) or num_video_frames < n:
        raise ValueError(
            f"`num_video_frames` must be >= config.num_frames={n} (a clip needs that many "
            f"distinct frames), got {num_video_frames!r}"
        )
    gen = _make_generator(generator)
    interval = config.interval(progress)
    fits = (num_video_frames - 1) // (n - 1)
    if interval > fits:
        logger.debug(
            "video of %d frames too short for interval %d; using %d",
            num_video_frames,
            interval,
            fits,
        )
        interval = fits
    window = (n - 1) * interval + 1
    start = int(torch.randint(num_video_frames - window + 1, (1,), generator=gen))
    if config.mode == "stride":
        offsets = torch.arange(n, dtype=torch.int64) * interval
    else:
        offsets = torch.randperm(window, generator=gen)[:n].sort().values
    return offsets + start


def _seed_for(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class CurriculumClips(Dataset[Tensor]):
    """Per-video clip indices for one epoch, as a map-style dataset.

    Item ``i`` is the ``[T]`` frame indices of a clip of video ``i``, drawn with
    [`sample_clip_indices`][spatialmem.data.sample_clip_indices] at training ratio
    ``epoch / num_epochs``. The draw depends only on ``(seed, epoch, i)``, so it is reproducible and
    identical in every ``DataLoader`` worker. Wrap it in your own dataset that loads the frames, and
    call [`set_epoch`][spatialmem.data.CurriculumClips.set_epoch] at the start of every epoch (with
    ``persistent_workers=True`` the workers hold copies, so pass the epoch through your dataset
    instead).

    Args:
        video_lengths: number of frames of each video, each ``>= config.num_frames``.
        config: sampler settings.
        num_epochs: total number of training epochs, ``>= 1``.
        seed: base seed of the draws.

    Raises:
        ValueError: if a video is too short or ``num_epochs < 1``.
    """

    def __init__(
        self,
        video_lengths: Sequence[int],
        config: CurriculumConfig,
        num_epochs: int,
        seed: int = 0,
    ) -> None:
        for i, length in enumerate(video_lengths):
            if isinstance(length, bool) or length < config.num_frames:
                raise ValueError(
                    f"`video_lengths[{i}]` must be >= config.num_frames={config.num_frames}, "
                    f"got {length!r}"
                )
        training_progress(0, num_epochs)  # validates num_epochs
        self.video_lengths = tuple(int(n) for n in video_lengths)
        self.config = config
        self.num_epochs = num_epochs
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose training ratio and random draws are used.

        Args:
            epoch: current epoch, ``0 <= epoch <= num_epochs``.
        """
        training_progress(epoch, self.num_epochs)
        self.epoch = epoch

    @property
    def progress(self) -> float:
        """Training ratio ``η`` of the current epoch."""
        return training_progress(self.epoch, self.num_epochs)

    def __len__(self) -> int:
        return len(self.video_lengths)

    def __getitem__(self, index: int) -> Int[Tensor, "T"]:
        """Frame indices ``[T]`` (int64, increasing) of a clip of video ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"video index {index} out of range for {len(self)} videos")
        index %= len(self)
        gen = torch.Generator().manual_seed(_seed_for(self.seed, self.epoch, index))
        return sample_clip_indices(self.video_lengths[index], self.progress, self.config, gen)
