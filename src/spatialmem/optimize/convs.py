"""The DPT heads' convolution weights laid out channels-last, where that is measured to pay (CPU).

The heads turn tokens into feature maps with a transpose, so their activations are
channels-last, and oneDNN computes the convolutions channels-last. Given a contiguous (NCHW)
weight it may reorder the weight on every call; a weight laid out channels-last once avoids
that. Whether it pays depends on the CPU and the torch build: on a 2-core AVX2 EPYC with torch
2.14 the published model's head took the same time either way (327 against 325 ms, best of 16
alternating calls at 224x224), while the copy of its laid-out weights costs 71 MiB per head. So
it is timed, per head, as the step runs it, and ``"auto"`` uses it only when converting a model
in place, where relaying costs no memory (a sharing copy keeps the model's layout: on an
AVX-512 Xeon the head measured level inside the step although timed alone it looked faster).
"""

import functools
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from spatialmem.optimize import disk_cache

__all__ = ["CONV_MARGIN", "choose_conv_layout", "convs_to_relay", "heads_run_every_step", "relay"]

CONV_MARGIN = 0.10
"""Laying a head's convolution weights out channels-last must make the head this much faster
to be chosen: below that the copy's memory buys nothing measurable."""

_decisions: dict[tuple, tuple[bool, dict[str, float]]] = {}


def heads_run_every_step(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, head)`` of the DPT heads the model runs on every call.

    A [`Spann3R`][spatialmem.models.Spann3R] stream predicts each frame with ``head1``; its
    ``head2`` runs only for the last frame of a sequence (or a preview), so its layout is not
    worth a copy. Every other model runs all of its DPT heads.
    """
    from spatialmem.heads import DPTHead
    from spatialmem.models import Spann3R

    rare = {id(model.dust3r.head2)} if isinstance(model, Spann3R) else set()
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, DPTHead) and id(module) not in rare
    ]


def convs_to_relay(head_name: str, head: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """``(name in the model, conv)`` of the head's convolutions not laid out channels-last yet."""
    return [
        (f"{head_name}.{name}" if head_name else name, conv)
        for name, conv in head.named_modules()
        if type(conv) is nn.Conv2d
        and not conv.weight.is_contiguous(memory_format=torch.channels_last)
    ]


def choose_conv_layout(
    head: nn.Module, *, tokens: int, budget_s: float = 1.0
) -> tuple[bool, dict[str, float]]:
    """Time one DPT head with its convolution weights as they are and laid out channels-last.

    The head runs on random tokens of a square-ish patch grid of ``tokens`` patches (batch 1),
    the two layouts taking turns, in alternating order, for 3 rounds after a warm-up call each;
    channels-last must be faster by ``CONV_MARGIN`` both by the best call of each and by the
    median of the rounds' time ratios. Either alone misled on a noisy 2-core VM (the same
    head's best of 3 calls ranged from 322 to 413 ms between trials; the median ratio once
    said 5 % faster where the best calls were level). The laid-out weights are
    temporary copies passed with ``torch.func.functional_call``: the head is not modified. The
    decision is cached per process for (head shape, dtype, device, grid, threads).

    Args:
        head: a [`DPTHead`][spatialmem.heads.DPTHead].
        tokens: patches per frame of the intended input.
        budget_s: about how many seconds to spend (at least one call per layout and round).

    Returns:
        ``(pays, seconds)``: whether channels-last is at least ``CONV_MARGIN`` faster, and
        the best seconds per call of ``"plain"`` and ``"channels_last"``.

    Raises:
        TypeError: ``head`` is not a [`DPTHead`][spatialmem.heads.DPTHead].
        ValueError: ``tokens`` is not a positive int.
    """
    from spatialmem.heads import DPTHead

    if not isinstance(head, DPTHead):
        raise TypeError(f"`head` must be a DPTHead, got {type(head).__name__}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"`tokens` must be a positive int, got {tokens!r}")
    rows = math.isqrt(tokens)
    grid = (rows, max(1, tokens // rows))
    ref = next(head.parameters())
    key = (
        ref.dtype,
        ref.device,
        head.patch_size,
        head.dim_tokens,
        head.hooks,
        head.layer_dims,
        head.feature_dim,
        head.last_dim,
        head.out_channels,
        grid,
        torch.get_num_threads(),
    )
    if key in _decisions:
        pays, seconds = _decisions[key]
        return pays, dict(seconds)
    stored = disk_cache.load_decision("conv", repr(key))
    if stored is not None and isinstance(stored[0], bool):
        _decisions[key] = stored
        return stored[0], dict(stored[1])
    inputs = [ref.new_zeros(1, 1, 1)] * (max(head.hooks) + 1)
    for hook, width in zip(head.hooks, head.dim_tokens, strict=True):
        inputs[hook] = torch.randn(1, grid[0] * grid[1], width, dtype=ref.dtype, device=ref.device)
    image_hw = (grid[0] * head.patch_size, grid[1] * head.patch_size)
    laid_out = {
        f"{name}.weight": conv.weight.detach().contiguous(memory_format=torch.channels_last)
        for name, conv in convs_to_relay("", head)
    }
    if not laid_out:
        return False, {}
    plain = functools.partial(head, inputs, image_hw)
    laid = functools.partial(functional_call, head, laid_out, (inputs, image_hw), strict=False)
    with torch.inference_mode():
        seconds, ratio = _time_pairs(plain, laid, rounds=3, budget_s=budget_s)
    best_ratio = seconds["channels_last"] / seconds["plain"]
    pays = max(ratio, best_ratio) < 1 - CONV_MARGIN
    _decisions[key] = (pays, seconds)
    disk_cache.store("conv", repr(key), [pays, seconds])
    return pays, dict(seconds)


def relay(model: nn.Module, names: list[str], *, inplace: bool) -> None:
    """Lay out the weights of the named convolutions channels-last (values unchanged).

    In place the parameter's data is replaced; in a sharing copy the convolution gets a new
    parameter, so the original model's is left alone.
    """
    for name in names:
        conv = model.get_submodule(name)
        weight: Tensor = conv.weight
        laid_out = weight.detach().contiguous(memory_format=torch.channels_last)
        if inplace:
            weight.data = laid_out
        else:
            conv.weight = nn.Parameter(laid_out, requires_grad=weight.requires_grad)


def _time_pairs(
    plain: Callable[[], object], laid: Callable[[], object], *, rounds: int, budget_s: float
) -> tuple[dict[str, float], float]:
    """Best seconds per call of each, and the median over rounds of laid / plain."""
    first = {}
    for name, fn in (("plain", plain), ("channels_last", laid)):
        t0 = time.perf_counter()
        fn()
        first[name] = max(time.perf_counter() - t0, 1e-7)
    calls = int(min(50, max(1, budget_s / rounds / 2 / max(first.values()))))
    best = {"plain": math.inf, "channels_last": math.inf}
    ratios = []
    for r in range(rounds):
        pair = [("plain", plain), ("channels_last", laid)]
        took = {}
        for name, fn in pair if r % 2 == 0 else pair[::-1]:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            took[name] = (time.perf_counter() - t0) / calls
            best[name] = min(best[name], took[name])
        ratios.append(took["channels_last"] / took["plain"])
    return best, statistics.median(ratios)
