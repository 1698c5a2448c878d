"""Per-block execution wrappers: autocast, ``torch.compile`` and static CUDA-graph replay.

A wrapper replaces a block's ``forward`` on the instance (the block keeps its class, its
attributes and its parameters), so the model's own code calls it as before.
"""

import dataclasses
import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from spatialmem._checks import internal_calls, outside_stacklevel
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = ["GraphedCall", "autocast_forward", "compile_forward", "map_tensors", "wrap_forward"]

logger = logging.getLogger(__name__)


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor in it (tensors, lists, tuples, dicts and
    [`TensorDataclass`][spatialmem.tensor_dataclass.TensorDataclass] containers)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [map_tensors(v, fn) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    apply = getattr(obj, "apply", None)
    if apply is not None and hasattr(obj, "__dataclass_fields__"):
        return apply(fn)
    return obj


def wrap_forward(module: nn.Module, wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]):
    """Replace ``module.forward`` (on the instance) by ``wrapper(current forward)``."""
    inner = module.forward
    wrapped = wrapper(inner)
    functools.update_wrapper(wrapped, inner)
    module.forward = wrapped  # type: ignore[method-assign]
    return module


def autocast_forward(
    device_type: str, dtype: torch.dtype, out_dtype: torch.dtype
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper that runs a forward under ``torch.autocast(device_type, dtype)`` and casts its
    floating outputs back to ``out_dtype`` (what the rest of the model, e.g. the memory, keeps)."""

    def cast(t: Tensor) -> Tensor:
        return t.to(out_dtype) if t.is_floating_point() and t.dtype != out_dtype else t

    def wrapper(inner: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type, dtype=dtype):
                out = inner(*args, **kwargs)
            return map_tensors(out, cast)

        return forward

    return wrapper


def compile_forward(
    name: str, device_type: str, mode: str | None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper that runs a forward through ``torch.compile`` (inductor, static shapes).

    On CPU ``torch._inductor.config.freezing`` is switched on (globally: inductor reads it from its
    config) so that the weights are folded into the compiled code; the compiled code only runs
    with autograd off (``torch.inference_mode`` or ``torch.no_grad``). If compiling fails, the
    compile is retried once with inductor's pattern matcher off, then the block falls back to
    eager with a warning.
    """
    import torch._inductor.config as inductor_config

    if device_type == "cpu":
        inductor_config.freezing = True

    def wrapper(inner: Callable[..., Any]) -> Callable[..., Any]:
        state: dict[str, Any] = {"fn": None, "tries": 0}

        def compiled() -> Callable[..., Any]:
            if state["fn"] is None:
                state["fn"] = torch.compile(inner, backend="inductor", mode=mode, dynamic=False)
            return state["fn"]

        def forward(*args: Any, **kwargs: Any) -> Any:
            if torch.is_grad_enabled() or state["tries"] >= 2:
                return inner(*args, **kwargs)
            try:
                return compiled()(*args, **kwargs)
            except Exception as err:  # a compiler failure, or the input's own error
                out = inner(*args, **kwargs)  # raises again when the input is at fault
                state["tries"] += 1
                state["fn"] = None
                if state["tries"] == 1 and inductor_config.pattern_matcher:
                    logger.warning(
                        "compiling %s failed (%s: %s); retrying with inductor's pattern matcher "
                        "off",
                        name,
                        type(err).__name__,
                        err,
                    )
                    inductor_config.pattern_matcher = False
                else:
                    state["tries"] = 2
                    warnings.warn(
                        f"torch.compile of {name} failed ({type(err).__name__}: {err}); it runs "
                        "eagerly",
                        RuntimeWarning,
                        stacklevel=outside_stacklevel(),
                    )
                return out

        return forward

    return wrapper


# ---------------------------------------------------------------------- static graphs
class Capture(Protocol):
    """How [`GraphedCall`][spatialmem.optimize.wrappers.GraphedCall] records and replays a call
    (a CUDA graph; the tests plug in a CPU stand-in)."""

    def capture(self, fn: Callable[[], Any]) -> Any:
        """Record ``fn()`` and return its (static) output."""
        ...

    def replay(self) -> None:
        """Run the recorded work again, writing the same output tensors."""
        ...


class CudaGraphCapture:
    """A `torch.cuda.CUDAGraph` recorded after ``warmup`` calls on a side stream."""

    def __init__(self, pool: Any = None, warmup: int = 2) -> None:
        self.pool, self.warmup = pool, warmup
        self.graph: torch.cuda.CUDAGraph | None = None

    def capture(self, fn: Callable[[], Any]) -> Any:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):  # lazy initialisations (cuBLAS handles, RoPE tables)
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=self.pool):
            out = fn()
        return out

    def replay(self) -> None:
        assert self.graph is not None
        self.graph.replay()


_MISSING = object()


def _flatten(obj: Any, leaves: list[Tensor]) -> Any:
    """The call signature of ``obj`` (shapes, dtypes, devices and non-tensor values); its tensors
    are appended to ``leaves``."""
    if isinstance(obj, Tensor):
        leaves.append(obj)
        return ("T", tuple(obj.shape), obj.dtype, obj.device.type, obj.device.index)
    if isinstance(obj, list | tuple):
        return (type(obj).__name__, tuple(_flatten(v, leaves) for v in obj))
    if isinstance(obj, dict):
        return ("dict", tuple((k, _flatten(v, leaves)) for k, v in sorted(obj.items())))
    if isinstance(obj, TensorDataclass):  # e.g. a memory state: its tensors are inputs too
        fields = dataclasses.fields(obj)
        return (type(obj), tuple((f.name, _flatten(getattr(obj, f.name), leaves)) for f in fields))
    return ("V", obj if isinstance(obj, int | float | str | bool | type(None)) else repr(obj))


def _rebuild(obj: Any, it: Iterator[Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return next(it)
    if isinstance(obj, list):
        return [_rebuild(v, it) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_rebuild(v, it) for v in obj)
    if isinstance(obj, dict):
        return {k: _rebuild(v, it) for k, v in sorted(obj.items())}
    if isinstance(obj, TensorDataclass):
        fields = dataclasses.fields(obj)
        return obj.replace(**{f.name: _rebuild(getattr(obj, f.name), it) for f in fields})
    return obj


class GraphedCall:
    """Replays a recorded graph of a fixed-shape call; records one per input signature.

    The first call with a new signature (shapes, dtypes, devices, non-tensor arguments, autograd
    mode, the train/eval mode of the module whose method ``fn`` is; tensors inside
    [`TensorDataclass`][spatialmem.tensor_dataclass.TensorDataclass] arguments count as inputs)
    copies the inputs into static buffers and records the call there (its checks off, as
    inside the model); later calls copy the inputs in, replay, and return clones of the static
    outputs (the caller may keep them across calls). Calls with autograd on, or whose recording
    failed, run eagerly.

    Args:
        fn: the call to record (a block's forward).
        name: for log messages.
        make_capture: makes the recorder of one signature (default: a CUDA graph in ``pool``).
        pool: memory pool shared by the graphs (``torch.cuda.graph_pool_handle()``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str = "block",
        make_capture: Callable[[], Capture] | None = None,
        pool: Any = None,
    ) -> None:
        self.fn, self.name = fn, name
        self.make_capture = make_capture or (lambda: CudaGraphCapture(pool))
        self.entries: dict[Any, Any] = {}
        # The module whose method ``fn`` is, also beneath other wrappers (autocast), which
        # wrap_forward links through ``__wrapped__``.
        bound = inspect.unwrap(fn, stop=lambda f: hasattr(f, "__self__"))
        owner = getattr(bound, "__self__", None)
        self.owner = owner if isinstance(owner, nn.Module) else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return self.fn(*args, **kwargs)
        leaves: list[Tensor] = []
        # A module's train/eval mode changes what its forward records (dropout, the memory's
        # eval-only working-memory bookkeeping), so it is part of the signature.
        mode = None if self.owner is None else self.owner.training
        key = (_flatten((args, kwargs), leaves), torch.is_inference_mode_enabled(), mode)
        entry = self.entries.get(key, _MISSING)
        if entry is _MISSING:
            entry = self.entries[key] = self._record(args, kwargs, leaves)
        if entry is None:
            return self.fn(*args, **kwargs)
        capture, static_leaves, static_out = entry
        for buffer, x in zip(static_leaves, leaves, strict=True):
            buffer.copy_(x)
        capture.replay()
        return map_tensors(static_out, torch.clone)

    def _record(self, args: Any, kwargs: Any, leaves: list[Tensor]) -> Any:
        static_leaves = [x.clone() for x in leaves]
        static_args, static_kwargs = _rebuild((args, kwargs), iter(static_leaves))
        capture = self.make_capture()
        try:
            with internal_calls():
                out = capture.capture(lambda: self.fn(*static_args, **static_kwargs))
        except Exception as err:
            logger.warning(
                "recording %s as a graph failed (%s: %s); it runs eagerly for inputs of this shape",
                self.name,
                type(err).__name__,
                err,
            )
            return None
        logger.debug("recorded %s for %d input tensors", self.name, len(leaves))
        return capture, static_leaves, out


def graph_forward(
    name: str, pool: Any = None, make_capture: Callable[[], Capture] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper that replays a block's forward as a static graph per input signature
    ([`GraphedCall`][spatialmem.optimize.wrappers.GraphedCall])."""

    def wrapper(inner: Callable[..., Any]) -> Callable[..., Any]:
        call = GraphedCall(inner, name, make_capture, pool)

        def forward(*args: Any, **kwargs: Any) -> Any:
            return call(*args, **kwargs)

        forward.graphed_call = call  # type: ignore[attr-defined]
        return forward

    return wrapper
