"""The training entry point: ``python -m spatialmem.training`` (single process) or ``torchrun``.

Trains a registered sequence model (Spann3R) with [`Spann3RLoss`][spatialmem.losses.Spann3RLoss] on
synthetic scenes with curriculum-sampled clips, AdamW and a warm-up + cosine schedule, data
parallel over the ``torchrun`` processes:

```bash
torchrun --nproc_per_node 2 -m spatialmem.training --model spann3r_tiny --steps 100 \\
    --batch-size 2 --out tiny.pt
```

The same options as keyword arguments of [`TrainConfig`][spatialmem.training.runner.TrainConfig]
drive [`train`][spatialmem.training.runner.train] from Python; the command-line parser is
generated from its fields (``num_frames`` becomes ``--num-frames``, a boolean ``curriculum``
becomes ``--curriculum`` / ``--no-curriculum``).
"""

import argparse
import ast
import dataclasses
import inspect
import itertools
import logging
import math
import re
import textwrap
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spatialmem.data.curriculum import CurriculumConfig
from spatialmem.data.scenes import SyntheticScenes, collate_clips
from spatialmem.interop import save_checkpoint
from spatialmem.losses import Spann3RLoss, alpha_schedule
from spatialmem.memory import MemoryConfig, SpatialMemory
from spatialmem.models import Spann3R, create_model
from spatialmem.training.distributed import (
    DistributedContext,
    barrier,
    cleanup,
    init_distributed,
    make_loader,
    reduce_mean,
    setup_logging,
    wrap_ddp,
)
from spatialmem.training.optim import PAPER_LR, build_optimizer, warmup_cosine
from spatialmem.training.step import AmpMode, StepStats, TrainStep, unwrap_model

__all__ = ["TrainConfig", "TrainResult", "build_parser", "config_from_args", "main", "train"]

logger = logging.getLogger("spatialmem.training")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of a training run (the command-line options of ``-m spatialmem.training``)."""

    model: str = "spann3r_tiny"
    """Registered model name (a [`Spann3R`][spatialmem.models.Spann3R])."""
    steps: int = 100
    """Optimiser steps."""
    batch_size: int = 2
    """Clips per process and micro-batch (global batch: ``batch_size * world_size *
    accum_iter``; the paper uses 2 per GPU on 8 GPUs)."""
    accum_iter: int = 1
    """Micro-batches per optimiser step."""
    lr: float = PAPER_LR
    """Base learning rate (paper: 5e-5)."""
    weight_decay: float = 0.05
    """AdamW weight decay of the weight matrices."""
    warmup_steps: int = 0
    """Linear warm-up steps of the cosine schedule."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clip (official 1.0); ``None`` (on the command line: a value ``<= 0``)
    disables clipping."""
    alpha: float = 0.4
    """Confidence-regulariser weight of the first half of the epochs."""
    alpha_end: float = 0.2
    """``alpha`` reached at the last epoch (official schedule: 0.4 -> 0.2 over the second half)."""
    amp: AmpMode = "auto"
    """Mixed precision (CUDA only)."""
    device: str | None = None
    """Training device; ``None``: ``cuda:<LOCAL_RANK>`` if available, else the CPU."""
    num_frames: int = 5
    """Frames per clip ``T`` (paper: 5)."""
    height: int = 64
    """Image height."""
    width: int = 64
    """Image width."""
    num_scenes: int = 64
    """Synthetic scenes per epoch."""
    video_frames: int = 48
    """Length of each synthetic video the curriculum samples clips from."""
    curriculum: bool = True
    """Sample clip frames with the curriculum (growing, then shrinking interval)."""
    max_interval: int = 4
    """Curriculum ``T_max``: the largest interval between adjacent clip frames."""
    mem_dropout: float | None = None
    """Override of the memory's attention dropout (``None``: the model's, paper 0.15)."""
    seed: int = 0
    """Seed of the model initialisation, the data and the shuffling."""
    num_workers: int = 0
    """Data-loader workers per process."""
    log_every: int = 10
    """Log every this many optimiser steps (averaged over the ranks)."""
    out: str | None = None
    """Checkpoint written by rank 0 at the end
    ([`save_checkpoint`][spatialmem.interop.save_checkpoint])."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accum_iter", "num_frames", "num_scenes", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_frames < 2:
            raise ValueError(f"TrainConfig.num_frames must be >= 2, got {self.num_frames}")
        if self.curriculum and self.video_frames < self.num_frames:
            raise ValueError(
                f"TrainConfig.video_frames={self.video_frames} must be >= "
                f"num_frames={self.num_frames}"
            )


@dataclass
class TrainResult:
    """What [`train`][spatialmem.training.runner.train] returns."""

    model: Spann3R
    """The trained model (unwrapped from DDP)."""
    history: list[StepStats] = field(default_factory=list)
    """One record per optimiser step (loss of this rank's last micro-batch of that step)."""
    epochs: int = 0
    """Epochs started."""
    checkpoint: Path | None = None
    """Where the checkpoint was written, if anywhere."""


def _build_model(config: TrainConfig) -> Spann3R:
    memory: Any = None
    if config.mem_dropout is not None:
        p = float(config.mem_dropout)

        def memory(mem_config: MemoryConfig) -> SpatialMemory:
            return SpatialMemory(dataclasses.replace(mem_config, attn_dropout=p))

    kwargs = {} if memory is None else {"memory": memory}
    model = create_model(config.model, **kwargs)
    if not isinstance(model, Spann3R):
        raise ValueError(
            f"model {config.model!r} is a {type(model).__name__}; training needs a sequence "
            "model (Spann3R), e.g. 'spann3r_tiny' or 'spann3r_vitl_dpt512'"
        )
    return model


def train(config: TrainConfig, ctx: DistributedContext | None = None) -> TrainResult:
    """Run a training job on synthetic scenes (single process or one ``torchrun`` rank).

    Args:
        config: the run settings.
        ctx: distributed context; ``None`` calls
            [`init_distributed`][spatialmem.training.distributed.init_distributed] (and cleans up
            the process group it creates at the end).

    Returns:
        The trained model and the per-step statistics.
    """
    own_ctx = ctx is None
    if ctx is None:
        ctx = init_distributed(device=config.device)
    try:
        return _train(config, ctx)
    finally:
        if own_ctx:
            cleanup(ctx)


def _epochs(config: TrainConfig, ctx: DistributedContext) -> tuple[int, int]:
    """``(batches per epoch and process, epochs)`` needed for ``config.steps`` optimiser steps."""
    per_epoch = config.num_scenes // ctx.world_size // config.batch_size
    if per_epoch < 1:
        raise ValueError(
            f"num_scenes={config.num_scenes} is too small for batch_size={config.batch_size} "
            f"on {ctx.world_size} process(es): no full batch per epoch"
        )
    return per_epoch, math.ceil(config.steps * config.accum_iter / per_epoch)


def _dataset(config: TrainConfig, num_epochs: int) -> SyntheticScenes:
    curriculum = (
        CurriculumConfig(max_interval=config.max_interval, num_frames=config.num_frames)
        if config.curriculum
        else None
    )
    return SyntheticScenes(
        config.num_scenes,
        config.num_frames,
        config.height,
        config.width,
        seed=config.seed,
        curriculum=curriculum,
        video_frames=config.video_frames,
        num_epochs=num_epochs,
    )


def _train_step(
    config: TrainConfig, model: Spann3R, ddp_model: torch.nn.Module, criterion: Spann3RLoss
) -> TrainStep:
    """``criterion``, AdamW and the warm-up + cosine schedule bundled in a
    [`TrainStep`][spatialmem.training.step.TrainStep]."""
    optimizer = build_optimizer(model, config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine(
        optimizer,
        config.steps,
        warmup_steps=config.warmup_steps,
        min_lr_ratio=config.min_lr_ratio,
    )
    return TrainStep(
        ddp_model,
        criterion,
        optimizer,
        scheduler=scheduler,
        accum_iter=config.accum_iter,
        max_grad_norm=config.max_grad_norm,
        amp=config.amp,
    )


def _run_epochs(
    config: TrainConfig,
    ctx: DistributedContext,
    step: TrainStep,
    criterion: Spann3RLoss,
    loader: torch.utils.data.DataLoader,
    dataset: SyntheticScenes,
    num_epochs: int,
    result: TrainResult,
) -> None:
    """Train until ``config.steps`` optimiser steps, recording them in ``result`` (the
    confidence weight of ``criterion`` follows the official per-epoch schedule)."""
    for epoch in range(num_epochs):
        if step.optimizer_steps >= config.steps:
            break
        result.epochs = epoch + 1
        loader.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        dataset.set_epoch(epoch)
        criterion.alpha = alpha_schedule(epoch, num_epochs, config.alpha, config.alpha_end)
        for batch in loader:
            stats = step(batch)
            if stats.grad_norm is None:
                continue  # accumulating: no optimiser step yet
            result.history.append(stats)
            done = step.optimizer_steps
            if done % config.log_every == 0 or done == config.steps:
                _log(stats, done, config.steps, epoch, criterion.alpha, ctx)
            if done >= config.steps:
                break


def _save(
    config: TrainConfig, ctx: DistributedContext, step: TrainStep, result: TrainResult
) -> None:
    """Rank 0 writes the checkpoint of ``config.out`` (the others wait for it)."""
    if config.out is None:
        return
    result.checkpoint = Path(config.out)
    if ctx.is_main:
        save_checkpoint(
            unwrap_model(step.model),
            result.checkpoint,
            step=step.optimizer_steps,
            epoch=result.epochs,
            train_config=dataclasses.asdict(config),
        )
        logger.info("saved checkpoint %s", result.checkpoint)
    barrier(ctx)


def _train(config: TrainConfig, ctx: DistributedContext) -> TrainResult:
    torch.manual_seed(config.seed)  # identical initialisation on every rank
    model = _build_model(config).to(ctx.device)
    ddp_model = wrap_ddp(model, ctx)
    torch.manual_seed(config.seed + 1000 * ctx.rank + 1)  # different dropout masks per rank

    per_epoch, num_epochs = _epochs(config, ctx)
    dataset = _dataset(config, num_epochs)
    loader = make_loader(
        dataset,
        config.batch_size,
        ctx,
        seed=config.seed,
        collate_fn=collate_clips,
        num_workers=config.num_workers,
    )
    criterion = Spann3RLoss(alpha=config.alpha)
    step = _train_step(config, model, ddp_model, criterion)
    logger.info(
        "training %s (%.2fM parameters) on %d process(es), device %s, amp %s: %d steps, "
        "%d epoch(s) of %d batch(es), global batch %d",
        config.model,
        sum(p.numel() for p in model.parameters()) / 1e6,
        ctx.world_size,
        ctx.device,
        step.amp_dtype,
        config.steps,
        num_epochs,
        per_epoch,
        config.batch_size * ctx.world_size * config.accum_iter,
    )
    result = TrainResult(model=model)
    _run_epochs(config, ctx, step, criterion, loader, dataset, num_epochs, result)
    _save(config, ctx, step, result)
    return result


def _log(
    stats: StepStats, done: int, total: int, epoch: int, alpha: float, ctx: DistributedContext
) -> None:
    values = [stats.loss, stats.conf_loss or 0.0, stats.scale_loss or 0.0]
    mean = reduce_mean(torch.tensor(values, device=ctx.device), ctx).tolist()
    logger.info(
        "step %d/%d epoch %d: loss %.4f (conf %.4f, scale %.4f) grad_norm %.3f lr %.3g alpha %.3f",
        done,
        total,
        epoch,
        mean[0],
        mean[1],
        mean[2],
        stats.grad_norm if stats.grad_norm is not None else float("nan"),
        stats.lr,
        alpha,
    )


# Extra command-line spellings of TrainConfig fields (kept from earlier versions of the CLI).
_FLAG_ALIASES: dict[str, tuple[str, ...]] = {"num_frames": ("--frames",)}


def _field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal after each field), read from
    its source; empty if the source is not available."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = following.value.value
    return docs


def _plain_help(doc: str) -> str:
    """A field docstring as one line of command-line help (markup removed, ``%`` escaped)."""
    text = re.sub(r"\[`?([^\]`]+)`?\]\[[^\]]*\]", r"\1", doc)  # [`Name`][path] -> Name
    text = " ".join(text.replace("``", "").split())
    return text.replace("%", "%%")


def _argument_type(hint: Any) -> tuple[type, tuple[Any, ...] | None]:
    """``(type, choices)`` of a field annotation: ``X | None`` parses as ``X``, a ``Literal``
    gives its values as choices."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    return hint, None


def _add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of the dataclass ``cls``: ``--field-name`` (plus
    ``_FLAG_ALIASES``), typed from the annotation, defaulting to the field default, with the
    field's docstring as help. A boolean field becomes ``--name`` / ``--no-name``."""
    docs = _field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flags = ("--" + f.name.replace("_", "-"), *_FLAG_ALIASES.get(f.name, ()))
        help_text = _plain_help(docs.get(f.name, "")) + " (default: %(default)s)"
        kind, choices = _argument_type(hints[f.name])
        if kind is bool:
            parser.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=help_text,
            )
        else:
            parser.add_argument(
                *flags, dest=f.name, type=kind, choices=choices, default=f.default, help=help_text
            )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m spatialmem.training``: one option per field of
    [`TrainConfig`][spatialmem.training.runner.TrainConfig] (``--batch-size`` for
    ``batch_size``; ``--frames`` is also accepted for ``--num-frames``)."""
    parser = argparse.ArgumentParser(
        prog="python -m spatialmem.training",
        description=(
            "Train a Spann3R model on synthetic scenes with ground truth (run under torchrun for "
            "data parallelism)."
        ),
    )
    _add_config_arguments(parser, TrainConfig)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Translate parsed command-line options into a
    [`TrainConfig`][spatialmem.training.runner.TrainConfig] (a ``--max-grad-norm`` of ``<= 0``
    disables clipping)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    max_norm = values["max_grad_norm"]
    values["max_grad_norm"] = None if max_norm is None or max_norm <= 0 else max_norm
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 on success).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    ctx = init_distributed(device=config.device)
    if not logging.getLogger().handlers:
        setup_logging(ctx)
    try:
        _train(config, ctx)
    finally:
        cleanup(ctx)
    return 0
