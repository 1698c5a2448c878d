"""The resumable state of a training run (``last.pt`` in the run directory).

[`capture_train_state`][spatialmem.training.state.capture_train_state] gathers everything a run
needs to continue exactly where it stopped: the model, optimiser, learning-rate schedule and
gradient-scaler states, the step counters, the run's settings and the random-number state of
every rank (CPU, and CUDA when training on a GPU). It is written with
[`save_train_state`][spatialmem.training.state.save_train_state] (atomically: a crash while
writing leaves the previous file) and read back with
[`load_train_state`][spatialmem.training.state.load_train_state];
[`restore_train_state`][spatialmem.training.state.restore_train_state] puts it back into a
freshly built [`TrainStep`][spatialmem.training.step.TrainStep].
"""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from spatialmem.training.distributed import DistributedContext
from spatialmem.training.step import TrainStep, unwrap_model

__all__ = [
    "STATE_FORMAT",
    "capture_train_state",
    "config_differences",
    "load_train_state",
    "restore_train_state",
    "save_train_state",
]

STATE_FORMAT = "spatialmem.train_state/1"
"""Value of the ``format`` entry of a training state."""


def _rng_state(ctx: DistributedContext) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return state


def _gather(obj: Any, ctx: DistributedContext) -> list[Any]:
    """``obj`` of every rank, in rank order (a collective when distributed)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def capture_train_state(
    step: TrainStep,
    ctx: DistributedContext,
    *,
    epoch: int,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The state of a run after an optimiser step (a collective: every rank must call it).

    Call it between accumulation cycles (right after an optimiser step), when no gradient is
    pending.

    Args:
        step: the run's [`TrainStep`][spatialmem.training.step.TrainStep] (model, optimiser,
            scheduler, scaler and step counters).
        ctx: the distributed context (the random state of every rank is gathered).
        epoch: the epoch of the last batch consumed.
        config: the run's settings as a plain dictionary (``dataclasses.asdict``).
        extra: further plain entries to store (e.g. elapsed time).

    Returns:
        A dictionary of tensors and plain Python values (loadable with
        ``torch.load(weights_only=True)``): ``format``, ``model``, ``optimizer``,
        ``scheduler`` (or ``None``), ``scaler`` (or ``None``), ``step`` (optimiser steps),
        ``micro_step``, ``epoch``, ``world_size``, ``config``, ``rng`` (one entry per rank with
        ``"cpu"`` and possibly ``"cuda"`` states) and the ``extra`` entries.
    """
    rng = _gather(_rng_state(ctx), ctx)
    return {
        "format": STATE_FORMAT,
        "model": unwrap_model(step.model).state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": None if step.scheduler is None else step.scheduler.state_dict(),
        "scaler": None if step.scaler is None else step.scaler.state_dict(),
        "step": step.optimizer_steps,
        "micro_step": step.micro_steps,
        "epoch": int(epoch),
        "world_size": ctx.world_size,
        "config": dict(config),
        "rng": rng,
        **(extra or {}),
    }


def save_train_state(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a training state atomically (a temporary file renamed over ``path``).

    Args:
        state: from [`capture_train_state`][spatialmem.training.state.capture_train_state].
        path: the file to write (parent folders are created).

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    return path


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training state written by
    [`save_train_state`][spatialmem.training.state.save_train_state] (tensors on the CPU).

    Args:
        path: the ``last.pt`` file.

    Returns:
        The state dictionary.

    Raises:
        ValueError: the file is not a training state.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{path} is not a spatialmem training state (expected format {STATE_FORMAT!r}); "
            "a model-only checkpoint cannot resume a run"
        )
    return state


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()
) -> list[str]:
    """The settings that differ between a saved run and the current one.

    Args:
        saved: the ``config`` entry of a training state.
        current: the current settings as a dictionary.
        ignore: names allowed to differ.

    Returns:
        One ``"name: saved X, now Y"`` line per differing setting (a setting missing on one side
        counts as different), sorted by name.
    """
    skip = set(ignore)
    missing = object()
    out = []
    for name in sorted((set(saved) | set(current)) - skip):
        old, new = saved.get(name, missing), current.get(name, missing)
        if old != new:
            old_text = "(absent)" if old is missing else repr(old)
            new_text = "(absent)" if new is missing else repr(new)
            out.append(f"{name}: saved {old_text}, now {new_text}")
    return out


def restore_train_state(step: TrainStep, state: Mapping[str, Any], ctx: DistributedContext) -> None:
    """Put a saved state back into a freshly built step (same model, optimiser and schedule).

    Restores the model's parameters and buffers, the optimiser, scheduler and scaler states,
    the step counters and this rank's random state.

    Args:
        step: the [`TrainStep`][spatialmem.training.step.TrainStep] to fill in.
        state: from [`load_train_state`][spatialmem.training.state.load_train_state].
        ctx: the distributed context (selects this rank's random state).

    Raises:
        ValueError: the state was written by a different number of processes, or holds a
            scheduler or scaler state the step has no place for.
    """
    if state["world_size"] != ctx.world_size:
        raise ValueError(
            f"the run was saved by {state['world_size']} process(es) and is resumed on "
            f"{ctx.world_size}: the data order and the per-process batches would change"
        )
    unwrap_model(step.model).load_state_dict(state["model"])
    step.optimizer.load_state_dict(state["optimizer"])
    if (state["scheduler"] is None) != (step.scheduler is None):
        raise ValueError("the saved state and the step disagree on having an LR scheduler")
    if step.scheduler is not None:
        step.scheduler.load_state_dict(state["scheduler"])
    if step.scaler is not None and state["scaler"] is not None:
        step.scaler.load_state_dict(state["scaler"])
    step.optimizer_steps = int(state["step"])
    step.micro_steps = int(state["micro_step"])
    rng = state["rng"][ctx.rank]
    torch.set_rng_state(rng["cpu"])
    if ctx.device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], ctx.device)
