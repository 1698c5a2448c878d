"""Optimiser and learning-rate schedule for training Spann3R.

The paper (Sec. 4, implementation details) trains with AdamW, learning rate ``5e-5`` and
``betas = (0.9, 0.95)`` for 120 epochs at an effective batch size of 16 (2 per GPU on 8 GPUs).
It does not state the weight decay nor the schedule; the defaults here (weight decay 0.05 on
matrices only, linear warm-up then half-cosine decay) are the usual choices for fine-tuning ViT
models and may be changed freely.
"""

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "param_groups", "warmup_cosine"]

PAPER_LR = 5e-5
"""Learning rate of the paper."""
PAPER_BETAS = (0.9, 0.95)
"""AdamW betas of the paper."""


def param_groups(model: nn.Module, weight_decay: int | float = 0.05) -> list[dict[str, object]]:
    """Split the trainable parameters into a decayed and a non-decayed group.

    Biases, normalisation weights, tokens and other 1-D parameters get no weight decay;
    matrices and convolution kernels get ``weight_decay``. Frozen parameters
    (``requires_grad=False``) are left out.

    Args:
        model: the model (a DDP wrapper works too).
        weight_decay: decay of the matrix group.

    Returns:
        Two parameter groups for a ``torch.optim`` optimiser.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or "token" in name.rsplit(".", 1)[-1]:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    lr: int | float = PAPER_LR,
    *,
    weight_decay: int | float = 0.05,
    betas: tuple[float, float] = PAPER_BETAS,
) -> torch.optim.AdamW:
    """AdamW over [`param_groups`][spatialmem.training.optim.param_groups] with the paper's learning
    rate and betas by default.

    Args:
        model: the model to train.
        lr: base learning rate (paper: ``5e-5`` at an effective batch size of 16).
        weight_decay: decay of weight matrices (not given in the paper).
        betas: AdamW betas (paper: ``(0.9, 0.95)``).

    Returns:
        The optimiser.
    """
    if not lr > 0:
        raise ValueError(f"`lr` must be positive, got {lr!r}")
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=float(lr), betas=betas)


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    min_lr_ratio: int | float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0, then half-cosine decay to ``min_lr_ratio`` times the base rate.

    Step it once per optimiser step. The factor at step ``s`` is ``(s + 1) / warmup_steps``
    during warm-up and ``m + (1 - m) (1 + cos(pi p)) / 2`` afterwards, with ``p`` the fraction
    of the post-warm-up steps done.

    Args:
        optimizer: the optimiser.
        total_steps: optimiser steps of the whole run, ``>= 1``.
        warmup_steps: steps of linear warm-up, ``0 <= warmup_steps <= total_steps``.
        min_lr_ratio: final learning rate as a fraction of the base rate, in [0, 1].

    Returns:
        A ``LambdaLR`` scheduler.
    """
    if total_steps < 1:
        raise ValueError(f"`total_steps` must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"`warmup_steps` must lie in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"`min_lr_ratio` must lie in [0, 1], got {min_lr_ratio!r}")
    decay_steps = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
