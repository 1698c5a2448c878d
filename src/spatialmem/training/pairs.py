"""Frame pairs mixed into a run on longer clips
([`TrainConfig.pair_every`][spatialmem.training.config.TrainConfig.pair_every]).

Trained one after the other, a stage on pairs teaches the model to register two views and a
later stage on clips takes that back (see the results page of the docs). Mixing the two in one
run puts both objectives into every optimiser step: every ``pair_every``-th micro-batch is a
batch of 2-frame clips with gaps of up to ``pair_max_interval`` frames, the others are the run's
clips. Which micro-batch is a pair batch, and what it holds, depends only on the micro-batch's
number and the rank, so a resumed run draws the same pairs as an uninterrupted one.
"""

import dataclasses
from collections.abc import Callable

from spatialmem.data.rooms import SPLIT_SIZE
from spatialmem.data.scenes import SceneBatch, SceneClipDataset, collate_clips
from spatialmem.training.config import TrainConfig
from spatialmem.training.distributed import DistributedContext

__all__ = ["PairBatches"]

# Offset of the pairs' scene numbers: half the split away from the clips' scenes, so that the
# pairs come from other rooms than the clips of the same epoch.
_PAIR_SEED_OFFSET = SPLIT_SIZE // 2


class PairBatches:
    """The pair micro-batches of a run with ``pair_every > 0``.

    Micro-batch ``m`` (counted from 0 over the whole run) is a pair batch when
    ``(m + 1) % pair_every == 0``. Pair batch ``k = m // pair_every`` of rank ``r`` holds items
    ``(k * world_size + r) * batch_size + j`` (modulo ``num_scenes``) of a dataset of 2-frame
    clips drawn by the curriculum sampler with ``max_interval = pair_max_interval`` (same
    scenes kind, size, camera-path mix and ``min_interval`` as the run), at the epoch of the clip
    batches around it.

    Args:
        config: the run's settings (``pair_every >= 2``).
        ctx: the distributed context (rank and world size).
        per_epoch: clip batches per epoch and process.
        num_epochs: epochs of the run (the curriculum's progress).
        make_dataset: builds the run's dataset from settings and ``num_epochs`` (the runner's
            own, called with 2 frames, the pairs' gaps and their seed).

    Raises:
        ValueError: ``config.pair_every`` is below 2.
    """

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistributedContext,
        per_epoch: int,
        num_epochs: int,
        make_dataset: Callable[[TrainConfig, int], SceneClipDataset],
    ) -> None:
        if config.pair_every < 2:
            raise ValueError(f"PairBatches needs pair_every >= 2, got {config.pair_every}")
        self.every = config.pair_every
        self.batch_size = config.batch_size
        self.rank, self.world_size = ctx.rank, ctx.world_size
        self.per_epoch, self.num_epochs = per_epoch, num_epochs
        pair_config = dataclasses.replace(
            config,
            num_frames=2,
            curriculum=True,
            max_interval=config.pair_max_interval,
            seed=config.seed + _PAIR_SEED_OFFSET,
        )
        self.dataset = make_dataset(pair_config, num_epochs)

    def is_pair(self, micro_step: int) -> bool:
        """Whether micro-batch ``micro_step`` (counted from 0) is a pair batch."""
        return (micro_step + 1) % self.every == 0

    def clip_batches_before(self, micro_step: int) -> int:
        """Clip batches among micro-batches ``0 .. micro_step - 1``."""
        return micro_step - micro_step // self.every

    def epoch(self, micro_step: int) -> int:
        """The epoch of the pair batch at ``micro_step``: that of the next clip batch (so a run
        resumed at this micro-batch gives it the same epoch)."""
        return min(self.clip_batches_before(micro_step) // self.per_epoch, self.num_epochs - 1)

    def batch(self, micro_step: int) -> SceneBatch:
        """This rank's pair batch of micro-batch ``micro_step``.

        Raises:
            ValueError: ``micro_step`` is not a pair batch.
        """
        if not self.is_pair(micro_step):
            raise ValueError(f"micro-batch {micro_step} is a clip batch, not a pair batch")
        self.dataset.set_epoch(self.epoch(micro_step))
        first = (micro_step // self.every * self.world_size + self.rank) * self.batch_size
        size = len(self.dataset)
        return collate_clips([self.dataset[(first + j) % size] for j in range(self.batch_size)])
