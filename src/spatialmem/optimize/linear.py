"""Linear layers laid out once for inference, and the measurement that picks one per shape.

Three implementations of ``y = act(x @ W.T + b)`` are compared on the CPU:

* ``"aten"``: `torch.nn.functional.linear` (``aten::addmm``, MKL or OpenBLAS), the eager path;
* ``"onednn"``: ``torch.ops.mkldnn._linear_pointwise`` on the plain weight (oneDNN lays it out
  per call; no extra memory);
* ``"onednn_packed"``: the same op on a weight reordered once by
  ``torch.ops.mkldnn._reorder_linear_weight`` into oneDNN's blocked layout (one more copy of the
  weight, unless the model is optimised in place).

The oneDNN ops can fuse the exact (erf) GELU of an MLP's first layer.
"""

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from spatialmem._typing import Float
from spatialmem.optimize import disk_cache

__all__ = ["InferenceLinear", "LinearImpl", "choose_linear_impl", "onednn_linear_available"]

logger = logging.getLogger(__name__)

LinearImpl = Literal["aten", "onednn", "onednn_packed"]
Activation = Literal["none", "gelu"]

_MARGIN = 0.03
"""The packed oneDNN layer must be this much faster than oneDNN on the plain weight (which
needs no extra memory) to be chosen over it."""

_ONEDNN_MARGIN = 0.15
"""A oneDNN implementation must be this much faster than eager ``F.linear`` to be chosen.

Timed alone, even on cold weights, a oneDNN layer looks faster than it runs inside a model: on
a 2-core AVX2 CPU, the published Spann3R's step profiled with every linear on packed
oneDNN ran each shape 5-50 % slower than ``aten::addmm`` in the same step (e.g. 1024 -> 4096 with
GELU 19.7 against 12.9 ms), while the isolated timing had them level. Where oneDNN really pays
(AVX-512 CPUs on which MKL takes a slow path: 2.2-2.3x) it clears this margin easily."""


@functools.cache
def onednn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's linear ops exist in this torch build and run ``dtype`` on this CPU.

    Tries both ops once on a tiny problem (the result is cached per dtype).
    """
    try:
        ops = torch.ops.mkldnn
        w = torch.randn(8, 4).to(dtype)
        packed = ops._reorder_linear_weight(w, 2)
        x = torch.randn(2, 4).to(dtype)
        with torch.inference_mode():
            y = ops._linear_pointwise(x, packed, None, "none", [], "")
            ops._linear_pointwise(x, w, None, "gelu", [], "none")
        return bool(torch.allclose(y.float(), (x @ w.T).float(), atol=0.1, rtol=0.1))
    except (AttributeError, RuntimeError, NotImplementedError) as err:
        logger.debug("oneDNN linear unavailable for %s: %s", dtype, err)
        return False


class InferenceLinear(nn.Module):
    """An inference-only `nn.Linear` (optionally followed by the exact GELU)
    computed by a chosen implementation in a chosen dtype.

    Built from a trained ``nn.Linear`` by
    [`optimize_for_inference`][spatialmem.optimize.optimize_for_inference]; not meant for
    training (no autograd through the oneDNN ops).

    ``weight`` and ``bias`` are the source layer's parameters, shared, not copied (``weight`` is
    ``None`` when the layer was converted in place and only the packed copy is kept; the state
    dict then unpacks it, so ``state_dict()`` keys and values are those of the source layer).

    Args:
        linear: the layer to convert.
        impl: ``"aten"``, ``"onednn"`` or ``"onednn_packed"`` (see the module docs).
        activation: ``"gelu"`` fuses the exact GELU that follows the layer; ``"none"``.
        dtype: compute dtype (``torch.float32`` or ``torch.bfloat16``); inputs are cast to it
            and the output has it.
        tokens: rows per call the packed layout is tuned for (a hint; any row count works).
        keep_weight: keep a reference to the source weight (``False``: only the packed copy,
            for in-place conversion).

    Raises:
        ValueError: an unknown ``impl``/``activation``, or ``keep_weight=False`` without a
            packed layout to keep.
    """

    def __init__(
        self,
        linear: nn.Linear,
        impl: LinearImpl = "onednn_packed",
        *,
        activation: Activation = "none",
        dtype: torch.dtype = torch.float32,
        tokens: int | None = None,
        keep_weight: bool = True,
    ) -> None:
        super().__init__()
        if impl not in ("aten", "onednn", "onednn_packed"):
            raise ValueError(f"`impl` must be 'aten', 'onednn' or 'onednn_packed', got {impl!r}")
        if activation not in ("none", "gelu"):
            raise ValueError(f"`activation` must be 'none' or 'gelu', got {activation!r}")
        if not keep_weight and impl != "onednn_packed" and dtype == linear.weight.dtype:
            raise ValueError(
                "`keep_weight=False` needs impl='onednn_packed' or another dtype: the other "
                "implementations read the source weight itself"
            )
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.impl, self.activation, self.compute_dtype = impl, activation, dtype
        self.tokens = tokens
        self._source_dtype = linear.weight.dtype
        self._w: Tensor = self._layout(linear.weight.detach())
        if keep_weight:
            self.weight = linear.weight
        else:
            self.register_parameter("weight", None)
        self.bias = linear.bias
        self._b = None if linear.bias is None else linear.bias.detach().to(dtype)
        self._gelu_algo = "none"  # exact erf GELU, nn.GELU()'s default

    def _layout(self, weight: Tensor) -> Tensor:
        """The weight as the implementation reads it (cast, and reordered for oneDNN)."""
        with torch.no_grad():
            weight = weight.to(self.compute_dtype)  # the weight itself when no cast is needed
            if self.impl == "onednn_packed":
                return torch.ops.mkldnn._reorder_linear_weight(weight, self.tokens)
            return weight

    def forward(self, x: Float[Tensor, "*batch Cin"]) -> Float[Tensor, "*batch Cout"]:
        """``act(x @ W.T + b)`` in ``compute_dtype``."""
        if x.dtype != self.compute_dtype:
            x = x.to(self.compute_dtype)
        if self.impl == "aten":
            y = F.linear(x, self._w, self._b)
            return F.gelu(y) if self.activation == "gelu" else y
        algo = self._gelu_algo if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(x, self._w, self._b, self.activation, [], algo)

    def dense_weight(self) -> Tensor:
        """The weight as a plain ``[out_features, in_features]`` tensor in its source layout
        (unpacked from the oneDNN layout when only the packed copy is kept)."""
        if self.weight is not None:
            return self.weight
        return self._w.to_dense() if self._w.is_mkldnn else self._w

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.weight is None:  # converted in place: unpack, in the source's dtype
            destination[prefix + "weight"] = self.dense_weight().to(self._source_dtype)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        key = prefix + "weight"
        loaded = None
        if self.weight is None:
            if key in state_dict:
                loaded = state_dict[key]
                state_dict = {k: v for k, v in state_dict.items() if k != key}
            elif strict:
                missing_keys.append(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        source = loaded if loaded is not None else self.weight
        if source is not None and tuple(source.shape) == (self.out_features, self.in_features):
            self._w = self._layout(source.detach())
        if self.bias is not None:
            self._b = self.bias.detach().to(self.compute_dtype)

    def extra_repr(self) -> str:
        act = f", activation={self.activation}" if self.activation != "none" else ""
        dtype = str(self.compute_dtype).removeprefix("torch.")
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, impl={self.impl}, dtype={dtype}{act}"
        )


# ---------------------------------------------------------------------- measurement
_decisions: dict[tuple, tuple[str, dict[str, float]]] = {}

_COLD_BYTES = 64 << 20
"""Weights streamed between two calls of one layer in the timing when Linux does not report the
CPU's caches: more than a last-level cache. In a model every layer's weight is read once per
step with the whole model's weights read in between, so it arrives from memory; timing one
weight over and over (cache-hot) favours the implementations that re-lay the weight on every
call."""

_MAX_COPIES = 16


@functools.cache
def _cold_cache_bytes() -> int:
    """1.5x the largest CPU cache Linux reports (at least 32 MiB), for cold-weight timing."""
    largest = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            largest = max(largest, int(digits) * unit)
    return max(3 * largest // 2, 32 << 20) if largest else _COLD_BYTES


def _same_shape(a: nn.Linear, b: nn.Linear) -> bool:
    return (
        a.weight.shape == b.weight.shape
        and a.weight.dtype == b.weight.dtype
        and a.weight.device == b.weight.device
        and (a.bias is None) == (b.bias is None)
    )


def _weight_copies(linear: nn.Linear, peers: Sequence[nn.Linear] = ()) -> list[nn.Linear]:
    """The layer, then its peers (other layers of its shape), then clones of it as needed:
    together larger than the CPU's caches (at most 16 layers). Peers cost no memory; clones
    do, so a model's own layers of the shape are used first."""
    weight_bytes = linear.weight.numel() * linear.weight.element_size()
    n = int(min(_MAX_COPIES, max(1, math.ceil(_cold_cache_bytes() / max(weight_bytes, 1)))))
    copies = [linear]
    copies += [p for p in peers if p is not linear and _same_shape(p, linear)][: n - 1]
    for _ in range(n - len(copies)):
        clone = skip_init(
            nn.Linear,
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            dtype=linear.weight.dtype,
        )
        with torch.no_grad():
            clone.weight.copy_(linear.weight)
            if linear.bias is not None:
                clone.bias.copy_(linear.bias)
        copies.append(clone)
    return copies


def _time_min(
    fns: dict[str, Callable[[], object]], rounds: int, budget_s: float
) -> dict[str, float]:
    """Best seconds per call of each function: one warm-up call each, then ``rounds`` rounds in
    which the functions take turns (so a drift of the machine's speed hits all of them)."""
    per_call = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        per_call[name] = max(time.perf_counter() - t0, 1e-7)
    # calls per round: about budget_s / rounds / len(fns) seconds, 1..50 calls
    share = budget_s / max(1, rounds) / max(1, len(fns))
    calls = {n: int(min(50, max(1, share / t))) for n, t in per_call.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            n = calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    return best


def _call_each(layers: list[InferenceLinear], x: Tensor) -> object:
    for layer in layers:
        y = layer(x)
    return y


def choose_linear_impl(
    linear: nn.Linear,
    *,
    tokens: int,
    dtype: torch.dtype = torch.float32,
    activation: Activation = "none",
    candidates: tuple[LinearImpl, ...] = ("aten", "onednn", "onednn_packed"),
    autocast: bool = False,
    budget_s: float = 0.05,
    peers: Sequence[nn.Linear] = (),
) -> tuple[LinearImpl, dict[str, float]]:
    """Time the implementations of one linear shape on this CPU and pick the fastest.

    The decision is cached per process for (shape, bias, activation, dtype, tokens, threads).
    ``"aten"`` runs as the eager model does: `F.linear` (under bf16 autocast when ``autocast``,
    so that its per-call weight cast is counted), followed by `F.gelu` when ``activation`` is
    ``"gelu"``. Every candidate is timed on cold weights, as in a model, where each layer's weight
    comes from memory: the calls cycle through the layer, its ``peers`` and, if these are too
    few, clones of the layer, up to 16 layers that together exceed the CPU's caches (the clones
    are freed on return). A oneDNN implementation
    replaces ``aten`` only when at least 15 % faster (alone it looks faster than it runs inside
    a model), and the packed layout replaces the plain one when at least 3 % faster.

    Args:
        linear: the layer (its weight and bias are used for the measurement).
        tokens: rows per call to time (``batch * tokens per frame`` of the intended input).
        dtype: compute dtype of the oneDNN candidates.
        activation: ``"gelu"`` to time the layer with the GELU that follows it.
        candidates: the implementations to consider (oneDNN ones that fail to run are dropped).
        autocast: time ``"aten"`` under ``torch.autocast("cpu", dtype)``.
        budget_s: about how many seconds to spend on this shape.
        peers: other layers of the same shape (e.g. the same layer of the model's other blocks),
            timed in place of clones: a model's 24 blocks time a shape on cold weights without
            a byte of copies (clones of the published model's layers briefly took 250 MiB on a
            CPU with a 480 MiB cache). Layers of another shape or dtype are ignored.

    Returns:
        ``(impl, seconds per call of every candidate that ran)``.
    """
    key = (
        linear.in_features,
        linear.out_features,
        linear.bias is not None,
        activation,
        dtype,
        tokens,
        torch.get_num_threads(),
        candidates,
        autocast,
    )
    if key in _decisions:
        impl, times = _decisions[key]
        return impl, dict(times)  # type: ignore[return-value]
    stored = disk_cache.load_decision("linear", repr(key))
    if stored is not None and stored[0] in candidates:
        _decisions[key] = stored
        return stored[0], dict(stored[1])
    x = torch.randn(tokens, linear.in_features, dtype=linear.weight.dtype)
    copies = _weight_copies(linear, peers)
    fns: dict[str, Callable[[], object]] = {}
    with torch.inference_mode():
        for impl in candidates:
            if impl == "aten":
                weights = [(c.weight.detach(), c.bias) for c in copies]

                def eager(weights: list[tuple[Tensor, Tensor | None]] = weights) -> object:
                    for w, b in weights:
                        if autocast:
                            with torch.autocast("cpu", dtype=dtype):
                                y = F.linear(x, w, b)
                        else:
                            y = F.linear(x, w, b)
                        y = F.gelu(y) if activation == "gelu" else y
                    return y

                fns[impl] = eager
                continue
            if not onednn_linear_available(dtype):
                continue
            try:
                layers = [
                    InferenceLinear(c, impl, activation=activation, dtype=dtype, tokens=tokens)
                    for c in copies
                ]
                layers[0](x)
            except (RuntimeError, NotImplementedError) as err:
                logger.debug("%s unavailable for %s: %s", impl, tuple(linear.weight.shape), err)
                continue
            fns[impl] = functools.partial(_call_each, layers, x)
        times = _time_min(fns, rounds=3, budget_s=budget_s)
        times = {name: t / len(copies) for name, t in times.items()}  # per call
    choice: str = "aten" if "aten" in times else next(iter(times))
    for impl in ("onednn", "onednn_packed"):
        if impl not in times:
            continue
        margin = _ONEDNN_MARGIN if choice == "aten" else _MARGIN
        if times[impl] < times[choice] * (1 - margin):
            choice = impl
    _decisions[key] = (choice, times)
    disk_cache.store("linear", repr(key), [choice, times])
    return choice, dict(times)  # type: ignore[return-value]
