"""Helpers for data-parallel training under ``torchrun``: process group, DDP, loader, logging.

``torchrun --nproc_per_node N ...`` starts ``N`` processes and tells each its place through the
environment variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``. [`init_distributed`][spatialmem.training.distributed.init_distributed] reads them
and joins the process group (``nccl`` when CUDA is available, ``gloo`` on the CPU); without them
(plain ``python``) it returns a single-process context and every helper here degrades to the
non-distributed equivalent:

```python
ctx = init_distributed()
setup_logging(ctx)
model = wrap_ddp(model.to(ctx.device), ctx)
loader = make_loader(dataset, batch_size=2, ctx=ctx, collate_fn=collate_clips)
...
cleanup(ctx)
```
"""

import itertools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = [
    "DistributedContext",
    "ResumableSampler",
    "barrier",
    "cleanup",
    "init_distributed",
    "make_loader",
    "reduce_mean",
    "setup_logging",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) training run."""

    rank: int
    """Global rank, ``0 .. world_size - 1``."""
    local_rank: int
    """Rank on this machine (selects the CUDA device)."""
    world_size: int
    """Number of processes."""
    device: torch.device
    """Device this process trains on."""
    backend: str | None
    """Process-group backend (``"nccl"``/``"gloo"``), ``None`` when not distributed."""
    owns_group: bool = False
    """Whether [`init_distributed`][spatialmem.training.distributed.init_distributed] created the
    process group (and [`cleanup`][spatialmem.training.distributed.cleanup] should destroy it)."""

    @property
    def distributed(self) -> bool:
        """Whether a process group with more than one process is in use."""
        return self.backend is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (which logs and saves)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _check_one_device_per_process(local_world_size: int) -> None:
    """NCCL refuses two processes on one GPU with a bare "invalid usage"; say why instead."""
    devices = torch.cuda.device_count()
    if local_world_size > devices:
        raise ValueError(
            f"torchrun started {local_world_size} processes on this machine (LOCAL_WORLD_SIZE) "
            f"but it has {devices} CUDA device(s), and NCCL needs one device per process: start "
            f"at most {devices} (--nproc_per_node), or train on the CPU (--device cpu, gloo)"
        )


def init_distributed(
    backend: str | None = None,
    device: torch.device | str | None = None,
    timeout_s: int | float = 1800,
) -> DistributedContext:
    """Join the process group described by the ``torchrun`` environment, if any.

    With ``WORLD_SIZE > 1`` in the environment the default process group is initialised
    (``env://``: ``MASTER_ADDR``/``MASTER_PORT``), unless one already exists, which is then
    reused. Otherwise nothing is initialised and a single-process context is returned.

    Args:
        backend: ``"nccl"``, ``"gloo"``, or ``None`` for ``nccl`` when CUDA is available and
            ``gloo`` otherwise.
        device: training device; ``None`` means ``cuda:<LOCAL_RANK>`` when CUDA is available
            (the current CUDA device is set to it), else the CPU.
        timeout_s: collective-operation timeout in seconds.

    Returns:
        The [`DistributedContext`][spatialmem.training.distributed.DistributedContext] of this
        process.

    Raises:
        ValueError: malformed rank variables, ``nccl`` without CUDA, or more processes on
            this machine than CUDA devices with ``nccl`` (NCCL needs one device per process).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    cuda = torch.cuda.is_available()
    if device is None:
        device = (
            torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
            if cuda
            else torch.device("cpu")
        )
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size == 1 and not dist.is_initialized():
        return DistributedContext(0, 0, 1, device, None)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"backend 'nccl' needs a CUDA device, got device {device}")
    owns = False
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
        if backend == "nccl":
            _check_one_device_per_process(_env_int("LOCAL_WORLD_SIZE", 1))
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        owns = True
    else:
        backend = dist.get_backend()
        rank, world_size = dist.get_rank(), dist.get_world_size()
    logger.debug("rank %d/%d on %s (%s)", rank, world_size, device, backend)
    return DistributedContext(rank, local_rank, world_size, device, backend, owns)


def wrap_ddp(
    model: nn.Module,
    ctx: DistributedContext,
    *,
    find_unused_parameters: bool = True,
    **ddp_kwargs: Any,
) -> nn.Module:
    """Wrap ``model`` (already on ``ctx.device``) in ``DistributedDataParallel`` when distributed.

    Spann3R has parameters that never receive a gradient (the decoder's ``mask_token`` of
    CroCo pre-training and the unused first residual unit of the coarsest DPT fusion block), so
    ``find_unused_parameters`` is on by default; pass ``False`` after freezing them
    (``requires_grad_(False)``) to save the per-step graph traversal.

    Args:
        model: the model; its parameters are broadcast from rank 0 by DDP.
        ctx: from [`init_distributed`][spatialmem.training.distributed.init_distributed].
        find_unused_parameters: passed to DDP.
        **ddp_kwargs: further ``DistributedDataParallel`` options.

    Returns:
        The DDP wrapper, or ``model`` itself when not distributed.
    """
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(
        model,
        device_ids=device_ids,
        find_unused_parameters=find_unused_parameters,
        **ddp_kwargs,
    )


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose epoch can start part-way through (to resume a run).

    The order of an epoch depends only on ``(seed, epoch)``, as for ``DistributedSampler``;
    ``set_epoch(epoch, start=n)`` drops the first ``n`` indices of this rank's share of that
    epoch, so a resumed run continues with exactly the items the interrupted one would have drawn
    next. Every ``set_epoch`` call resets ``start`` (to 0 by default). All other arguments are
    those of ``torch.utils.data.DistributedSampler``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0
        """Indices of this rank's share of the current epoch that are skipped."""

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch (reshuffles) and skip the first ``start`` indices of it.

        Args:
            epoch: the epoch number (shuffling seed ``seed + epoch``).
            start: indices of this rank's share already consumed, ``0 <= start <= len``.
        """
        full = super().__len__()
        if not 0 <= start <= full:
            raise ValueError(f"`start` must lie in [0, {full}], got {start}")
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return super().__len__() - self.start


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    ctx: DistributedContext,
    *,
    shuffle: bool = True,
    seed: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    num_workers: int = 0,
    drop_last: bool = True,
) -> DataLoader[Any]:
    """A ``DataLoader`` over this rank's share of ``dataset`` (a ``ResumableSampler`` of this
    module: a ``DistributedSampler`` that can start an epoch part-way through).

    Every rank gets ``len(dataset) // world_size`` items per epoch (with ``drop_last``) and
    batches of ``batch_size``, so the global batch is ``batch_size * world_size``. Call
    ``loader.sampler.set_epoch(epoch)`` at the start of every epoch to reshuffle
    (``set_epoch(epoch, start=n)`` skips the first ``n`` items of this rank's share).

    The loader has its own random generator (seeded with ``seed``), so iterating it does not
    consume torch's global random numbers (which drive dropout, and which a resumed run restores).
    Worker processes are started anew every epoch: a dataset whose state changes with
    ``set_epoch`` (a curriculum) must reach them, and a persistent worker keeps the copy of the
    dataset it started with.

    Args:
        dataset: a map-style dataset.
        batch_size: batch size per process.
        ctx: from [`init_distributed`][spatialmem.training.distributed.init_distributed] (a
            single-process context gives all items).
        shuffle: shuffle (identically on all ranks, seeded by ``seed + epoch``).
        seed: shuffling seed.
        collate_fn: batch collation, e.g. [`collate_clips`][spatialmem.data.scenes.collate_clips].
        num_workers: loader worker processes.
        drop_last: drop the tail so that every rank and every batch has the same size (needed
            for the distributed gradient to equal the full-batch one).

    Returns:
        The loader.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    sampler = ResumableSampler(
        dataset,
        num_replicas=ctx.world_size,
        rank=ctx.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator().manual_seed(seed),
    )


def reduce_mean(value: Tensor, ctx: DistributedContext) -> Tensor:
    """Mean of a tensor over all ranks (a copy; the tensor itself when not distributed).

    Args:
        value: a tensor on ``ctx.device`` of the same shape on every rank.
        ctx: from [`init_distributed`][spatialmem.training.distributed.init_distributed].

    Returns:
        The average over ranks.
    """
    if not ctx.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


def setup_logging(ctx: DistributedContext, level: int = logging.INFO) -> None:
    """Configure the root logger: ``level`` on rank 0, warnings and errors only on the others.

    Every line carries the rank (``[rank 1] ...``).

    Args:
        ctx: from [`init_distributed`][spatialmem.training.distributed.init_distributed].
        level: level of rank 0.
    """
    handler = logging.StreamHandler()
    handler.addFilter(_RankFilter(ctx.rank))
    handler.setFormatter(
        logging.Formatter("%(asctime)s [rank %(rank)d] %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if ctx.is_main else max(level, logging.WARNING))


def barrier(ctx: DistributedContext) -> None:
    """Wait for all ranks (no-op when not distributed)."""
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def cleanup(ctx: DistributedContext) -> None:
    """Destroy the process group if
    [`init_distributed`][spatialmem.training.distributed.init_distributed] created it.

    Args:
        ctx: from [`init_distributed`][spatialmem.training.distributed.init_distributed].
    """
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
