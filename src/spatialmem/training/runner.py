"""The training loop: [`train`][spatialmem.training.runner.train] (single process or one
``torchrun`` rank; the command line is `spatialmem.training.cli`).

Trains a registered sequence model (Spann3R) with [`Spann3RLoss`][spatialmem.losses.Spann3RLoss] on
synthetic scenes with curriculum-sampled clips, AdamW and a warm-up + cosine schedule, data
parallel over the ``torchrun`` processes, as set by a
[`TrainConfig`][spatialmem.training.config.TrainConfig].

With a run directory (``run_dir``) rank 0 writes ``metrics.csv`` (one row per optimiser step),
``loss.png`` and the resumable state ``last.pt``; ``resume`` continues an interrupted run with
the same data order, random numbers and schedule as if it had never stopped.
"""

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spatialmem.data.curriculum import CurriculumConfig
from spatialmem.data.rooms import RoomScenes, parse_path_weights
from spatialmem.data.scenes import (
    SceneBatch,
    SceneClipDataset,
    SyntheticScenes,
    collate_clips,
)
from spatialmem.interop import save_checkpoint
from spatialmem.losses import Spann3RLoss, alpha_schedule
from spatialmem.memory import MemoryConfig, SpatialMemory
from spatialmem.metrics import aligned_point_error
from spatialmem.models import Spann3R, create_model
from spatialmem.training.augment import jitter_colors
from spatialmem.training.config import (
    BEST_FILE,
    METRICS_FILE,
    PLOT_FILE,
    RESUME_FREE_FIELDS,
    STATE_FILE,
    TrainConfig,
)
from spatialmem.training.distributed import (
    DistributedContext,
    barrier,
    cleanup,
    init_distributed,
    make_loader,
    reduce_mean,
    wrap_ddp,
)
from spatialmem.training.init_weights import load_initial_weights
from spatialmem.training.logs import MetricsCSV, plot_loss_curves
from spatialmem.training.optim import build_optimizer, warmup_cosine
from spatialmem.training.pairs import PairBatches
from spatialmem.training.state import (
    capture_train_state,
    config_differences,
    load_train_state,
    restore_train_state,
    save_train_state,
)
from spatialmem.training.step import (
    StepStats,
    TrainStep,
    _float32,
    _step_predictions,
    unwrap_model,
)

__all__ = ["TrainResult", "train"]

logger = logging.getLogger("spatialmem.training")

# Seed offset of the "box" validation scenes (disjoint from the training scenes' seeds).
_VAL_SEED_OFFSET = 1_000_003


@dataclass
class TrainResult:
    """What [`train`][spatialmem.training.runner.train] returns."""

    model: Spann3R
    """The trained model (unwrapped from DDP)."""
    history: list[StepStats] = field(default_factory=list)
    """One record per optimiser step of this invocation (loss of this rank's last micro-batch of
    that step; a resumed run starts a new list)."""
    epochs: int = 0
    """Epochs started (counting those of the run a resumption continues)."""
    checkpoint: Path | None = None
    """Where the checkpoint was written, if anywhere."""
    val_losses: dict[int, float] = field(default_factory=dict)
    """Validation loss (mean over the validation clips and ranks) by optimiser step, for the
    validations of this invocation."""
    val_errors: dict[int, float] = field(default_factory=dict)
    """Validation error ([`aligned_point_error`][spatialmem.metrics.aligned_point_error], mean
    over the same clips) by optimiser step."""
    run_dir: Path | None = None
    """The run directory, if any."""
    start_step: int = 0
    """Optimiser steps already done when this invocation started (non-zero when resumed)."""


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

    With ``config.run_dir`` rank 0 writes ``metrics.csv``, ``loss.png`` and ``last.pt`` there;
    with ``config.resume`` the run continues from ``last.pt`` when that exists, drawing the same
    clips, augmentations and dropout masks at every step as an uninterrupted run would.

    Args:
        config: the run settings.
        ctx: distributed context; ``None`` calls
            [`init_distributed`][spatialmem.training.distributed.init_distributed] (and cleans up
            the process group it creates at the end).

    Returns:
        The trained model and the per-step statistics.

    Raises:
        ValueError: inconsistent settings, or ``resume`` with a saved run whose settings differ
            (the message names the differing fields) or that ran on another number of
            processes.
        ImportError: ``scenes="rooms"`` without ``spatialmem.data.rooms``.
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
    """``(clip batches per epoch and process, epochs)`` needed for ``config.steps`` optimiser
    steps (pair batches, see ``pair_every``, take the place of some clip batches)."""
    per_epoch = config.num_scenes // ctx.world_size // config.batch_size
    if per_epoch < 1:
        raise ValueError(
            f"num_scenes={config.num_scenes} is too small for batch_size={config.batch_size} "
            f"on {ctx.world_size} process(es): no full batch per epoch"
        )
    micro_batches = config.steps * config.accum_iter
    if config.pair_every:
        micro_batches -= micro_batches // config.pair_every
    return per_epoch, math.ceil(micro_batches / per_epoch)


def _dataset(config: TrainConfig, num_epochs: int) -> SceneClipDataset:
    curriculum = (
        CurriculumConfig(
            max_interval=config.max_interval,
            min_interval=config.min_interval,
            num_frames=config.num_frames,
        )
        if config.curriculum
        else None
    )
    if config.scenes == "rooms":
        return RoomScenes(
            config.num_scenes,
            config.num_frames,
            config.height,
            config.width,
            split="train",
            seed=config.seed,
            curriculum=curriculum,
            video_frames=config.video_frames,
            num_epochs=num_epochs,
            path_weights=(
                None if config.path_weights is None else parse_path_weights(config.path_weights)
            ),
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


def _val_dataset(config: TrainConfig) -> SceneClipDataset:
    """Fixed validation clips: frames ``0, s, 2 s, ...``, ``s = val_stride`` (default
    ``max(max_interval // 2, 1)``)."""
    stride = config.val_stride or max(config.max_interval // 2, 1)
    if config.scenes == "rooms":
        return RoomScenes(
            config.val_scenes,
            config.num_frames,
            config.height,
            config.width,
            split="val",
            seed=config.seed,
            curriculum=None,
            stride=stride,
        )
    return SyntheticScenes(
        config.val_scenes,
        config.num_frames,
        config.height,
        config.width,
        seed=config.seed + _VAL_SEED_OFFSET,
        stride=stride,
    )


def _val_batches(config: TrainConfig, ctx: DistributedContext) -> list[SceneBatch]:
    """This rank's share of the validation clips (clips ``rank, rank + world_size, ...``) in
    batches of ``batch_size``."""
    dataset = _val_dataset(config)
    with torch.random.fork_rng(devices=[]):  # leave the training's random state alone
        clips = [dataset[i] for i in range(ctx.rank, len(dataset), ctx.world_size)]
    size = config.batch_size
    return [collate_clips(clips[i : i + size]) for i in range(0, len(clips), size)]


@torch.no_grad()
def _validate(
    model: torch.nn.Module,
    criterion: Spann3RLoss,
    batches: list[SceneBatch],
    ctx: DistributedContext,
    amp_dtype: torch.dtype | None,
) -> tuple[float, float]:
    """Mean loss and mean [`aligned_point_error`][spatialmem.metrics.aligned_point_error] over
    the validation clips of all ranks (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    use_amp = amp_dtype is not None and ctx.device.type == "cuda"
    try:
        for batch in batches:
            batch = batch.to(ctx.device)
            autocast = (
                torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
            )
            with autocast:
                out = model(batch.frames, return_steps=True)
            loss = criterion(_float32(_step_predictions(out)), batch.target).loss
            target = batch.target
            error = aligned_point_error(out.pts3d.float(), target.pts3d, target.valid)
            total[0] += loss.double() * batch.batch_size
            total[1] += error.double().sum()
            total[2] += batch.batch_size
    finally:
        model.train(was_training)
    total = reduce_mean(total, ctx)
    if float(total[2]) == 0:
        return math.nan, math.nan
    return float(total[0] / total[2]), float(total[1] / total[2])


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


def _jitter_seed(seed: int, micro_step: int, rank: int) -> int:
    """Seed of the colour jitter of one micro-batch on one rank."""
    digest = hashlib.blake2b(f"jitter:{seed}:{micro_step}:{rank}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def _augment(batch: SceneBatch, config: TrainConfig, micro_step: int, rank: int) -> SceneBatch:
    """The batch with colour-jittered frames (a generator seeded from the step, so a resumed
    run draws the same factors)."""
    if config.color_jitter == 0:
        return batch
    generator = torch.Generator().manual_seed(_jitter_seed(config.seed, micro_step, rank))
    return batch.replace(frames=jitter_colors(batch.frames, config.color_jitter, generator))


class _Run:
    """The loop's bookkeeping: step statistics, validation, logging and the run directory."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistributedContext,
        step: TrainStep,
        criterion: Spann3RLoss,
        result: TrainResult,
        *,
        elapsed: float = 0.0,
        val_batches: list[SceneBatch] | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.step = step
        self.criterion = criterion
        self.result = result
        self.val_batches = val_batches
        self.started = time.perf_counter() - elapsed
        self.micro: list[StepStats] = []  # micro-batches of the current accumulation cycle
        self.data_wait = 0.0  # seconds waited for the data loader since the last optimiser step
        self.saved_step = -1
        self.dir = None if config.run_dir is None else Path(config.run_dir)
        self.csv: MetricsCSV | None = None
        self._plot_warned = False
        if self.dir is not None and ctx.is_main:
            keep = result.start_step if result.start_step > 0 else None
            self.csv = MetricsCSV(self.dir / METRICS_FILE, keep_until=keep)
        # a resumed run competes with the best of the steps it continues; a new run starts over
        self.best_error = _best_error(self.dir) if result.start_step > 0 else math.inf

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def after_micro_batch(self, stats: StepStats, epoch: int) -> bool:
        """Record a micro-batch; after an optimiser step log, validate and save as due.

        Returns whether the run must stop (``steps`` or ``stop_after`` reached).
        """
        self.micro.append(stats)
        if stats.grad_norm is None:
            return False  # accumulating: no optimiser step yet
        config, done = self.config, self.step.optimizer_steps
        self.result.history.append(stats)
        loss, conf, scale = self._step_losses()
        val_loss = val_error = None
        if self.val_batches is not None and (done % config.val_every == 0 or done == config.steps):
            val_loss, val_error = _validate(
                self.result.model, self.criterion, self.val_batches, self.ctx, self.step.amp_dtype
            )
            self.result.val_losses[done] = val_loss
            self.result.val_errors[done] = val_error
            if val_error < self.best_error:
                self.best_error = val_error
                self.save_best(epoch, val_error)
        data_wait, self.data_wait = self.data_wait, 0.0
        if done % config.log_every == 0 or done == config.steps or val_loss is not None:
            _log(
                stats, (loss, conf, scale), done, config.steps, epoch, self.criterion.alpha,
                data_wait,
            )  # fmt: skip
            if val_loss is not None:
                logger.info(
                    "step %d/%d: validation loss %.4f, error after Sim(3) %.2f%% of the diameter",
                    done,
                    config.steps,
                    val_loss,
                    100 * (val_error or 0.0),
                )
        if self.csv is not None:
            self.csv.write(
                step=done,
                epoch=epoch,
                lr=stats.lr,
                alpha=self.criterion.alpha,
                loss=loss,
                conf_loss=conf,
                scale_loss=scale,
                grad_norm=stats.grad_norm,
                seconds=round(self.elapsed, 3),
                data_seconds=round(data_wait, 4),
                val_loss=val_loss,
                val_error=val_error,
            )
        if done % config.save_every == 0:
            self.save(epoch)
        return done >= self.stop_step

    @property
    def stop_step(self) -> int:
        stop = self.config.stop_after
        return self.config.steps if stop is None else min(stop, self.config.steps)

    def _step_losses(self) -> tuple[float, float | None, float | None]:
        """Loss and parts of the finished step: mean over its micro-batches and the ranks."""
        micro, self.micro = self.micro, []
        n = len(micro)
        values = [
            sum(s.loss for s in micro) / n,
            sum(s.conf_loss or 0.0 for s in micro) / n,
            sum(s.scale_loss or 0.0 for s in micro) / n,
        ]
        mean = reduce_mean(torch.tensor(values, device=self.ctx.device), self.ctx).tolist()
        conf = None if micro[-1].conf_loss is None else mean[1]
        scale = None if micro[-1].scale_loss is None else mean[2]
        return mean[0], conf, scale

    def save(self, epoch: int) -> None:
        """Write ``last.pt`` and redraw ``loss.png`` (a collective; rank 0 writes)."""
        if self.dir is None or self.saved_step == self.step.optimizer_steps:
            return
        state = capture_train_state(
            self.step,
            self.ctx,
            epoch=epoch,
            config=dataclasses.asdict(self.config),
            extra={"elapsed_s": self.elapsed},
        )
        if self.ctx.is_main:
            path = save_train_state(state, self.dir / STATE_FILE)
            logger.info("step %d: saved %s", self.step.optimizer_steps, path)
            self.plot()
        self.saved_step = self.step.optimizer_steps
        barrier(self.ctx)

    def save_best(self, epoch: int, val_error: float) -> None:
        """Write ``best.pt``: the model with the lowest validation error so far (rank 0)."""
        if self.dir is None or not self.ctx.is_main:
            return
        path = self.dir / BEST_FILE
        save_checkpoint(
            unwrap_model(self.step.model),
            path,
            step=self.step.optimizer_steps,
            epoch=epoch,
            val_error=val_error,
            train_config=dataclasses.asdict(self.config),
        )
        done = self.step.optimizer_steps
        logger.info("step %d: lowest validation error so far, saved %s", done, path)

    def plot(self) -> None:
        """Redraw ``loss.png`` (a failure is logged, never raised: training goes on)."""
        assert self.dir is not None
        try:
            plot_loss_curves(self.dir / METRICS_FILE, self.dir / PLOT_FILE, title=self.dir.name)
        except Exception as err:  # a plot must not end a long run
            if not self._plot_warned:
                logger.warning("could not draw %s: %s", self.dir / PLOT_FILE, err)
                self._plot_warned = True

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()


def _clip_batches_done(micro_steps: int, pairs: PairBatches | None) -> int:
    """Clip batches among the first ``micro_steps`` micro-batches."""
    return micro_steps if pairs is None else pairs.clip_batches_before(micro_steps)


def _run_epochs(
    run: _Run,
    loader: torch.utils.data.DataLoader,
    dataset: SceneClipDataset,
    per_epoch: int,
    num_epochs: int,
    pairs: PairBatches | None = None,
) -> int:
    """Train until ``steps`` (or ``stop_after``) optimiser steps, continuing from the step
    counters of ``run.step`` (the batches already consumed are skipped, so a resumed run sees
    the same clips), with the pair batches of ``pairs`` in their places. The confidence weight
    follows the official per-epoch schedule. Returns the epoch of the last batch."""
    config, step = run.config, run.step
    first_epoch, skip = divmod(_clip_batches_done(step.micro_steps, pairs), per_epoch)
    last = max(first_epoch - (skip == 0), 0)  # the epoch of the last batch consumed
    for epoch in range(first_epoch, num_epochs):
        if step.optimizer_steps >= run.stop_step:
            break
        run.result.epochs = epoch + 1
        start = skip * config.batch_size if epoch == first_epoch else 0
        loader.sampler.set_epoch(epoch, start=start)  # type: ignore[union-attr, call-arg]
        dataset.set_epoch(epoch)
        run.criterion.alpha = alpha_schedule(epoch, num_epochs, config.alpha, config.alpha_end)
        batches = iter(loader)
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            run.data_wait += time.perf_counter() - waited
            last = epoch
            # The pairs due before this clip batch: run only once the epoch has a batch left,
            # so that a pair batch between two epochs belongs to the later one, as it does
            # when a run resumes there.
            if _run_pairs(run, pairs, epoch):
                return epoch
            batch = _augment(batch, config, step.micro_steps, run.ctx.rank)
            if run.after_micro_batch(step(batch), epoch):
                return epoch
    if pairs is not None and step.optimizer_steps < run.stop_step:
        # Pair batches after the last clip batch of the run.
        last = num_epochs - 1
        run.criterion.alpha = alpha_schedule(last, num_epochs, config.alpha, config.alpha_end)
        _run_pairs(run, pairs, last)
    return last


def _run_pairs(run: _Run, pairs: PairBatches | None, epoch: int) -> bool:
    """Train on the pair batch due at the current micro-batch, if any (``pair_every >= 2``:
    never two in a row); returns whether the run must stop."""
    micro = run.step.micro_steps
    if pairs is None or not pairs.is_pair(micro):
        return False
    batch = _augment(pairs.batch(micro), run.config, micro, run.ctx.rank)
    return run.after_micro_batch(run.step(batch), epoch)


def _save(
    config: TrainConfig, ctx: DistributedContext, step: TrainStep, result: TrainResult
) -> None:
    """Rank 0 writes the checkpoint of ``config.out`` (the others wait for it)."""
    if config.out is None:
        return
    if step.optimizer_steps < config.steps:
        logger.info(
            "stopped after step %d of %d: %s not written (resume to finish the run)",
            step.optimizer_steps,
            config.steps,
            config.out,
        )
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


def _best_error(run_dir: Path | None) -> float:
    """Validation error of the run directory's ``best.pt`` (infinite when there is none)."""
    path = None if run_dir is None else run_dir / BEST_FILE
    if path is None or not path.is_file():
        return math.inf
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return float(saved.get("val_error", math.inf))


def _saved_state(config: TrainConfig) -> dict[str, Any] | None:
    """The state to resume from (``None``: start afresh); checks the saved settings."""
    if config.run_dir is None:
        return None
    path = Path(config.run_dir) / STATE_FILE
    if not config.resume:
        if path.exists():
            logger.warning("%s exists and resume is off: starting a new run over it", path)
        return None
    if not path.exists():
        logger.info("resume: no %s yet, starting a new run", path)
        return None
    state = load_train_state(path)
    differences = config_differences(
        state["config"], dataclasses.asdict(config), ignore=RESUME_FREE_FIELDS
    )
    if differences:
        raise ValueError(
            f"cannot resume {path}: the settings differ from the saved run's in "
            + "; ".join(differences)
            + f" (only {', '.join(sorted(RESUME_FREE_FIELDS))} may change)"
        )
    return state


def _train(config: TrainConfig, ctx: DistributedContext) -> TrainResult:
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    state = _saved_state(config)
    torch.manual_seed(config.seed)  # identical initialisation on every rank
    model = _build_model(config)
    if config.init_from is not None and state is None:
        loaded = load_initial_weights(model, config.init_from, config.model)
        logger.info("initial weights: %s", loaded)
    model = model.to(ctx.device)
    ddp_model = wrap_ddp(model, ctx)
    torch.manual_seed(config.seed + 1000 * ctx.rank + 1)  # different dropout masks per rank

    per_epoch, num_epochs = _epochs(config, ctx)
    dataset = _dataset(config, num_epochs)
    loader = make_loader(
        dataset,  # type: ignore[arg-type]
        config.batch_size,
        ctx,
        seed=config.seed,
        collate_fn=collate_clips,
        num_workers=config.num_workers,
    )
    pairs = PairBatches(config, ctx, per_epoch, num_epochs, _dataset) if config.pair_every else None
    criterion = Spann3RLoss(alpha=config.alpha, frame_scale_weight=config.frame_scale_weight)
    step = _train_step(config, model, ddp_model, criterion)
    result = TrainResult(
        model=model, run_dir=None if config.run_dir is None else Path(config.run_dir)
    )
    elapsed = 0.0
    if state is not None:
        restore_train_state(step, state, ctx)  # last: the random state of the saved step
        result.start_step = step.optimizer_steps
        done = _clip_batches_done(step.micro_steps, pairs)
        result.epochs = -(-done // per_epoch)  # epochs started
        elapsed = float(state.get("elapsed_s", 0.0))
    logger.info(
        "training %s (%.2fM parameters) on %d process(es), device %s, amp %s: %d steps, "
        "%d epoch(s) of %d batch(es), global batch %d%s",
        config.model,
        sum(p.numel() for p in model.parameters()) / 1e6,
        ctx.world_size,
        ctx.device,
        step.amp_dtype,
        config.steps,
        num_epochs,
        per_epoch,
        config.batch_size * ctx.world_size * config.accum_iter,
        (
            f"; 1 micro-batch in {config.pair_every} of frame pairs up to "
            f"{config.pair_max_interval} frames apart"
            if pairs is not None
            else ""
        ),
    )
    if state is not None:
        logger.info(
            "resumed %s at step %d", Path(config.run_dir or "") / STATE_FILE, result.start_step
        )
    val_batches = _val_batches(config, ctx) if config.val_every > 0 else None
    run = _Run(config, ctx, step, criterion, result, elapsed=elapsed, val_batches=val_batches)
    try:
        epoch = _run_epochs(run, loader, dataset, per_epoch, num_epochs, pairs)
        run.save(epoch)
    finally:
        run.close()
    _save(config, ctx, step, result)
    return result


def _log(
    stats: StepStats,
    losses: tuple[float, float | None, float | None],
    done: int,
    total: int,
    epoch: int,
    alpha: float,
    data_wait: float,
) -> None:
    loss, conf, scale = losses
    logger.info(
        "step %d/%d epoch %d: loss %.4f (conf %.4f, scale %.4f) grad_norm %.3f lr %.3g alpha %.3f"
        " (waited %.3f s for data)",
        done,
        total,
        epoch,
        loss,
        conf if conf is not None else 0.0,
        scale if scale is not None else 0.0,
        stats.grad_norm if stats.grad_norm is not None else float("nan"),
        stats.lr,
        alpha,
        data_wait,
    )
