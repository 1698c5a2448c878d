"""The streaming-step benchmark behind ``spatialmem bench``: eager against optimised in one run.

Every figure is measured in the same process, with the variants taking turns (alternating
rounds), so that a drift of the machine's speed hits all of them alike; ratios are the numbers to
compare across machines.
"""

import gc
import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from spatialmem._checks import internal_calls
from spatialmem.bench.measure import (
    count_flops,
    current_rss,
    matmul_peak,
    peak_rss,
    reset_peak_rss,
    summarize,
    sync,
)
from spatialmem.inference import OnlineReconstructor
from spatialmem.models import Spann3R, create_model
from spatialmem.optimize import InferenceLinear, optimize_for_inference
from spatialmem.optimize.wrappers import CudaGraphCapture

__all__ = ["BenchConfig", "run_bench"]

logger = logging.getLogger(__name__)

VARIANTS = ("eager", "optimized", "int8", "bf16")
"""Variants the benchmark knows: ``eager`` (the model as built), ``optimized``
([`optimize_for_inference`][spatialmem.optimize.optimize_for_inference], float32), ``int8`` (the
approximate tier), ``bf16``."""


@dataclass
class BenchConfig:
    """What ``spatialmem bench`` measures (the defaults are the quick run)."""

    mode: str = "quick"
    """``"quick"`` or ``"full"`` (recorded in the results)."""
    model: str = "spann3r_vitl_dpt512"
    """The timed model (random weights, built as ``create_model`` builds it)."""
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224)])
    """Frame sizes ``(H, W)``."""
    batches: list[int] = field(default_factory=lambda: [1])
    """Streams per batch."""
    variants: list[str] = field(default_factory=lambda: ["eager", "optimized"])
    """Variants timed side by side (see ``VARIANTS``)."""
    rounds: int = 3
    """Alternating rounds."""
    peak_seconds_per_shape: float = 0.05
    """Seconds of back-to-back calls per linear shape and round of the matmul-peak probe (four
    times this for the square reference product)."""
    steps_per_round: int = 2
    """Timed steps of each variant per round."""
    warmup_steps: int = 1
    """Untimed steps of each variant before the rounds (after the stream's first step)."""
    components: bool = True
    """Time every block of the step with the model's public methods."""
    stream_model: str = "spann3r_small_synthetic"
    """Model of the stream-length run."""
    stream_size: tuple[int, int] = (64, 96)
    """Frame size of the stream-length run."""
    stream_frames: int = 300
    """Frames of the stream-length run (0: skip it)."""
    accuracy_sequences: int = 4
    """Synthetic room sequences of the accuracy run of the approximate variants."""
    accuracy_frames: int = 16
    """Frames per accuracy sequence."""
    checkpoint: str | None = None
    """Weights of ``stream_model`` for the accuracy run (default: its shipped weights; random
    weights for a model without them)."""
    device: str = "cpu"
    """``"cpu"`` or ``"cuda"``."""
    seed: int = 0
    """Seed of the weights and frames."""


# ---------------------------------------------------------------------- helpers
def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def _reset_device_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_peak_rss()


def _device_peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _build(name: str, device: torch.device, seed: int) -> Spann3R:
    torch.manual_seed(seed)
    with device:
        model = create_model(name)
    if not isinstance(model, Spann3R):
        raise ValueError(f"`model` {name!r} is not a Spann3R model")
    return model.eval()


def _extra_bytes(net: nn.Module) -> int:
    """Bytes the variant holds beyond the eager model's tensors (packed or cast weights,
    quantised weights, relaid convolution weights)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    total = 0
    for m in net.modules():
        if isinstance(m, InferenceLinear):
            w = m._w
            if w.is_mkldnn or m.weight is None or w.data_ptr() != m.weight.data_ptr():
                total += w.numel() * w.element_size()
        elif isinstance(m, DynamicQuantizedLinear):  # an int8 copy of the weight
            total += m.in_features * m.out_features
    plan = getattr(net, "inference_plan", None)
    if plan is not None and not plan.inplace:  # convolution weights laid out anew, cast linears
        for name in plan.convs:
            w = net.get_submodule(name).weight
            total += w.numel() * w.element_size()
        for name in plan.cast:
            layer = net.get_submodule(name)
            total += sum(p.numel() * p.element_size() for p in layer.parameters(recurse=False))
    return total


def _make_variant(name: str, model: Spann3R, tokens: int, device: torch.device) -> Spann3R:
    if name == "eager":
        return model
    on_cuda = device.type == "cuda"
    if name == "optimized":
        return optimize_for_inference(
            model, backend="cuda_graph" if on_cuda else "auto", tokens=tokens
        )
    if name == "int8":
        return optimize_for_inference(model, dtype=torch.qint8)
    if name == "bf16":
        return optimize_for_inference(
            model,
            dtype=torch.bfloat16,
            backend="cuda_graph" if on_cuda else "auto",
            tokens=tokens,
        )
    raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")


def _frame_pool(n: int, batch: int, hw: tuple[int, int], device: torch.device) -> list[Tensor]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(batch, 3, *hw, generator=g) * 2 - 1).to(device) for _ in range(max(2, n))]


# ---------------------------------------------------------------------- one size x batch
def _bench_case(
    model: Spann3R, hw: tuple[int, int], batch: int, cfg: BenchConfig, device: torch.device
) -> dict[str, Any]:
    patch = model.config.dust3r.patch_size
    tokens = batch * (hw[0] // patch) * (hw[1] // patch)
    pool = _frame_pool(4, batch, hw, device)
    frame_at = lambda i: pool[i % len(pool)]  # noqa: E731 - the same sequence for every variant
    case: dict[str, Any] = {"height": hw[0], "width": hw[1], "batch": batch, "tokens": tokens}
    logger.info("case %dx%d, batch %d (%d tokens per step)", hw[1], hw[0], batch, tokens)

    nets: dict[str, Spann3R] = {}
    recons: dict[str, OnlineReconstructor] = {}
    outputs: dict[str, dict[int, Tensor]] = {}
    position: dict[str, int] = {}
    info: dict[str, dict[str, Any]] = {}
    for name in cfg.variants:
        t0 = time.perf_counter()
        nets[name] = net = _make_variant(name, model, tokens, device)
        plan = getattr(net, "inference_plan", None)
        info[name] = {
            "optimise_seconds": time.perf_counter() - t0,
            "plan": None if plan is None else plan.summary(),
            "layer_counts": None if plan is None else plan.counts(),
            "extra_bytes": _extra_bytes(net),
        }
        recons[name] = OnlineReconstructor(net, optimize=False)
        outputs[name], position[name] = {}, 0

    def advance(name: str) -> float:
        i = position[name]
        seconds, result = _timed(lambda: recons[name].step(frame_at(i)), device)
        position[name] = i + 1
        if result is not None and len(outputs[name]) < 64:
            outputs[name][i] = result.pts3d.float().clone()
        return seconds

    # First step (pair encoding) and warm-up, one variant at a time; peak memory of each.
    for name in cfg.variants:
        gc.collect()
        _reset_device_peak(device)
        rss_before = current_rss()
        first = [advance(name) for _ in range(2)]
        warm = [advance(name) for _ in range(cfg.warmup_steps)]
        info[name].update(
            first_step_s=first[1],
            warmup_s=warm,
            rss_before_bytes=rss_before,
            peak_rss_bytes=peak_rss(),
            peak_device_bytes=_device_peak(device),
        )
        logger.info("  %s: first step %.3f s, %s", name, first[1], info[name]["plan"] or "eager")

    # Alternating timed rounds (the order flips every round); each variant's matmul peak is
    # measured right after its steps of the round, under the same machine speed.
    probes = {
        name: _PeakProbe(net, tokens, device, name == "bf16", cfg.peak_seconds_per_shape)
        for name, net in nets.items()
        if name != "int8"  # a quantised GEMM has no float peak to compare with
    }
    times: dict[str, list[float]] = {name: [] for name in cfg.variants}
    square: list[dict[str, Any]] = []
    for r in range(cfg.rounds):
        order = cfg.variants if r % 2 == 0 else list(reversed(cfg.variants))
        for name in order:
            times[name].extend(advance(name) for _ in range(cfg.steps_per_round))
            if name in probes:
                probes[name].measure()
        # the textbook reference: a large square product in float32, same round
        square.append(matmul_peak(device, torch.float32, seconds=cfg.peak_seconds_per_shape * 4))
        logger.info(
            "  round %d/%d: %s",
            r + 1,
            cfg.rounds,
            ", ".join(f"{n} {statistics.median(times[n]):.3f} s" for n in cfg.variants),
        )
    square_peak = {
        "n": square[0]["n"],
        "gflops": max(m["gflops_best"] for m in square),
        "gflops_median": statistics.median(m["gflops_best"] for m in square),
    }

    # FLOPs of one step (on the eager model; the optimised ops compute the same products).
    eager_name = "eager" if "eager" in cfg.variants else cfg.variants[0]
    i = position[eager_name]
    flops = count_flops(lambda: recons[eager_name].step(frame_at(i)))
    position[eager_name] = i + 1
    case["flops_per_step"] = flops.total
    case["flops_by_op"] = flops.by_op

    # Equality of every variant with eager on the steps both ran.
    ref = outputs.get("eager", {})
    for name in cfg.variants:
        common = sorted(set(ref) & set(outputs[name]))
        if name == "eager" or not common:
            continue
        diff = max(float((outputs[name][k] - ref[k]).abs().max()) for k in common)
        scale = max(float(ref[k].abs().max()) for k in common)
        info[name]["max_abs_diff"] = diff
        info[name]["max_rel_diff"] = diff / scale if scale > 0 else math.nan
        info[name]["compared_steps"] = len(common)

    peaks = {name: probe.summary() for name, probe in probes.items()}
    case["square_matmul"] = square_peak
    for name, peak in peaks.items():
        logger.info(
            "  matmul peak (%s path): %.1f GFLOP/s best, %.1f median of rounds (%d x %d -> %d)",
            name, peak["gflops"], peak["gflops_median"], tokens, *peak["shape"],
        )  # fmt: skip
    rows = []
    for name in cfg.variants:
        stats = summarize(times[name])
        row = {
            "variant": name,
            "s_per_step_median": stats["median"],
            "s_per_step_min": stats["min"],
            "s_per_frame_median": stats["median"] / batch,
            "frames_per_s": batch / stats["median"],
            "times_s": times[name],
            **info[name],
        }
        achieved = flops.total / stats["median"] / 1e9
        achieved_best = flops.total / stats["min"] / 1e9
        row["achieved_gflops"] = achieved
        row["achieved_gflops_best"] = achieved_best
        if name in peaks:
            # like with like: the fastest step against the fastest GEMM round, and the median
            # step against the median round
            peak, peak_median = peaks[name]["gflops"], peaks[name]["gflops_median"]
            row["peak_gflops"], row["peak_gflops_median"] = peak, peak_median
            row["fraction_of_peak"] = achieved_best / peak
            row["fraction_of_peak_median"] = achieved / peak_median
            row["in_turn_gflops"] = peaks[name]["gflops_in_turn"]
            if row["fraction_of_peak"] > 1:
                logger.warning(
                    "%s: the step ran faster (%.1f GFLOP/s) than the matmul peak measured "
                    "beside it (%.1f): the machine's speed changed during the run",
                    name, achieved_best, peak,
                )  # fmt: skip
        rows.append(row)
    base = next((r for r in rows if r["variant"] == "eager"), None)
    for row in rows:
        if base is not None:
            row["speedup_median"] = base["s_per_step_median"] / row["s_per_step_median"]
            row["speedup_min"] = base["s_per_step_min"] / row["s_per_step_min"]
    case["variants"] = rows
    case["matmul_peaks"] = peaks
    if cfg.components:
        view = ["eager", "optimized"] if "optimized" in nets else [cfg.variants[0]]
        case["components"] = _components(model, {n: nets[n] for n in view if n in nets},
                                         pool, cfg, device)  # fmt: skip
    del recons, nets, outputs
    gc.collect()
    return case


# ---------------------------------------------------------------------- matmul peak
def _linear_paths(net: nn.Module) -> dict[tuple[int, int, bool], list[nn.Module]]:
    """The variant's linear layers grouped by shape, as the variant computes them (a shape
    computed both eagerly and by a oneDNN layer keeps the oneDNN ones)."""
    paths: dict[tuple[int, int, bool], list[nn.Module]] = {}
    for m in net.modules():
        if type(m) is nn.Linear or isinstance(m, InferenceLinear):
            act = isinstance(m, InferenceLinear) and m.activation == "gelu"
            key = (m.in_features, m.out_features, act)
            group = paths.setdefault(key, [])
            if group and isinstance(m, InferenceLinear) != isinstance(group[0], InferenceLinear):
                if isinstance(m, InferenceLinear):
                    group.clear()
                else:
                    continue
            group.append(m)
    return paths


class _PeakProbe:
    """The machine's matmul rates on the path a variant computes its linears, measured in the
    same alternating rounds as the steps (so that both see the same machine speed).

    For every linear shape of the variant (``tokens`` rows, the variant's own layers: eager
    ``nn.Linear``, oneDNN, packed), each round measures

    * the **hot** rate: one layer called back to back for about ``seconds`` (its weight stays in
      the caches), the best the machine does on that shape;
    * the **in-turn** rate: every layer of that shape called once, one after the other, as the
      model runs them.

    A round's peak is its fastest shape (hot). Its in-turn rate is that of all the variant's
    linears together: their FLOPs over the time of calling each once, which is what the step's
    GEMMs cost (the layers of a shape with few of them may still sit in the caches, so no single
    shape's in-turn rate stands for the model).

    On CUDA both are timed as the replay of a recorded CUDA graph of the calls, so the rate is
    the GPU's, not the host's launch rate (a batch-1 linear takes microseconds on the GPU).
    """

    def __init__(
        self, net: nn.Module, tokens: int, device: torch.device, autocast: bool, seconds: float
    ) -> None:
        g = torch.Generator().manual_seed(0)
        self.tokens, self.device, self.autocast, self.seconds = tokens, device, autocast, seconds
        self.layers = _linear_paths(net)
        self.inputs = {k: torch.randn(tokens, k[0], generator=g).to(device) for k in self.layers}
        self.hot: dict[tuple[int, int, bool], float] = {}
        self.in_turn: dict[tuple[int, int, bool], float] = {}
        self.round_peaks: list[float] = []
        self.round_in_turn: list[float] = []

    def _call(self, layer: nn.Module, x: Tensor) -> Any:
        if self.autocast:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return layer(x)
        return layer(x)

    def _per_call(self, layers: list[nn.Module], x: Tensor, repeat: int) -> float:
        if self.device.type == "cuda":
            return self._per_call_graphed(layers, x, repeat)
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(repeat):
            for layer in layers:
                self._call(layer, x)
        sync(self.device)
        return (time.perf_counter() - t0) / (repeat * len(layers))

    def _per_call_graphed(self, layers: list[nn.Module], x: Tensor, repeat: int) -> float:
        """The calls recorded as one CUDA graph and timed as its replay (best of 3): the GPU's
        rate without the host's launch overhead, as the graphed variants run their blocks."""

        def calls() -> None:
            for _ in range(repeat):
                for layer in layers:
                    self._call(layer, x)

        capture = CudaGraphCapture(warmup=1)
        capture.capture(calls)
        best = math.inf
        for _ in range(3):
            sync(self.device)
            t0 = time.perf_counter()
            capture.replay()
            sync(self.device)
            best = min(best, time.perf_counter() - t0)
        return best / (repeat * len(layers))

    def measure(self) -> None:
        """One round over every shape."""
        peak = flops = seconds = 0.0
        with torch.inference_mode():
            for key, layers in self.layers.items():
                x = self.inputs[key]
                one = self._per_call(layers[:1], x, 1)  # also warms the threads
                calls = int(min(200, max(3, self.seconds / max(one, 1e-6))))
                hot = self._per_call(layers[:1], x, calls)
                turn = self._per_call(layers, x, 1)
                self.hot[key] = min(self.hot.get(key, math.inf), hot)
                self.in_turn[key] = min(self.in_turn.get(key, math.inf), turn)
                peak = max(peak, self._gflops(key, hot))
                flops += len(layers) * self._gflops(key, 1.0)
                seconds += len(layers) * turn
        self.round_peaks.append(peak)
        self.round_in_turn.append(flops / seconds)

    def _gflops(self, key: tuple[int, int, bool], seconds: float) -> float:
        return 2 * self.tokens * key[0] * key[1] / seconds / 1e9

    def summary(self) -> dict[str, Any]:
        shapes = [
            {
                "in": k,
                "out": n,
                "gelu": act,
                "layers": len(self.layers[(k, n, act)]),
                "seconds": t,
                "gflops": self._gflops((k, n, act), t),
                "gflops_in_turn": self._gflops((k, n, act), self.in_turn[(k, n, act)]),
            }
            for (k, n, act), t in self.hot.items()
        ]
        top = max(shapes, key=lambda s: s["gflops"])
        return {
            "gflops": top["gflops"],
            "gflops_median": statistics.median(self.round_peaks),
            "round_gflops": self.round_peaks,
            "gflops_in_turn": max(self.round_in_turn),
            "round_gflops_in_turn": self.round_in_turn,
            "shape": [top["in"], top["out"]],
            "shapes": shapes,
        }


# ---------------------------------------------------------------------- components
COMPONENTS = (
    "encoder",
    "memory read",
    "decoder",
    "head 1",
    "key + query heads",
    "memory encoder",
    "memory write",
    "head 2 (last frame only)",
)
"""The blocks of one streaming step, in order (head 2 runs only for a stream's last frame)."""

WHOLE_STEP = "whole step (encode + Spann3R.step)"
"""Timed in the same rounds as the blocks: the difference to their sum is the step's overhead."""


def _step_pieces(model: Spann3R, pool: list[Tensor]) -> dict[str, Any]:
    """Inputs of every block of a steady-state step, computed with the eager model."""
    from spatialmem.models import SequenceDriver

    driver = SequenceDriver(model)
    view1, view2 = model.encode_pair(pool[0], pool[1])
    driver.start(view1)
    for i in range(1, 4):
        if i > 1:
            view2 = model.encode(pool[i % len(pool)])
        driver.advance(view2, predict_view2=False)
    image = pool[4 % len(pool)]
    view1 = driver.view1
    view2 = model.encode(image)
    state, query = driver.state, driver.query
    fused, after_read = model.fuse(state.clone(), view1, query)
    dec1, dec2 = model.dust3r.decode(view1.replace(tokens=fused), view2)
    head1 = model.dust3r.predict_view1(dec1, view1)
    key = model.key_head(view1.tokens, dec1[-1])
    value = model.memory_value(head1, view1, key)
    return {
        "image": image, "view1": view1, "view2": view2, "state": state, "query": query,
        "fused": fused, "after_read": after_read, "dec1": dec1, "dec2": dec2, "head1": head1,
        "key": key, "value": value,
    }  # fmt: skip


def _component_calls(net: Spann3R, p: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    fused_view1 = p["view1"].replace(tokens=p["fused"])
    pts = p["head1"].pts3d
    return {
        "encoder": lambda: net.encode(p["image"]),
        "memory read": lambda: net.fuse(p["state_copy"], p["view1"], p["query"]),
        "decoder": lambda: net.dust3r.decode(fused_view1, p["view2"]),
        "head 1": lambda: net.dust3r.predict_view1(p["dec1"], p["view1"]),
        "key + query heads": lambda: (
            net.key_head(p["view1"].tokens, p["dec1"][-1]),
            net.query_head(p["view2"].tokens, p["dec2"][-1]),
        ),
        "memory encoder": lambda: net.memory_encoder(pts),
        "memory write": lambda: net.memory.update(p["write_copy"], p["key"], p["value"]),
        "head 2 (last frame only)": lambda: net.dust3r.predict_view2(p["dec2"], p["view2"]),
        WHOLE_STEP: lambda: net.step(
            p["step_copy"], p["view1"], net.encode(p["image"]), p["query"], predict_view2=False
        ),
    }


def _components(
    model: Spann3R,
    nets: dict[str, Spann3R],
    pool: list[Tensor],
    cfg: BenchConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Seconds (min and median of alternating rounds) and FLOPs of every block of a step."""
    logger.info("  components: %s", ", ".join(COMPONENTS))
    with torch.inference_mode(), internal_calls():
        pieces = _step_pieces(model, pool)
        calls = {name: _component_calls(net, pieces) for name, net in nets.items()}

        def fresh_states() -> None:  # read and write change the state: each call gets a copy
            pieces["state_copy"] = pieces["state"].clone()
            pieces["step_copy"] = pieces["state"].clone()
            pieces["write_copy"] = pieces["after_read"].clone()

        flops = {}
        for comp in COMPONENTS:
            fresh_states()
            flops[comp] = count_flops(calls[next(iter(nets))][comp]).total
        timed = (*COMPONENTS, WHOLE_STEP)
        times: dict[str, dict[str, list[float]]] = {n: {c: [] for c in timed} for n in nets}
        for name in nets:  # warm-up
            for comp in timed:
                fresh_states()
                calls[name][comp]()
        for r in range(cfg.rounds):
            order = list(nets) if r % 2 == 0 else list(reversed(nets))
            for comp in timed:
                for name in order:
                    fresh_states()
                    seconds, _ = _timed(calls[name][comp], device)
                    times[name][comp].append(seconds)
    rows = []
    for comp in COMPONENTS:
        row: dict[str, Any] = {"component": comp, "flops": flops[comp]}
        for name in nets:
            row[f"{name}_s_min"] = min(times[name][comp])
            row[f"{name}_s_median"] = statistics.median(times[name][comp])
        if "eager" in nets and "optimized" in nets:
            row["speedup_min"] = row["eager_s_min"] / row["optimized_s_min"]
        rows.append(row)
    whole = {}
    for name in nets:
        whole[f"{name}_s_min"] = min(times[name][WHOLE_STEP])
        whole[f"{name}_s_median"] = statistics.median(times[name][WHOLE_STEP])
    return {"variants": list(nets), "rows": rows, "whole_step": whole}


# ---------------------------------------------------------------------- stream length
def stream_scaling(cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """Per-step latency, resident memory and the memory state's size over a long stream of the
    small model (its default reconstructor: the fast path on)."""
    model = _build(cfg.stream_model, device, cfg.seed)
    n = cfg.stream_frames
    logger.info("stream of %d frames, %s at %dx%d", n, cfg.stream_model, *cfg.stream_size[::-1])
    pool = _frame_pool(16, 1, cfg.stream_size, device)
    recon = OnlineReconstructor(model)
    every = max(1, n // 200)
    steps_s: list[float] = []
    samples: list[dict[str, Any]] = []
    gc.collect()
    start = time.perf_counter()
    for i in range(n):
        seconds, _ = _timed(lambda i=i: recon.step(pool[i % len(pool)][0]), device)
        steps_s.append(seconds)
        if i % every == 0 or i == n - 1:
            state = recon.state
            nbytes = 0 if state is None else sum(
                t.numel() * t.element_size()
                for t in state.state_dict().values()
                if isinstance(t, Tensor)
            )  # fmt: skip
            samples.append(
                {
                    "frame": i,
                    "rss_bytes": current_rss(),
                    "device_bytes": torch.cuda.memory_allocated(device)
                    if device.type == "cuda"
                    else None,
                    "state_bytes": nbytes,
                    "tokens": 0 if state is None else int(state.count[0]),
                }
            )
        if (i + 1) % max(1, n // 5) == 0:
            logger.info("  frame %d/%d: %.1f ms", i + 1, n, 1e3 * statistics.median(steps_s[-50:]))
    recon.finish()
    total = time.perf_counter() - start
    window = max(5, min(50, n // 6))
    early_at = min(max(window, 50), max(2, n - 2 * window))
    early = steps_s[early_at : early_at + window]
    late = steps_s[-window:]
    rss = [s["rss_bytes"] for s in samples if s["rss_bytes"] is not None]
    settled = [s for s in samples if s["frame"] >= early_at]
    out = {
        "model": cfg.stream_model,
        "height": cfg.stream_size[0],
        "width": cfg.stream_size[1],
        "frames": n,
        "seconds": total,
        "plan": None if recon.plan is None else recon.plan.summary(),
        "window": window,
        "early_at": early_at,
        "ms_early": 1e3 * statistics.median(early),
        "ms_late": 1e3 * statistics.median(late),
        "late_over_early": statistics.median(late) / statistics.median(early),
        "rss_settled_bytes": settled[0]["rss_bytes"] if settled else None,
        "rss_end_bytes": rss[-1] if rss else None,
        "state_bytes_end": samples[-1]["state_bytes"],
        "tokens_end": samples[-1]["tokens"],
        "steps_ms": [1e3 * s for s in steps_s],
        "samples": samples,
    }
    del recon, model
    gc.collect()
    return out


# ---------------------------------------------------------------------- accuracy
def _load_trained(model: Spann3R, cfg: BenchConfig) -> str:
    """Load ``cfg.checkpoint``, else the preset's shipped weights when it has them; returns
    what the model now holds, for the report (random weights only show how far outputs move)."""
    from spatialmem.models.pretrained import load_pretrained, pretrained_models

    if cfg.checkpoint:
        from spatialmem.interop import load_checkpoint

        load_checkpoint(model, cfg.checkpoint)
        return cfg.checkpoint
    if cfg.stream_model in pretrained_models():
        load_pretrained(model, cfg.stream_model)
        return f"shipped weights of {cfg.stream_model}"
    return "random (pass --checkpoint for trained weights)"


def approximate_accuracy(cfg: BenchConfig, device: torch.device) -> dict[str, Any] | None:
    """Accuracy cost of the approximate variants (int8, bf16) on synthetic room sequences,
    beside float32, with the small model (trained weights with ``cfg.checkpoint``)."""
    approx = [v for v in cfg.variants if v in ("int8", "bf16")]
    if not approx or cfg.accuracy_sequences < 1:
        return None
    from spatialmem.data.rooms import room_sequence
    from spatialmem.metrics import evaluate_pointmaps

    model = _build(cfg.stream_model, device, cfg.seed)
    weights = _load_trained(model, cfg)
    names = ["fp32", *approx]
    nets = {"fp32": model}
    patch = model.config.dust3r.patch_size
    tokens = (cfg.stream_size[0] // patch) * (cfg.stream_size[1] // patch)
    for v in approx:
        nets[v] = _make_variant(v, model, tokens, device)
    sums: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    h, w = cfg.stream_size
    for index in range(cfg.accuracy_sequences):
        clip = room_sequence(index, cfg.accuracy_frames, h, w)
        images = clip.images.to(device)
        ref_pts = None
        for name in names:
            recon = OnlineReconstructor(nets[name], optimize=False)
            t0 = time.perf_counter()
            results = recon.run(images)
            seconds = time.perf_counter() - t0
            pts = torch.stack([r.pts3d for r in results]).float().cpu()
            metrics = evaluate_pointmaps(pts, clip.pts3d, clip.valid, align="sim3")
            entry = sums[name]
            for key in ("acc", "comp", "chamfer", "completion_ratio"):
                entry.setdefault(key, []).append(float(getattr(metrics, key)))
            entry.setdefault("ms_per_frame", []).append(1e3 * seconds / len(results))
            if ref_pts is None:
                ref_pts = pts
            else:
                rel = float((pts - ref_pts).abs().max() / ref_pts.abs().max())
                entry.setdefault("max_rel_diff_vs_fp32", []).append(rel)
    rows = []
    for name in names:
        row = {"variant": name}
        row.update({k: statistics.fmean(v) for k, v in sums[name].items()})
        rows.append(row)
    return {
        "model": cfg.stream_model,
        "weights": weights,
        "sequences": cfg.accuracy_sequences,
        "frames": cfg.accuracy_frames,
        "align": "sim3",
        "rows": rows,
    }


# ---------------------------------------------------------------------- the whole run
def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Run the benchmark described by ``cfg`` and return its results (what the JSON holds).

    Args:
        cfg: the configuration (see [`BenchConfig`][spatialmem.bench.BenchConfig]).

    Returns:
        A dict: ``config``, ``cases`` (one per size and batch: per-variant latency, frames/s,
        peak memory, FLOPs, matmul peak, fraction of peak, equality, components),
        ``stream`` (latency and memory along a long stream) and ``accuracy`` (approximate
        tiers), plus ``seconds``.

    Raises:
        ValueError: an unknown variant, a variant the device cannot run, or an empty list of
            sizes, batches or variants.
    """
    unknown = sorted(set(cfg.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if not (cfg.variants and cfg.sizes and cfg.batches):
        raise ValueError("`variants`, `sizes` and `batches` must not be empty")
    device = torch.device(cfg.device)
    if device.type == "cuda" and "int8" in cfg.variants:
        raise ValueError("the int8 variant runs on CPU only (drop --int8 or use --device cpu)")
    start = time.perf_counter()
    results: dict[str, Any] = {"benchmark": "spatialmem bench", "config": asdict(cfg)}
    # The stream first, so that its resident memory is the small model's, not what the large
    # model leaves allocated.
    results["stream"] = stream_scaling(cfg, device) if cfg.stream_frames > 0 else None
    logger.info("building %s (random weights)", cfg.model)
    model = _build(cfg.model, device, cfg.seed)
    results["params"] = sum(p.numel() for p in model.parameters())
    results["cases"] = [
        _bench_case(model, hw, batch, cfg, device) for hw in cfg.sizes for batch in cfg.batches
    ]
    del model
    gc.collect()
    results["accuracy"] = approximate_accuracy(cfg, device)
    results["seconds"] = time.perf_counter() - start
    return results
