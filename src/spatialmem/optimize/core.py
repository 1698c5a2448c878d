"""[`optimize_for_inference`][spatialmem.optimize.optimize_for_inference]: one call from a trained
model to its fastest inference form on this machine."""

import copy
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from spatialmem.optimize import convs
from spatialmem.optimize.cpu import CpuFeatures, cpu_features, warn_bf16_emulated
from spatialmem.optimize.linear import (
    InferenceLinear,
    LinearImpl,
    choose_linear_impl,
    onednn_linear_available,
)
from spatialmem.optimize.wrappers import (
    GraphedCall,
    autocast_forward,
    compile_forward,
    graph_forward,
    wrap_forward,
)

__all__ = [
    "BACKENDS",
    "InferencePlan",
    "LayerChoice",
    "clear_decisions",
    "optimize_for_inference",
    "would_change",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=nn.Module)

Backend = Literal["auto", "eager", "onednn", "inductor", "cuda_graph"]
BACKENDS: tuple[str, ...] = ("auto", "eager", "onednn", "inductor", "cuda_graph")
"""The accepted ``backend`` names of
[`optimize_for_inference`][spatialmem.optimize.optimize_for_inference]."""

DEFAULT_TOKENS = 256
"""Rows per linear call timed when no ``tokens`` hint is given (about one 224x224 frame)."""


@dataclass(frozen=True)
class LayerChoice:
    """What was decided for one linear layer."""

    name: str
    """The layer's name in the model (``dust3r.encoder.blocks.0.mlp.fc1``)."""
    shape: tuple[int, int]
    """``(in_features, out_features)``."""
    impl: str
    """``"aten"`` (left as ``nn.Linear``), ``"onednn"``, ``"onednn_packed"`` or ``"int8"``."""
    activation: str = "none"
    """``"gelu"`` when the following exact GELU was fused into the layer."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Measured seconds per call of each candidate (empty when not measured)."""


@dataclass
class InferencePlan:
    """What [`optimize_for_inference`][spatialmem.optimize.optimize_for_inference] did, attached
    to the returned model as ``model.inference_plan``."""

    dtype: torch.dtype
    """Compute dtype of the blocks (``torch.qint8``: int8 dynamic quantisation of the linears)."""
    backend: str
    """The backend asked for."""
    device: str
    """Device type of the model."""
    inplace: bool
    """Whether the model itself was converted (``False``: a copy sharing the untouched tensors)."""
    cpu: CpuFeatures | None
    """The CPU's features (``None`` on CUDA)."""
    tokens: int
    """Rows per linear call the measurement used."""
    layers: list[LayerChoice] = field(default_factory=list)
    """One entry per linear layer considered."""
    blocks: list[str] = field(default_factory=list)
    """Blocks whose forward was wrapped (autocast / compile / graph)."""
    convs: list[str] = field(default_factory=list)
    """Convolutions of the DPT heads whose weight was laid out channels-last once (CPU): their
    inputs are channels-last, so oneDNN may reorder a contiguous weight on every call. Chosen
    per head where timing shows it pays (see ``conv_seconds``)."""
    conv_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    """Measured seconds per call of each DPT head run at every step, with its convolution weights
    as they are (``"plain"``) and laid out channels-last (``"channels_last"``)."""
    cast: list[str] = field(default_factory=list)
    """Linear layers of the autocast blocks whose weight and bias were cast to ``dtype`` once
    (bf16/fp16): autocast would cast them again on every call, one extra kernel each."""
    wrappers: list[str] = field(default_factory=list)
    """The wrappers applied to every block, innermost first (``"autocast"``, ``"inductor"``,
    ``"cuda_graph"``)."""
    seconds: float = 0.0
    """Time spent optimising (measurement included)."""
    _sources: list[tuple[str, Tensor, int, int]] = field(default_factory=list, repr=False)

    @property
    def exact(self) -> bool:
        """Whether the optimised model computes in float32 (outputs equal eager within 1e-5)."""
        return self.dtype == torch.float32

    @property
    def changed(self) -> bool:
        """Whether anything differs from the eager model (a replaced layer, a relaid convolution
        or a wrapped block)."""
        return bool(self.wrappers) or bool(self.convs) or any(c.impl != "aten" for c in self.layers)

    def counts(self) -> dict[str, int]:
        """Number of linear layers per implementation (``{"aten": 3, "onednn_packed": 97}``)."""
        out: dict[str, int] = {}
        for c in self.layers:
            key = c.impl + ("+gelu" if c.activation == "gelu" else "")
            out[key] = out.get(key, 0) + 1
        return out

    def is_current(self, model: nn.Module) -> bool:
        """Whether the optimised copy still matches ``model``, the model it was made from: the
        weights it converted (every weight, for the compiled and graph backends) are the same
        tensors, not changed in place since (e.g. by ``load_state_dict``) and not moved
        (``model.to(...)``)."""
        for name, tensor, version, ptr in self._sources:
            try:
                current = model.get_parameter(name)
            except AttributeError:
                return False
            if current is not tensor or current._version != version or current.data_ptr() != ptr:
                return False
        return True

    def summary(self) -> str:
        """One line: dtype, backend and the layer counts."""
        dtype = str(self.dtype).removeprefix("torch.")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts().items())) or "no layer"
        wrap = f", blocks {'+'.join(self.wrappers)}" if self.wrappers else ""
        convs = f", {len(self.convs)} convs channels-last" if self.convs else ""
        cast = f", {len(self.cast)} cast to {dtype} once" if self.cast else ""
        return (
            f"{dtype}, backend {self.backend}: linears {counts}{cast}{convs}{wrap} "
            f"({self.seconds:.1f} s)"
        )


def _shared_copy(model: M) -> M:
    """A copy of the module tree that shares every parameter and buffer with ``model``."""
    memo: dict[int, object] = {}
    for t in (*model.parameters(), *model.buffers()):
        memo[id(t)] = t
    return copy.deepcopy(model, memo)


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The fixed-shape compute blocks of the library's models, or the model itself."""
    from spatialmem.models import DUSt3R, Spann3R

    if isinstance(model, Spann3R):
        names = ["dust3r.encoder", "dust3r.decoder", "dust3r.head1", "dust3r.head2"]
        names += ["memory_encoder", "key_head", "query_head"]
    elif isinstance(model, DUSt3R):
        names = ["encoder", "decoder", "head1", "head2"]
    else:
        return [("", model)]
    return [(n, model.get_submodule(n)) for n in names]


def _is_head(name: str) -> bool:
    return name.split(".")[-1] in ("head1", "head2")


def _linears(
    model: nn.Module, skip_heads: bool
) -> Iterator[tuple[str, nn.Module, str, nn.Linear, nn.Module | None]]:
    """``(name, parent, attribute, layer, gelu)`` of every plain ``nn.Linear``; ``gelu`` is the
    parent's exact GELU that follows the layer directly (a timm ``Mlp``'s ``fc1``), or ``None``."""
    for parent_name, parent in list(model.named_modules()):
        if skip_heads and any(_is_head(p) for p in _prefixes(parent_name)):
            continue
        for attr, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            name = f"{parent_name}.{attr}" if parent_name else attr
            gelu = None
            act = getattr(parent, "act", None)
            if (
                attr == "fc1"
                and isinstance(act, nn.GELU)
                and act.approximate == "none"
                and isinstance(getattr(parent, "norm", nn.Identity()), nn.Identity)
                and _dropout_free(getattr(parent, "drop1", None))
            ):
                gelu = act
            yield name, parent, attr, child, gelu


def _prefixes(name: str) -> list[str]:
    parts = name.split(".") if name else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _dropout_free(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, (nn.Identity, nn.Dropout))


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    if ref is None:
        raise ValueError("`model` has no floating-point parameters to optimise")
    return ref.device, ref.dtype


def optimize_for_inference(
    model: M,
    *,
    dtype: torch.dtype | None = None,
    backend: Backend = "auto",
    inplace: bool = False,
    tokens: int | None = None,
) -> M:
    """The model in its fastest inference form on this machine, in eval mode.

    **Copy or in place.** By default the model is not modified: the result is a new module tree
    of the same classes that *shares* every parameter and buffer it does not convert with
    ``model`` (no second copy of the weights); converted layers hold their new layout (a
    reordered or cast copy of their weight, which costs memory as long as ``model`` keeps the
    original). With ``inplace=True`` ``model`` itself is converted and returned, and a packed
    layer keeps only its packed weight (no extra memory; ``state_dict()`` unpacks it, so
    checkpoints keep their keys and values).

    **What it does**, by ``backend``:

    * ``"auto"`` (default): on CPU every ``nn.Linear`` (and ``Linear + GELU`` of the MLPs) is
      timed in its shape, with ``tokens`` rows, as eager ``F.linear``, oneDNN on the plain weight
      and (in bf16) oneDNN on a weight reordered once, and the fastest is kept (timed on cold
      weights as in the model; oneDNN must beat ``F.linear`` by 15 %, the packed layout the
      plain one by 3 %; see [`choose_linear_impl`][spatialmem.optimize.choose_linear_impl]).
      float32 weights are not packed: in a copy the packed weight would be a second copy
      beside the model's (on an AVX-512 Xeon, +0.9-1.4 GB of peak memory for the published
      model, for a 4 % faster step), and in place the packing still raised the peak by 1.1 GB
      there for a 2 % faster step. In place,
      each DPT head run at every step (a Spann3R's ``head1``: its ``head2`` predicts only a
      stream's last frame) is timed with its convolution weights as they are and laid out
      channels-last, the layout of its activations, and relaid only when at least 10 %
      faster (``InferencePlan.convs``, ``InferencePlan.conv_seconds``; see
      [`choose_conv_layout`][spatialmem.optimize.choose_conv_layout]); a copy keeps the
      model's layout, as a laid-out copy would double those weights. On CUDA no layer
      is replaced (cuBLAS is the fast path); a [`Spann3R`][spatialmem.models.Spann3R]'s
      blocks and memory run as with ``"cuda_graph"`` (measured on an H200: 1.5x over eager in
      float32, outputs identical), other models eagerly; ``dtype`` applies.
    * ``"eager"``: nothing is replaced; only ``dtype`` applies.
    * ``"onednn"``: every linear on oneDNN with a reordered weight, without measuring, and the
      convolution weights of the DPT heads run at every step laid out channels-last (CPU).
    * ``"inductor"``: the blocks (encoder, decoders, heads, memory encoder, key/query heads) are
      compiled with ``torch.compile`` (static shapes; on CPU with
      ``torch._inductor.config.freezing = True``, set globally; on CUDA with
      ``mode="reduce-overhead"``, which replays CUDA graphs). The first call of each shape
      compiles (minutes on a small CPU); the spatial memory stays eager.
    * ``"cuda_graph"`` (CUDA): each block is recorded once per input shape as a CUDA graph and
      replayed (inputs copied into static buffers, outputs cloned), and so are the spatial
      memory's ``read`` and ``update`` (its state has a fixed shape and no host syncs on CUDA).
      A subclass of ``SpatialMemory`` stays eager between the blocks: its policies may decide
      on the host, which a recorded graph would freeze.

    **Precision** (``dtype``):

    * ``None`` / ``torch.float32``: exact; outputs equal eager within 1e-5.
    * ``torch.bfloat16``: the blocks run under bf16 autocast and hand float32 tensors to the
      memory; in a copy (not ``inplace``) the weights of their plain linears are cast to bf16
      once (the same numbers as autocast's cast on every call, without its kernel; listed in
      ``InferencePlan.cast``; in place the model keeps its float32 weights and checkpoints);
      the heads stay in float32 (as published). On a CPU without bf16 instructions a
      warning says that this is about 5x slower than float32 (it still runs). Tolerance: points
      within 5e-2 relative to their scale (see the performance guide).
    * ``torch.float16``: CUDA only, as bf16.
    * ``torch.qint8``: CPU only, an *approximate* tier: the linear layers are quantised to int8
      with dynamic activation scales (``torch.ao.quantization.quantize_dynamic``); its accuracy
      cost is measured by ``spatialmem bench --int8``.

    Inference only: the result runs under ``torch.inference_mode()`` / ``torch.no_grad()`` (the
    oneDNN ops have no backward). Move the model to its device first; optimise again after
    moving it or loading other weights into it
    ([`InferencePlan.is_current`][spatialmem.optimize.InferencePlan.is_current] tells).

    Example:
        ```python
        import torch
        import spatialmem as sm

        model = sm.create_model("spann3r_tiny").eval()
        fast = sm.optimize_for_inference(model)        # model itself is unchanged
        frames = torch.rand(1, 3, 3, 32, 32) * 2 - 1
        with torch.inference_mode():
            ref, out = model(frames), fast(frames)
        torch.testing.assert_close(out.pts3d, ref.pts3d, atol=1e-5, rtol=1e-5)
        print(fast.inference_plan.summary())
        ```

    Args:
        model: a [`Spann3R`][spatialmem.models.Spann3R], a [`DUSt3R`][spatialmem.models.DUSt3R]
            or any module with float32 parameters (its linears are converted; the whole module
            is the one block).
        dtype: compute dtype: ``None`` (float32), ``torch.float32``, ``torch.bfloat16``,
            ``torch.float16`` (CUDA) or ``torch.qint8`` (CPU, approximate).
        backend: ``"auto"``, ``"eager"``, ``"onednn"``, ``"inductor"`` or ``"cuda_graph"``.
        inplace: convert ``model`` itself instead of a sharing copy.
        tokens: rows per linear call to time (``batch x tokens per frame``, e.g. 196 for one
            224x224 frame of a patch-16 model); default 256.

    Returns:
        The optimised model (``model`` itself with ``inplace=True``), in eval mode, with an
        [`InferencePlan`][spatialmem.optimize.InferencePlan] as ``inference_plan``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``dtype`` not a ``torch.dtype``.
        ValueError: an unknown ``backend``; a ``dtype`` or ``backend`` this device cannot run
            (``float16``/``cuda_graph`` on CPU, ``qint8``/``onednn`` on CUDA); a model on the
            ``meta`` device, not in float32, or already optimised; ``tokens`` not positive.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"`dtype` must be a torch.dtype or None, got {dtype!r}")
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1
    ):
        raise ValueError(f"`tokens` must be a positive int or None, got {tokens!r}")
    if getattr(model, "inference_plan", None) is not None:
        raise ValueError(
            "`model` is already optimised (it has an inference_plan); optimise the original model"
        )
    device, param_dtype = _model_device_dtype(model)
    if device.type == "meta":
        raise ValueError("`model` is on the meta device; load or materialise its weights first")
    if param_dtype != torch.float32:
        raise ValueError(
            f"`model` has {param_dtype} parameters; optimize_for_inference expects a float32 "
            "model (choose the compute precision with `dtype`)"
        )
    dtype = torch.float32 if dtype is None else dtype
    on_cuda = device.type == "cuda"
    allowed = (
        (torch.float32, torch.bfloat16, torch.float16)
        if on_cuda
        else (torch.float32, torch.bfloat16, torch.qint8)
    )
    if dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise ValueError(f"`dtype` {dtype} is not supported on {device.type}; use one of {names}")
    if backend == "cuda_graph" and not on_cuda:
        raise ValueError("`backend` 'cuda_graph' needs a model on a CUDA device")
    if backend == "onednn" and on_cuda:
        raise ValueError("`backend` 'onednn' is a CPU backend; the model is on CUDA")
    if dtype == torch.qint8 and backend not in ("auto", "eager"):
        raise ValueError(f"`dtype` qint8 runs eagerly; `backend` {backend!r} does not apply")

    start = time.perf_counter()
    cpu = None if on_cuda else cpu_features()
    if dtype == torch.bfloat16 and cpu is not None:
        warn_bf16_emulated(cpu)
    plan = _decide(model, dtype, backend, device, inplace, cpu, tokens or DEFAULT_TOKENS)
    blocks_backend = _blocks_backend(model, backend, device)
    target = model if inplace else _shared_copy(model)
    with torch.no_grad():
        if dtype == torch.qint8:
            _quantize_int8(target, plan)
        else:
            _convert_linears(target, plan)
        convs.relay(target, plan.convs, inplace=inplace)
        if dtype in (torch.bfloat16, torch.float16) and not inplace:
            # in place, the model's own float32 weights (its checkpoints) stay as they are
            _cast_block_linears(target, plan, dtype)
        _wrap_blocks(target, plan, dtype, blocks_backend, device)
    target.eval()
    plan.seconds = time.perf_counter() - start
    if not inplace:  # the copy goes stale when these change in `model`
        converted = {f"{c.name}.weight" for c in plan.layers if c.impl != "aten"}
        converted |= {f"{name}.weight" for name in plan.convs}
        converted |= {f"{name}.{p}" for name in plan.cast for p in ("weight", "bias")}
        every = blocks_backend in _RECORDED_BACKENDS  # they bake in every weight's storage
        plan._sources = [
            (name, p, p._version, p.data_ptr())
            for name, p in model.named_parameters()
            if name in converted or every
        ]
    object.__setattr__(target, "inference_plan", plan)
    logger.info("optimize_for_inference: %s", plan.summary())
    return target


def _decide(
    model: nn.Module,
    dtype: torch.dtype,
    backend: str,
    device: torch.device,
    inplace: bool,
    cpu: CpuFeatures | None,
    tokens: int,
) -> InferencePlan:
    """Choose an implementation for every linear layer and the layout of the DPT heads'
    convolutions (measuring on CPU); change nothing."""
    plan = InferencePlan(dtype, backend, device.type, inplace, cpu, tokens)
    if _relays_convs(device, backend) and (inplace or backend != "auto"):
        # A copy's laid-out weights would sit beside the model's own, and inside the step the
        # laid-out head measured level (see the performance page): "auto" relays in place only.
        _decide_convs(model, plan, measure=backend == "auto")
    if dtype == torch.qint8:  # quantised as a whole (see _quantize_int8)
        return plan
    bf16 = dtype == torch.bfloat16
    measure = device.type == "cpu" and backend in ("auto", "onednn") and dtype != torch.qint8
    if measure and not onednn_linear_available(dtype):
        logger.info("oneDNN linear ops do not run %s here: the linears stay eager", dtype)
        measure = False
    candidates = _linear_candidates(dtype)
    linears = list(_linears(model, skip_heads=bf16))
    by_shape: dict[tuple[int, ...], list[nn.Linear]] = {}
    for _, _, _, layer, _ in linears:
        by_shape.setdefault(tuple(layer.weight.shape), []).append(layer)
    for name, _, _, layer, gelu in linears:
        activation = "gelu" if gelu is not None else "none"
        impl: LinearImpl = "aten"
        seconds: dict[str, float] = {}
        if measure and backend == "onednn":
            impl = "onednn_packed"
        elif measure:
            impl, seconds = choose_linear_impl(
                layer,
                tokens=tokens,
                dtype=dtype,
                activation=activation,
                autocast=bf16,
                candidates=candidates,
                peers=by_shape[tuple(layer.weight.shape)],
            )
        plan.layers.append(LayerChoice(name, _shape(layer), impl, activation, seconds))
    return plan


def _linear_candidates(dtype: torch.dtype) -> tuple[LinearImpl, ...]:
    """What ``"auto"`` may pick for a linear. float32 never packs. In a sharing copy the packed
    weight would sit beside the model's own (on a 2-core Xeon with AVX-512 the default stream
    of the published model then peaked at 4.4-4.8 GB against eager's 3.5 GB, for a step 4 %
    faster); oneDNN on the plain weight shares it. In place the packed weight replaces the
    original, yet the same stream peaked at 4.6 GB against eager's 3.5 GB (the packing's
    allocations are not returned to the system), for a step 2 % faster. (bf16 copies cast
    their weights anyway: see ``InferencePlan.cast``.)"""
    if dtype == torch.float32:
        return ("aten", "onednn")
    return ("aten", "onednn", "onednn_packed")


def would_change(
    model: nn.Module, *, dtype: torch.dtype | None = None, backend: Backend = "auto", tokens: int
) -> bool:
    """Whether [`optimize_for_inference`][spatialmem.optimize.optimize_for_inference] with these
    arguments would change anything (decided, and measured, without copying ``model``)."""
    device, _ = _model_device_dtype(model)
    dtype = torch.float32 if dtype is None else dtype
    if dtype != torch.float32 or _blocks_backend(model, backend, device) in _RECORDED_BACKENDS:
        return True
    cpu = None if device.type == "cuda" else cpu_features()
    return _decide(model, dtype, backend, device, False, cpu, tokens).changed


def _convert_linears(model: nn.Module, plan: InferencePlan) -> None:
    choices = {c.name: c for c in plan.layers if c.impl != "aten"}
    if not choices:
        return
    for name, parent, attr, layer, gelu in list(_linears(model, skip_heads=False)):
        choice = choices.get(name)
        if choice is None:
            continue
        new = InferenceLinear(
            layer,
            choice.impl,  # type: ignore[arg-type]
            activation=choice.activation,  # type: ignore[arg-type]
            dtype=plan.dtype,
            tokens=plan.tokens,
            keep_weight=not (plan.inplace and choice.impl == "onednn_packed"),
        )
        setattr(parent, attr, new)
        if gelu is not None and choice.activation == "gelu":
            parent.act = nn.Identity()


_RECORDED_BACKENDS = ("inductor", "cuda_graph")
"""Backends that compile or record the blocks (every weight's storage is baked in)."""


def _blocks_backend(model: nn.Module, backend: str, device: torch.device) -> str:
    """How the blocks run: the backend asked for, except that ``"auto"`` records a Spann3R's
    blocks (and memory) as CUDA graphs on CUDA. Measured on an H200 at 224x224, batch 1: 1.5x
    over eager in float32 with identical outputs, 3.3x with bf16 (see the performance guide)."""
    from spatialmem.models import Spann3R

    if backend == "auto" and device.type == "cuda" and isinstance(model, Spann3R):
        return "cuda_graph"
    return backend


def _relays_convs(device: torch.device, backend: str) -> bool:
    """Whether this device and backend consider laying the DPT convolutions out channels-last."""
    return device.type == "cpu" and backend in ("auto", "onednn")


def _decide_convs(model: nn.Module, plan: InferencePlan, *, measure: bool) -> None:
    """List in ``plan.convs`` the convolutions of every DPT head run at each step whose
    channels-last layout is measured to pay (``measure``), or of all of them."""
    for head_name, head in convs.heads_run_every_step(model):
        names = [name for name, _ in convs.convs_to_relay(head_name, head)]
        if not names:
            continue
        pays = True
        if measure:
            pays, plan.conv_seconds[head_name] = convs.choose_conv_layout(head, tokens=plan.tokens)
        if pays:
            plan.convs.extend(names)


def _cast_block_linears(model: nn.Module, plan: InferencePlan, dtype: torch.dtype) -> None:
    """Cast the weight and bias of every plain ``nn.Linear`` in the blocks that will run under
    autocast (all but the heads) to ``dtype`` once.

    Autocast casts a float32 weight on every call, the same rounding each time; a weight that
    already has the compute dtype passes through, so the outputs are bit-identical and a step
    runs one cast kernel (a read of the float32 weight) fewer per weight and bias. The layers
    get new parameters: a copy leaves ``model``'s original ones alone. Only the library's
    models are cast: another module may use a weight outside a linear, where autocast would
    have computed with the float32 value."""
    blocks = _blocks(model)
    if blocks == [("", model)]:
        return
    for block_name, block in blocks:
        if _is_head(block_name):
            continue
        for name, layer in block.named_modules():
            if type(layer) is not nn.Linear:
                continue
            for attr in ("weight", "bias"):
                param = getattr(layer, attr)
                if param is not None and param.dtype != dtype:
                    cast = param.detach().to(dtype)
                    setattr(layer, attr, nn.Parameter(cast, requires_grad=param.requires_grad))
            plan.cast.append(".".join(p for p in (block_name, name) if p))


def _shape(layer: nn.Module) -> tuple[int, int]:
    return int(layer.in_features), int(layer.out_features)  # type: ignore[arg-type]


def _quantize_int8(model: nn.Module, plan: InferencePlan) -> None:
    from torch.ao.quantization import quantize_dynamic

    # The heads stay in float32: they read their parameters' dtype, and their linear is small.
    names = [name for name, _, _, _, _ in _linears(model, skip_heads=True)]
    shapes = {name: _shape(model.get_submodule(name)) for name in names}
    if not names:
        return
    with warnings.catch_warnings():
        # torch.ao's eager quantisation is deprecated in favour of torchao; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*", category=UserWarning)
        quantize_dynamic(model, set(names), dtype=torch.qint8, inplace=True)
    plan.layers.extend(LayerChoice(n, shapes[n], "int8") for n in names)


def _wrap_blocks(
    model: nn.Module, plan: InferencePlan, dtype: torch.dtype, backend: str, device: torch.device
) -> None:
    wrappers = []
    if dtype in (torch.bfloat16, torch.float16):
        wrappers.append("autocast")
    if backend == "inductor":
        wrappers.append("inductor")
    if backend == "cuda_graph":
        wrappers.append("cuda_graph")
    if not wrappers:
        return
    # Every graph gets its own memory pool: the blocks' graphs are replayed in varying orders
    # (the first step encodes two frames, head 2 runs at the end), which a shared pool forbids.
    pool = None
    for name, block in _blocks(model):
        if "autocast" in wrappers and not _is_head(name):  # the heads compute in float32
            wrap_forward(block, autocast_forward(device.type, dtype, torch.float32))
        if "inductor" in wrappers:
            mode = "reduce-overhead" if device.type == "cuda" else None
            wrap_forward(block, compile_forward(name or type(block).__name__, device.type, mode))
        if "cuda_graph" in wrappers:
            wrap_forward(block, graph_forward(name or type(block).__name__, pool))
        plan.blocks.append(name or type(block).__name__)
    if "cuda_graph" in wrappers:
        plan.blocks.extend(_graph_memory(model, pool))
    plan.wrappers = wrappers


_GRAPHED_MEMORY_METHODS = ("read", "update")


def _graph_memory(model: nn.Module, pool: Any) -> list[str]:
    """Record the spatial memory's read and update as CUDA graphs too (its state has a fixed
    shape and its policies no host syncs on CUDA); returns the names of the graphed methods.

    Only the library's own ``SpatialMemory`` is graphed: a subclass's policy may decide on the
    host (a Python counter, a schedule), which a recorded graph would freeze, so subclasses stay
    eager between the graphed blocks."""
    from spatialmem.memory import SpatialMemory
    from spatialmem.models import Spann3R

    if not isinstance(model, Spann3R) or type(model.memory) is not SpatialMemory:
        return []
    names = []
    for method in _GRAPHED_MEMORY_METHODS:
        name = f"memory.{method}"
        # an instance attribute shadows the class's method; the original stays reachable
        setattr(model.memory, method, GraphedCall(getattr(model.memory, method), name, pool=pool))
        names.append(name)
    return names


def clear_decisions(*, disk: bool = False) -> None:
    """Forget the measured decisions, linear layers and head layouts, of this process (the next
    optimisation measures again), and with ``disk=True`` also this machine's entries of the
    decision cache on disk (see ``spatialmem.optimize.disk_cache``), which later processes
    would otherwise reuse."""
    from spatialmem.optimize import disk_cache, linear

    linear._decisions.clear()
    convs._decisions.clear()
    if disk:
        disk_cache.forget()
