"""One optimisation step of a sequence model (Spann3R), as the official training loop does it.

Per call of [`train_step`][spatialmem.training.step.train_step] (one micro-batch):

1. ``model.train()``; forward the frames (under ``torch.autocast`` on CUDA when an AMP dtype is
   given) and take the per-step pair predictions ``out.steps``;
2. evaluate the criterion in float32 outside autocast (for
   [`Spann3RLoss`][spatialmem.losses.Spann3RLoss] its ``loss`` already is the confidence loss plus
   the scale ("factor") term, which the official ``training.py`` adds to the criterion's first
   return value);
3. divide by ``accum_iter`` and backpropagate (through a ``GradScaler`` for float16);
4. on the last micro-batch of an accumulation cycle (``update=True``): unscale, clip the
   gradient norm (official: 1.0), step the optimiser unless the gradients are not finite, zero
   the gradients.

A ``DistributedDataParallel`` model works unchanged (its gradients are averaged over the ranks
during the backward pass; the accumulating micro-batches run under ``no_sync()``).
"""

import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from spatialmem.data.scenes import SceneBatch
from spatialmem.losses.base import Criterion, LossOutput
from spatialmem.losses.spann3r import SequenceLossOutput
from spatialmem.types import SequenceTarget, StepPredictions

__all__ = ["AmpMode", "StepStats", "TrainStep", "amp_settings", "train_step", "unwrap_model"]

logger = logging.getLogger(__name__)

AmpMode = Literal["auto", "bf16", "fp16", "off"]
"""Mixed precision: ``"auto"`` (bfloat16 on CUDA devices that support it, else float16 with a
``GradScaler``; off on the CPU), ``"bf16"``, ``"fp16"`` or ``"off"``."""


@dataclass(frozen=True)
class StepStats:
    """What one [`train_step`][spatialmem.training.step.train_step] call did, as Python floats (read
    once per step)."""

    loss: float
    """The criterion's loss on this micro-batch (before the division by ``accum_iter``)."""
    conf_loss: float | None
    """Confidence-regression part (``None`` if the criterion does not report one)."""
    scale_loss: float | None
    """Scale ("factor") part (``None`` if the criterion does not report one)."""
    grad_norm: float | None
    """Total gradient norm before clipping (after unscaling); ``None`` when this call only
    accumulated gradients."""
    stepped: bool
    """Whether the optimiser stepped (false while accumulating, and when the gradients were not
    finite: the update is then skipped, as ``GradScaler`` does for float16)."""
    lr: float
    """Learning rate of the first parameter group when the step ran."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The wrapped module of a ``DistributedDataParallel`` (or ``torch.compile``) model, else
    the model itself.

    Args:
        model: a module, possibly wrapped.

    Returns:
        The innermost module (what to save in a checkpoint).
    """
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def amp_settings(
    mode: AmpMode, device: torch.device | str
) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """Autocast dtype and gradient scaler for a mixed-precision mode on a device.

    Args:
        mode: see [`AmpMode`][spatialmem.training.step.AmpMode]. Mixed precision is used on CUDA
            only; on other devices every mode but ``"off"`` falls back to float32
            (``"bf16"``/``"fp16"`` log a warning).
        device: the training device.

    Returns:
        ``(amp_dtype, scaler)``: ``(None, None)`` for float32, ``(torch.bfloat16, None)``, or
        ``(torch.float16, GradScaler)``.
    """
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"`mode` must be 'auto', 'bf16', 'fp16' or 'off', got {mode!r}")
    device = torch.device(device)
    if mode == "off":
        return None, None
    if device.type != "cuda":
        if mode != "auto":
            logger.warning(
                "AMP %s requested on %s: mixed precision is CUDA-only here", mode, device
            )
        return None, None
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _batch_parts(batch: Any) -> tuple[Tensor, SequenceTarget]:
    if isinstance(batch, SceneBatch):
        return batch.frames, batch.target
    if isinstance(batch, tuple | list) and len(batch) == 2:
        frames, target = batch
        if isinstance(frames, Tensor) and isinstance(target, SequenceTarget):
            return frames, target
    raise TypeError(
        "`batch` must be a SceneBatch or a (frames [B, T, 3, H, W] tensor, SequenceTarget) pair, "
        f"got {type(batch).__name__}"
    )


def _to_device(
    frames: Tensor, target: SequenceTarget, device: torch.device
) -> tuple[Tensor, SequenceTarget]:
    if frames.device == device and target.pts3d.device == device:
        return frames, target
    nb = device.type == "cuda"
    return frames.to(device, non_blocking=nb), target.to(device, non_blocking=nb)


def _float32(steps: StepPredictions) -> StepPredictions:
    """The predictions with every floating tensor in float32 (the loss runs outside autocast)."""
    return steps.apply(lambda t: t.float() if t.is_floating_point() else t)


def _params_with_grad(params: Iterable[Tensor]) -> list[Tensor]:
    return [p for p in params if p.grad is not None]


def _check_step_options(
    accum_iter: int, amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None
) -> None:
    if accum_iter < 1:
        raise ValueError(f"`accum_iter` must be >= 1, got {accum_iter}")
    if amp_dtype == torch.float16 and scaler is None:
        raise ValueError("`amp_dtype=torch.float16` needs a GradScaler (`scaler=`)")


def _step_predictions(out: Any) -> StepPredictions:
    steps = getattr(out, "steps", None)
    if not isinstance(steps, StepPredictions):
        raise ValueError(
            "the model's training forward returned no step predictions (`out.steps` is "
            f"{type(steps).__name__}); train a Spann3R-like model in train() mode"
        )
    return steps


def _forward_backward(
    model: nn.Module,
    frames: Tensor,
    target: SequenceTarget,
    criterion: Criterion,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler | None,
    accum_iter: int,
    update: bool,
    amp_dtype: torch.dtype | None,
) -> LossOutput:
    """Training forward (under autocast with an AMP dtype on CUDA), the criterion in float32 and
    the backward pass of ``loss / accum_iter``; without ``update`` a DDP model skips the
    gradient all-reduce (``no_sync()``)."""
    model.train()
    use_amp = amp_dtype is not None and device.type == "cuda"
    autocast = (
        torch.autocast(device_type="cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
    )
    sync = (
        model.no_sync()
        if isinstance(model, DistributedDataParallel) and not update
        else contextlib.nullcontext()
    )
    with sync:
        with autocast:
            out = model(frames, return_memory=False)
        result: LossOutput = criterion(_float32(_step_predictions(out)), target)
        scaled = result.loss / accum_iter
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
    return result


def _loss_parts(result: LossOutput) -> list[Tensor]:
    """The detached loss, followed by its confidence and scale parts when the criterion reports
    them."""
    parts = [result.loss.detach()]
    if isinstance(result, SequenceLossOutput):
        parts += [result.conf_loss.detach(), result.scale_loss.detach()]
    return parts


def _to_host(parts: list[Tensor]) -> list[float]:
    """The values of 0-dim tensors as floats: the one host sync of a step."""
    return torch.stack([p.float() for p in parts]).tolist()


def _loss_values(values: list[float]) -> tuple[float, float | None, float | None]:
    """``(loss, conf_loss, scale_loss)`` from the values of ``_loss_parts``."""
    if len(values) == 3:
        return values[0], values[1], values[2]
    return values[0], None, None


def _unscale_and_clip(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    max_grad_norm: int | float | None,
    loss: Tensor,
) -> Tensor:
    """Unscale the gradients (float16) and clip their total norm; returns the norm before
    clipping as a float32 tensor on the loss's device."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = _params_with_grad(model.parameters())
    limit = math.inf if max_grad_norm is None else float(max_grad_norm)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, limit) if params else loss.new_zeros(())
    return grad_norm.detach().to(loss.device, torch.float32)


def _optimizer_step(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, grad_norm: float
) -> bool:
    """Step the optimiser unless the gradients are not finite; returns whether it stepped."""
    if scaler is not None:
        before = scaler.get_scale()
        scaler.step(optimizer)  # skips the update itself when the gradients are not finite
        scaler.update()
        return scaler.get_scale() >= before
    if math.isfinite(grad_norm):
        optimizer.step()
        return True
    logger.warning("non-finite gradient norm %s: optimiser step skipped", grad_norm)
    return False


def train_step(
    model: nn.Module,
    batch: SceneBatch | tuple[Tensor, SequenceTarget],
    criterion: Criterion,
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler | None = None,
    accum_iter: int = 1,
    update: bool = True,
    max_grad_norm: int | float | None = 1.0,
    amp_dtype: torch.dtype | None = None,
) -> StepStats:
    """Forward, loss, backward and (with ``update``) one optimiser step on one micro-batch.

    Host synchronisation: the returned [`StepStats`][spatialmem.training.step.StepStats] are Python
    floats, read with one device-to-host copy per call. That is fine once per optimisation step (the
    official loop does the same with ``loss.item()``); do not call this in an inner loop that must
    not sync.

    Args:
        model: a sequence model whose training forward returns ``.steps``
            ([`Spann3R`][spatialmem.models.Spann3R]), possibly wrapped in
            ``DistributedDataParallel``. Put into ``train()`` mode by this call.
        batch: a [`SceneBatch`][spatialmem.data.scenes.SceneBatch] or a
            ``(frames [B, T, 3, H, W], SequenceTarget)`` pair; moved to the model's device if
            needed.
        criterion: e.g. [`Spann3RLoss`][spatialmem.losses.Spann3RLoss]; called as
            ``criterion(out.steps, target)``. For the distributed gradient to equal the
            full-batch gradient the loss must be a mean of per-sample losses (the library's
            default ``batch_coupled=False``) and every rank must get the same batch size.
        optimizer: the optimiser (e.g. from
            [`build_optimizer`][spatialmem.training.optim.build_optimizer]).
        scaler: a ``torch.amp.GradScaler`` for float16 autocast (required with
            ``amp_dtype=torch.float16``).
        accum_iter: number of micro-batches per optimiser step; the loss is divided by it.
        update: whether this micro-batch ends an accumulation cycle (clip, step, zero grads).
            With a DDP model, ``update=False`` runs under ``no_sync()`` (no gradient
            all-reduce). [`TrainStep`][spatialmem.training.step.TrainStep] keeps this bookkeeping
            for you.
        max_grad_norm: clip the total gradient norm to this (official 1.0); ``None`` measures
            the norm without clipping.
        amp_dtype: autocast dtype on CUDA (``torch.bfloat16`` or ``torch.float16``), ``None``
            for float32. Ignored on other devices (see
            [`amp_settings`][spatialmem.training.step.amp_settings]).

    Returns:
        [`StepStats`][spatialmem.training.step.StepStats] of this micro-batch.

    Raises:
        ValueError: ``accum_iter < 1``, float16 without a scaler, or a model that returns no
            step predictions.
        TypeError: a malformed ``batch``.
    """
    _check_step_options(accum_iter, amp_dtype, scaler)
    frames, target = _batch_parts(batch)
    device = next(model.parameters()).device
    frames, target = _to_device(frames, target, device)
    result = _forward_backward(
        model,
        frames,
        target,
        criterion,
        device=device,
        scaler=scaler,
        accum_iter=accum_iter,
        update=update,
        amp_dtype=amp_dtype,
    )
    parts = _loss_parts(result)
    lr = float(optimizer.param_groups[0]["lr"])
    if not update:
        loss, conf, scale = _loss_values(_to_host(parts))
        return StepStats(loss, conf, scale, None, False, lr)

    grad_norm = _unscale_and_clip(model, optimizer, scaler, max_grad_norm, result.loss)
    *values, norm = _to_host([*parts, grad_norm])
    loss, conf, scale = _loss_values(values)
    stepped = _optimizer_step(optimizer, scaler, norm)
    optimizer.zero_grad(set_to_none=True)
    return StepStats(loss, conf, scale, norm, stepped, lr)


class TrainStep:
    """[`train_step`][spatialmem.training.step.train_step] with gradient accumulation and an
    optional LR schedule bundled.

    Call it once per micro-batch; every ``accum_iter``-th call clips, steps the optimiser and
    then the scheduler (once per optimiser step).

    Args:
        model: the model (possibly DDP-wrapped); see
            [`train_step`][spatialmem.training.step.train_step].
        criterion: the loss, e.g. [`Spann3RLoss`][spatialmem.losses.Spann3RLoss].
        optimizer: the optimiser.
        scheduler: an LR scheduler stepped after every optimiser step, or ``None``.
        accum_iter: micro-batches per optimiser step.
        max_grad_norm: gradient-norm clip (official 1.0); ``None`` to only measure it.
        amp: mixed-precision mode (see [`AmpMode`][spatialmem.training.step.AmpMode]), resolved for
            the model's device with [`amp_settings`][spatialmem.training.step.amp_settings].

    Example:
        ```python
        step = TrainStep(model, Spann3RLoss(alpha=0.4), build_optimizer(model))
        for batch in loader:
            stats = step(batch)   # StepStats(loss=..., grad_norm=..., ...)
        ```
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        accum_iter: int = 1,
        max_grad_norm: int | float | None = 1.0,
        amp: AmpMode = "auto",
    ) -> None:
        if accum_iter < 1:
            raise ValueError(f"`accum_iter` must be >= 1, got {accum_iter}")
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.accum_iter = accum_iter
        self.max_grad_norm = max_grad_norm
        self.amp_dtype, self.scaler = amp_settings(amp, next(model.parameters()).device)
        self.micro_steps = 0
        """Micro-batches seen so far."""
        self.optimizer_steps = 0
        """Optimiser updates attempted so far (including skipped non-finite ones)."""

    def __call__(self, batch: SceneBatch | tuple[Tensor, SequenceTarget]) -> StepStats:
        """Run one micro-batch; see [`train_step`][spatialmem.training.step.train_step]."""
        update = (self.micro_steps + 1) % self.accum_iter == 0
        stats = train_step(
            self.model,
            batch,
            self.criterion,
            self.optimizer,
            scaler=self.scaler,
            accum_iter=self.accum_iter,
            update=update,
            max_grad_norm=self.max_grad_norm,
            amp_dtype=self.amp_dtype,
        )
        self.micro_steps += 1
        if update:
            self.optimizer_steps += 1
            if self.scheduler is not None:
                self.scheduler.step()
        return stats
