"""The training entry point: ``python -m spatialmem.training`` (single process) or ``torchrun``.

Trains a registered sequence model (Spann3R) with :class:`~spatialmem.losses.Spann3RLoss` on
synthetic scenes with curriculum-sampled clips, AdamW and a warm-up + cosine schedule, data
parallel over the ``torchrun`` processes::

    torchrun --nproc_per_node 2 -m spatialmem.training --model spann3r_tiny --synthetic \\
        --steps 100 --batch-size 2 --out tiny.pt

The same options as keyword arguments of :class:`TrainConfig` drive :func:`train` from Python.
"""

import argparse
import dataclasses
import logging
import math
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
    """Registered model name (a :class:`~spatialmem.models.Spann3R`)."""
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
    """Gradient-norm clip (official 1.0); ``None`` disables clipping."""
    alpha: float = 0.4
    """Confidence-regulariser weight of the first half of the epochs."""
    alpha_end: float = 0.2
    """``alpha`` reached at the last epoch (official schedule: 0.4 -> 0.2 over the second half)."""
    amp: AmpMode = "auto"
    """Mixed precision (CUDA only)."""
    device: str | None = None
    """Training device; ``None``: ``cuda:<LOCAL_RANK>`` if available, else the CPU."""
    n_frames: int = 5
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
    """Checkpoint written by rank 0 at the end (:func:`~spatialmem.interop.save_checkpoint`)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accum_iter", "n_frames", "num_scenes", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_frames < 2:
            raise ValueError(f"TrainConfig.n_frames must be >= 2, got {self.n_frames}")
        if self.curriculum and self.video_frames < self.n_frames:
            raise ValueError(
                f"TrainConfig.video_frames={self.video_frames} must be >= n_frames={self.n_frames}"
            )


@dataclass
class TrainResult:
    """What :func:`train` returns."""

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
        ctx: distributed context; ``None`` calls :func:`init_distributed` (and cleans up the
            process group it creates at the end).

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


def _train(config: TrainConfig, ctx: DistributedContext) -> TrainResult:
    torch.manual_seed(config.seed)  # identical initialisation on every rank
    model = _build_model(config).to(ctx.device)
    ddp_model = wrap_ddp(model, ctx)
    torch.manual_seed(config.seed + 1000 * ctx.rank + 1)  # different dropout masks per rank

    per_epoch = config.num_scenes // ctx.world_size // config.batch_size
    if per_epoch < 1:
        raise ValueError(
            f"num_scenes={config.num_scenes} is too small for batch_size={config.batch_size} "
            f"on {ctx.world_size} process(es): no full batch per epoch"
        )
    num_epochs = math.ceil(config.steps * config.accum_iter / per_epoch)
    curriculum = (
        CurriculumConfig(max_interval=config.max_interval, n_frames=config.n_frames)
        if config.curriculum
        else None
    )
    dataset = SyntheticScenes(
        config.num_scenes,
        config.n_frames,
        config.height,
        config.width,
        seed=config.seed,
        curriculum=curriculum,
        video_frames=config.video_frames,
        num_epochs=num_epochs,
    )
    loader = make_loader(
        dataset,
        config.batch_size,
        ctx,
        seed=config.seed,
        collate_fn=collate_clips,
        num_workers=config.num_workers,
    )
    criterion = Spann3RLoss(alpha=config.alpha)
    optimizer = build_optimizer(model, config.lr, weight_decay=config.weight_decay)
    scheduler = warmup_cosine(
        optimizer,
        config.steps,
        warmup_steps=config.warmup_steps,
        min_lr_ratio=config.min_lr_ratio,
    )
    step = TrainStep(
        ddp_model,
        criterion,
        optimizer,
        scheduler=scheduler,
        accum_iter=config.accum_iter,
        max_grad_norm=config.max_grad_norm,
        amp=config.amp,
    )
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
    if config.out is not None:
        result.checkpoint = Path(config.out)
        if ctx.is_main:
            save_checkpoint(
                unwrap_model(ddp_model),
                result.checkpoint,
                step=step.optimizer_steps,
                epoch=result.epochs,
                train_config=dataclasses.asdict(config),
            )
            logger.info("saved checkpoint %s", result.checkpoint)
        barrier(ctx)
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


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m spatialmem.training`` (options of
    :class:`TrainConfig`)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m spatialmem.training",
        description="Train a Spann3R model (run under torchrun for data parallelism).",
    )
    p.add_argument("--model", default=d.model, help="registered model name (%(default)s)")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="train on synthetic scenes with ground truth (the built-in dataset; required)",
    )
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps (%(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per process")
    p.add_argument("--accum-iter", type=int, default=d.accum_iter, help="gradient accumulation")
    p.add_argument("--lr", type=float, default=d.lr, help="base learning rate (%(default)g)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    p.add_argument(
        "--max-grad-norm", type=float, default=d.max_grad_norm, help="<= 0 disables clipping"
    )
    p.add_argument("--alpha", type=float, default=d.alpha)
    p.add_argument("--alpha-end", type=float, default=d.alpha_end)
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default=d.amp)
    p.add_argument("--device", default=d.device, help="e.g. cpu, cuda (default: auto)")
    p.add_argument("--frames", type=int, default=d.n_frames, help="frames per clip T")
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--num-scenes", type=int, default=d.num_scenes, help="scenes per epoch")
    p.add_argument("--video-frames", type=int, default=d.video_frames)
    p.add_argument("--max-interval", type=int, default=d.max_interval)
    p.add_argument("--no-curriculum", action="store_true", help="fixed consecutive frames")
    p.add_argument("--mem-dropout", type=float, default=d.mem_dropout)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--out", default=d.out, help="checkpoint path written at the end")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Translate parsed command-line options into a :class:`TrainConfig`."""
    max_norm = args.max_grad_norm
    return TrainConfig(
        model=args.model,
        steps=args.steps,
        batch_size=args.batch_size,
        accum_iter=args.accum_iter,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        min_lr_ratio=args.min_lr_ratio,
        max_grad_norm=None if max_norm is None or max_norm <= 0 else max_norm,
        alpha=args.alpha,
        alpha_end=args.alpha_end,
        amp=args.amp,
        device=args.device,
        n_frames=args.frames,
        height=args.height,
        width=args.width,
        num_scenes=args.num_scenes,
        video_frames=args.video_frames,
        curriculum=not args.no_curriculum,
        max_interval=args.max_interval,
        mem_dropout=args.mem_dropout,
        seed=args.seed,
        num_workers=args.num_workers,
        log_every=args.log_every,
        out=args.out,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 on success).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.synthetic:
        parser.error(
            "no dataset selected: pass --synthetic (the only built-in dataset); for real data, "
            "write a Dataset of spatialmem.data.scenes.SceneClip and drive TrainStep yourself"
        )
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
