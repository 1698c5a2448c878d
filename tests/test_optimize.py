"""The inference fast path: optimize_for_inference equals eager (fp32 within 1e-5, bf16 and int8
within their documented tolerances), the streaming reconstructor uses it, and it adds no host
sync. CUDA tests run only where a GPU is present; the compiled path only with
``SPATIALMEM_TEST_COMPILE=1`` (minutes of compilation)."""

import dataclasses
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spatialmem as sm
from spatialmem.optimize import (
    GraphedCall,
    InferenceLinear,
    choose_linear_impl,
    cpu_features,
    onednn_linear_available,
    optimize_for_inference,
)
from spatialmem.optimize import cpu as cpu_module
from spatialmem.optimize.core import would_change
from spatialmem.optimize.wrappers import (
    autocast_forward,
    graph_forward,
    map_tensors,
    wrap_forward,
)
from test_checks_at_door import CPU_FAST_PATH_SYNCS_PER_STEP, count_host_syncs

FP32_TOL = 1e-5
BF16_TOL = 5e-2  # max |pts - pts_fp32| / max |pts_fp32| (documented in docs/performance.md)
INT8_TOL = 1e-1  # the same for the approximate int8 tier on random weights

needs_onednn = pytest.mark.skipif(
    not onednn_linear_available(torch.float32), reason="oneDNN linear ops not in this torch build"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PRESETS = {"spann3r_tiny": (32, 48), "spann3r_small_synthetic": (64, 96)}


def _model(name: str) -> sm.Spann3R:
    torch.manual_seed(0)
    model = sm.create_model(name)
    assert isinstance(model, sm.Spann3R)
    return model.eval()


@pytest.fixture(scope="module", params=list(PRESETS))
def preset(request: pytest.FixtureRequest) -> tuple[str, sm.Spann3R]:
    return request.param, _model(request.param)


def _frames(name: str, n: int = 5, batch: int | None = None, seed: int = 1) -> torch.Tensor:
    h, w = PRESETS[name]
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, h, w) if batch is None else (batch, n, 3, h, w)
    return torch.rand(*shape, generator=g) * 2 - 1


def _close(got: torch.Tensor, want: torch.Tensor, tol: float = FP32_TOL) -> None:
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max())


# ---------------------------------------------------------------------- fp32: equal to eager
@needs_onednn
@pytest.mark.usefixtures("without_typecheck")
@pytest.mark.parametrize("backend", ["onednn", "auto"])
def test_fp32_forward_and_stream_equal_eager(preset: tuple[str, sm.Spann3R], backend: str) -> None:
    name, model = preset
    fast = optimize_for_inference(model, backend=backend)
    plan = fast.inference_plan
    assert plan.exact and plan.layers
    if backend == "onednn":
        assert set(plan.counts()) <= {"onednn_packed", "onednn_packed+gelu"}
        assert any(isinstance(m, InferenceLinear) for m in fast.modules())
    frames = _frames(name)
    with torch.inference_mode():
        ref = model(frames[None])
        out = fast(frames[None])
    _close(out.pts3d, ref.pts3d)
    _close(out.conf, ref.conf)
    # Streamed, on the optimised model and through the reconstructor's own fast path.
    for recon in (
        sm.inference.OnlineReconstructor(fast),
        sm.inference.OnlineReconstructor(model),
    ):
        results = recon.run(frames)
        _close(torch.stack([r.pts3d for r in results]), ref.pts3d[0])
        _close(torch.stack([r.conf for r in results]), ref.conf[0])
        assert recon.state is not None
        assert torch.equal(recon.state.count, ref.memory.count)


@needs_onednn
@pytest.mark.usefixtures("without_typecheck")
def test_batch_of_streams_equal_eager() -> None:
    model = _model("spann3r_small_synthetic")
    fast = optimize_for_inference(model, backend="onednn", tokens=2 * 96)
    frames = _frames("spann3r_small_synthetic", n=3, batch=2)
    with torch.inference_mode():
        ref = model(frames)
    results = sm.inference.OnlineReconstructor(fast).run(frames)
    _close(torch.stack([r.pts3d for r in results], 1), ref.pts3d)


def test_copy_leaves_the_model_alone_and_shares_its_tensors() -> None:
    model = _model("spann3r_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    fast = optimize_for_inference(model, backend="onednn")
    assert fast is not model and not hasattr(model, "inference_plan")
    assert [type(m) for m in model.modules()] == types
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # untouched tensors are shared, not copied
    assert (
        fast.dust3r.encoder.patch_embed.proj.weight is model.dust3r.encoder.patch_embed.proj.weight
    )
    assert set(fast.state_dict()) == set(before)
    for key, value in fast.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not fast.training


def test_auto_never_packs_a_float32_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sharing copy must not hold a second copy of the weights, and in place the packing's
    memory peak bought too little: packing is an "auto" candidate only in bf16 (cast anyway)."""
    from spatialmem.optimize import core

    if not onednn_linear_available(torch.float32):
        pytest.skip("oneDNN linear ops do not run here")
    offered: list[tuple[str, ...]] = []

    def last_candidate(layer: nn.Linear, **kw: object) -> tuple[str, dict[str, float]]:
        candidates = kw["candidates"]
        assert isinstance(candidates, tuple)
        offered.append(candidates)
        return candidates[-1], dict.fromkeys(candidates, 1.0)

    monkeypatch.setattr(core, "choose_linear_impl", last_candidate)
    model = _model("spann3r_tiny")
    fast = optimize_for_inference(model, tokens=6)
    assert offered and all("onednn_packed" not in c for c in offered)
    assert set(fast.inference_plan.counts()) <= {"onednn", "onednn+gelu", "aten", "aten+gelu"}
    assert fast.inference_plan.changed
    offered.clear()
    optimize_for_inference(model, tokens=6, inplace=True)
    assert offered and all("onednn_packed" not in c for c in offered)
    if onednn_linear_available(torch.bfloat16):
        offered.clear()
        with warnings.catch_warnings():  # bf16 on a CPU without bf16 instructions warns
            warnings.simplefilter("ignore")
            optimize_for_inference(_model("spann3r_tiny"), tokens=6, dtype=torch.bfloat16)
        assert offered and all("onednn_packed" in c for c in offered)


@pytest.fixture
def conv_layout_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channels-last layout of the DPT heads measures faster (it is timed otherwise)."""
    from spatialmem.optimize import convs

    monkeypatch.setattr(
        convs, "choose_conv_layout", lambda head, **kw: (True, {"plain": 2.0, "channels_last": 1.0})
    )


@pytest.mark.usefixtures("conv_layout_pays")
def test_dpt_convolutions_laid_out_channels_last_once() -> None:
    model = _model("spann3r_tiny")
    conv = model.dust3r.head1.refinenet[0].res_unit1.conv1
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    # "auto" copy: the laid-out weights would be a second copy; nothing is timed or relaid
    plan = optimize_for_inference(model).inference_plan
    assert not plan.convs and not plan.conv_seconds
    # the explicit "onednn" backend relays the copy's convolutions without measuring
    fast = optimize_for_inference(model, backend="onednn")
    plan = fast.inference_plan
    assert "dust3r.head1.refinenet.0.res_unit1.conv1" in plan.convs and plan.changed
    assert not plan.conv_seconds
    # a stream runs head2 only for its last frame: its weights are not worth a copy
    assert not any(name.startswith("dust3r.head2.") for name in plan.convs)
    fast_conv = fast.get_submodule("dust3r.head1.refinenet.0.res_unit1.conv1")
    assert fast_conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)  # model untouched
    assert torch.equal(fast_conv.weight, conv.weight)
    assert fast.dust3r.head2.head[0].weight is model.dust3r.head2.head[0].weight  # shared
    assert plan.is_current(model)
    with torch.no_grad():
        conv.weight.mul_(2.0)  # the copy's laid-out weight is now stale
    assert not plan.is_current(model)
    # in place: the parameter itself is relaid, its values and the state dict's keys unchanged
    other = _model("spann3r_tiny")
    before = {k: v.clone() for k, v in other.state_dict().items()}
    plan = optimize_for_inference(other, inplace=True).inference_plan
    assert plan.conv_seconds == {"dust3r.head1": {"plain": 2.0, "channels_last": 1.0}}
    relaid = other.get_submodule("dust3r.head1.refinenet.0.res_unit1.conv1").weight
    assert relaid.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    # the eager backend changes nothing
    assert not optimize_for_inference(model, backend="eager").inference_plan.convs
    # a pair model runs both of its heads on every call
    pair = sm.create_model("dust3r_tiny_dpt").eval()
    plan = optimize_for_inference(pair, inplace=True).inference_plan
    heads = {name.split(".")[0] for name in plan.convs}
    assert heads == {"head1", "head2"}


@pytest.mark.usefixtures("without_typecheck")
def test_conv_layout_not_kept_where_it_does_not_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    from spatialmem.optimize import convs, core

    monkeypatch.setattr(core, "choose_linear_impl", lambda layer, **kw: ("aten", {}))
    level = {"plain": 1.0, "channels_last": 0.8}  # the best calls: 20 % faster
    timing = [0.95]  # the median ratio: 5 % faster, under the margin
    monkeypatch.setattr(convs, "_time_pairs", lambda *a, **kw: (dict(level), timing[0]))
    monkeypatch.setattr(convs, "_decisions", {})
    model = _model("spann3r_tiny")
    plan = optimize_for_inference(_model("spann3r_tiny"), tokens=6, inplace=True).inference_plan
    assert not plan.convs and not plan.changed
    assert plan.conv_seconds == {"dust3r.head1": level}
    assert not would_change(model, tokens=6)
    recon = sm.inference.OnlineReconstructor(model)
    recon.run(_frames("spann3r_tiny", n=2))
    assert recon._net is model  # nothing pays: the stream runs the model itself, no copy
    timing[0] = 0.85  # 15 % faster, on a head shape not decided yet
    pays, seconds = convs.choose_conv_layout(model.dust3r.head1, tokens=12)
    assert pays and seconds == level


@pytest.mark.usefixtures("without_typecheck")
def test_choose_conv_layout_times_the_head_without_changing_it() -> None:
    from spatialmem.optimize import clear_decisions, convs

    head = _model("spann3r_tiny").dust3r.head1
    before = {k: v.clone() for k, v in head.state_dict().items()}
    clear_decisions()
    pays, seconds = convs.choose_conv_layout(head, tokens=6, budget_s=0.05)
    assert set(seconds) == {"plain", "channels_last"} and all(t > 0 for t in seconds.values())
    assert isinstance(pays, bool)
    assert convs.choose_conv_layout(head, tokens=6) == (pays, seconds)  # cached
    for name, value in head.state_dict().items():
        assert torch.equal(value, before[name]), name
        assert value.is_contiguous(), name  # no layout left behind
    clear_decisions()
    assert not convs._decisions
    with pytest.raises(ValueError, match="`tokens` must be a positive int, got 0"):
        convs.choose_conv_layout(head, tokens=0)
    with pytest.raises(TypeError, match="`head` must be a DPTHead, got Linear"):
        convs.choose_conv_layout(nn.Linear(2, 2), tokens=6)


@pytest.mark.usefixtures("without_typecheck", "conv_layout_pays")
def test_reconstructor_does_not_copy_the_model_for_conv_layouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from spatialmem.optimize import core

    monkeypatch.setattr(core, "choose_linear_impl", lambda layer, **kw: ("aten", {}))
    model = _model("spann3r_tiny")
    assert not would_change(model, tokens=6)  # a copy would only double the conv weights
    recon = sm.inference.OnlineReconstructor(model)
    results = recon.run(_frames("spann3r_tiny", n=3))
    assert recon._net is model  # the stream runs the model itself, no copy
    with torch.inference_mode():
        ref = model(_frames("spann3r_tiny", n=3)[None])
    _close(torch.stack([r.pts3d for r in results]), ref.pts3d[0])
    # in place the layout is free, and kept where it measures faster
    owned = _model("spann3r_tiny")
    assert optimize_for_inference(owned, inplace=True, tokens=6).inference_plan.convs


@needs_onednn
@pytest.mark.usefixtures("without_typecheck")
def test_inplace_packs_without_a_second_weight_and_round_trips_the_state_dict() -> None:
    model = _model("spann3r_tiny")
    reference = _model("spann3r_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = optimize_for_inference(model, backend="onednn", inplace=True)
    assert out is model and model.inference_plan.inplace
    packed = [m for m in model.modules() if isinstance(m, InferenceLinear)]
    assert packed and all(m.weight is None for m in packed)
    state = model.state_dict()
    assert set(state) == set(before)
    for key, value in state.items():
        assert torch.equal(value, before[key]), key
    # loading other weights repacks them
    torch.manual_seed(5)
    other = sm.create_model("spann3r_tiny").eval()
    model.load_state_dict(other.state_dict())
    reference.load_state_dict(other.state_dict())
    frames = _frames("spann3r_tiny")[None]
    with torch.inference_mode():
        _close(model(frames).pts3d, reference(frames).pts3d)


@needs_onednn
@pytest.mark.usefixtures("without_typecheck")
def test_reconstructor_reoptimises_after_new_weights() -> None:
    model = _model("spann3r_small_synthetic")
    recon = sm.inference.OnlineReconstructor(model)
    frames = _frames("spann3r_small_synthetic", n=3)
    recon.run(frames)
    first = recon.plan
    recon.run(frames)
    assert recon.plan is first  # same model, same weights: kept
    if first is not None:
        assert first.is_current(model)
        torch.manual_seed(3)
        model.load_state_dict(sm.create_model("spann3r_small_synthetic").state_dict())
        assert not first.is_current(model)
        results = recon.run(frames)
        assert recon.plan is not first
        with torch.inference_mode():
            ref = model(frames[None])
        _close(torch.stack([r.pts3d for r in results]), ref.pts3d[0])
    eager = sm.inference.OnlineReconstructor(model, optimize=False)
    eager.run(frames)
    assert eager.plan is None and "optimize=False" in repr(eager)


def test_already_optimised_model_is_used_as_it_is() -> None:
    model = _model("spann3r_tiny")
    fast = optimize_for_inference(model, backend="eager", inplace=True)
    assert not fast.inference_plan.changed
    recon = sm.inference.OnlineReconstructor(fast)
    recon.run(_frames("spann3r_tiny", n=3))
    assert recon.plan is fast.inference_plan


# ---------------------------------------------------------------------- host syncs
@needs_onednn
@pytest.mark.usefixtures("without_typecheck")
def test_optimised_step_adds_no_host_sync() -> None:
    fast = optimize_for_inference(_model("spann3r_tiny"), backend="onednn")
    recon = sm.inference.OnlineReconstructor(fast)
    counts = []
    with sm.value_checks(False):
        for frame in _frames("spann3r_tiny", n=6):
            with count_host_syncs() as calls:
                recon.step(frame)
            counts.append(len(calls))
    recon.finish()
    assert counts[0] == 0 and counts[1] == CPU_FAST_PATH_SYNCS_PER_STEP - 1
    assert set(counts[2:]) == {CPU_FAST_PATH_SYNCS_PER_STEP}, counts


# ---------------------------------------------------------------------- precision
@pytest.mark.usefixtures("without_typecheck")
def test_bf16_warns_once_on_cpus_without_bf16_and_stays_within_tolerance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model("spann3r_tiny")
    frames = _frames("spann3r_tiny")[None]
    monkeypatch.setattr(cpu_module, "_bf16_warned", False)
    native = cpu_features().native_bf16
    if native:
        fast = optimize_for_inference(model, dtype=torch.bfloat16)
    else:
        with pytest.warns(RuntimeWarning, match="no bf16 instructions.*5x SLOWER"):
            fast = optimize_for_inference(model, dtype=torch.bfloat16)
        with warnings.catch_warnings():  # the second request is quiet
            warnings.simplefilter("error")
            optimize_for_inference(model, dtype=torch.bfloat16)
    assert fast.inference_plan.wrappers == ["autocast"]
    with torch.inference_mode():
        ref = model(frames)
        out = fast(frames)
    assert out.pts3d.dtype == torch.float32
    assert _relative_error(out.pts3d, ref.pts3d) < BF16_TOL
    results = sm.inference.OnlineReconstructor(fast).run(frames[0])
    assert _relative_error(torch.stack([r.pts3d for r in results]), ref.pts3d[0]) < BF16_TOL


@pytest.mark.usefixtures("without_typecheck")
def test_bf16_weights_cast_once_give_autocasts_outputs_bit_for_bit() -> None:
    """The linears of the autocast blocks hold bf16 weights (no cast kernel per call); autocast
    over the float32 weights computes exactly the same numbers. The heads, the original model
    and its parameters are untouched, and the plan tracks the cast layers' sources."""
    from spatialmem.optimize import core

    model = _model("spann3r_small_synthetic")  # linear heads: they must stay float32
    frames = _frames("spann3r_small_synthetic", n=3)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 emulated on this CPU
        fast = optimize_for_inference(model, dtype=torch.bfloat16, backend="eager")
    plan = fast.inference_plan
    linears = [n for n, m in fast.named_modules() if type(m) is nn.Linear]
    heads = [n for n in linears if n.startswith(("dust3r.head1.", "dust3r.head2."))]
    assert heads and sorted(plan.cast) == sorted(set(linears) - set(heads))
    assert all(fast.get_submodule(n).weight.dtype == torch.bfloat16 for n in plan.cast)
    assert all(fast.get_submodule(n).weight.dtype == torch.float32 for n in heads)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert "cast to bfloat16 once" in plan.summary()

    autocast_only = core._shared_copy(model)  # the same blocks under autocast, weights float32
    for name, block in core._blocks(autocast_only):
        if not core._is_head(name):
            wrap_forward(block, autocast_forward("cpu", torch.bfloat16, torch.float32))
    with torch.inference_mode():
        want = autocast_only(frames).pts3d
        got = fast(frames).pts3d
    assert torch.equal(got, want)

    assert plan.is_current(model)
    with torch.no_grad():
        model.get_parameter(f"{plan.cast[0]}.bias").add_(1.0)
    assert not plan.is_current(model)  # a cast layer's source changed

    with warnings.catch_warnings():  # in place: the model's weights (its checkpoints) stay fp32
        warnings.simplefilter("ignore", RuntimeWarning)
        same = optimize_for_inference(model, dtype=torch.bfloat16, backend="eager", inplace=True)
    assert same is model and not same.inference_plan.cast
    assert all(
        p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point()
    )


@pytest.mark.usefixtures("without_typecheck")
def test_int8_tier_is_approximate_and_leaves_heads_in_fp32() -> None:
    model = _model("spann3r_small_synthetic")
    fast = optimize_for_inference(model, dtype=torch.qint8)
    assert set(fast.inference_plan.counts()) == {"int8"}
    assert type(fast.dust3r.head1.proj) is nn.Linear  # linear head kept exact
    frames = _frames("spann3r_small_synthetic")[None]
    with torch.inference_mode():
        ref = model(frames)
        out = fast(frames)
    assert 0 < _relative_error(out.pts3d, ref.pts3d) < INT8_TOL


# ---------------------------------------------------------------------- building blocks
@needs_onednn
@pytest.mark.parametrize("impl", ["aten", "onednn", "onednn_packed"])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_inference_linear_equals_linear(impl: str, activation: str) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(48, 80)
    x = torch.randn(2, 7, 48)
    with torch.inference_mode():
        want = layer(x)
        want = F.gelu(want) if activation == "gelu" else want
        got = InferenceLinear(layer, impl, activation=activation)(x)  # type: ignore[arg-type]
    _close(got, want)


@needs_onednn
@pytest.mark.usefixtures("without_typecheck")
def test_packed_linear_state_dict_unpacks_and_loads() -> None:
    layer = nn.Linear(16, 8, bias=False)
    packed = InferenceLinear(layer, "onednn_packed", keep_weight=False)
    assert packed.weight is None and "impl=onednn_packed" in repr(packed)
    assert torch.equal(packed.state_dict()["weight"], layer.weight.detach())
    new = torch.randn(8, 16)
    packed.load_state_dict({"weight": new})
    x = torch.randn(3, 16)
    with torch.inference_mode():
        _close(packed(x), x @ new.T)
    with pytest.raises(ValueError, match="keep_weight"):
        InferenceLinear(layer, "onednn", keep_weight=False)
    with pytest.raises(ValueError, match="impl"):
        InferenceLinear(layer, "mkl")  # type: ignore[arg-type]


@needs_onednn
def test_choose_linear_impl_measures_once() -> None:
    layer = nn.Linear(32, 64)
    impl, seconds = choose_linear_impl(layer, tokens=17)
    assert impl in seconds and set(seconds) <= {"aten", "onednn", "onednn_packed"}
    assert all(t > 0 for t in seconds.values())
    assert choose_linear_impl(layer, tokens=17) == (impl, seconds)  # cached
    assert isinstance(would_change(_model("spann3r_tiny"), tokens=6), bool)


@needs_onednn
@pytest.mark.parametrize(
    ("seconds", "want"),
    [
        ({"aten": 1.0, "onednn": 0.9, "onednn_packed": 0.88}, "aten"),  # < 15 % better
        ({"aten": 1.0, "onednn": 0.8, "onednn_packed": 0.79}, "onednn"),  # packed < 3 % better
        ({"aten": 1.0, "onednn": 0.9, "onednn_packed": 0.8}, "onednn_packed"),
        ({"aten": 1.0, "onednn": 0.8, "onednn_packed": 0.7}, "onednn_packed"),
    ],
)
def test_onednn_must_clear_its_margins(
    monkeypatch: pytest.MonkeyPatch, seconds: dict[str, float], want: str
) -> None:
    from spatialmem.optimize import linear as linear_module

    monkeypatch.setattr(linear_module, "_time_min", lambda fns, rounds, budget_s: dict(seconds))
    monkeypatch.setattr(linear_module, "_decisions", {})
    impl, times = choose_linear_impl(nn.Linear(8, 8), tokens=3)
    assert impl == want
    copies = len(linear_module._weight_copies(nn.Linear(8, 8)))
    assert times == pytest.approx({k: v / copies for k, v in seconds.items()})


def test_linears_are_timed_on_cold_weights() -> None:
    from spatialmem.optimize import linear as linear_module

    small, large = nn.Linear(32, 64), nn.Linear(2048, 4096)  # 8 KiB and 32 MiB of weight
    budget = linear_module._cold_cache_bytes()
    for layer in (small, large):
        copies = linear_module._weight_copies(layer)
        assert copies[0] is layer
        total = sum(c.weight.numel() * c.weight.element_size() for c in copies)
        assert total >= budget or len(copies) == linear_module._MAX_COPIES
        ptrs = {c.weight.data_ptr() for c in copies}
        assert len(ptrs) == len(copies)  # distinct memory, the same values
        assert all(torch.equal(c.weight, layer.weight) for c in copies)
        assert all(torch.equal(c.bias, layer.bias) for c in copies)


def test_cold_timing_uses_the_models_own_layers_before_clones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from spatialmem.optimize import linear as linear_module

    monkeypatch.setattr(linear_module, "_cold_cache_bytes", lambda: 10 * 64 * 32 * 4)  # 10 layers
    layer = nn.Linear(32, 64)
    peers = [nn.Linear(32, 64) for _ in range(3)]
    others = [nn.Linear(32, 64, bias=False), nn.Linear(64, 32), nn.Linear(32, 64).double()]
    copies = linear_module._weight_copies(layer, [*others, peers[0], layer, *peers[1:]])
    assert len(copies) == 10 and copies[0] is layer
    assert copies[1:4] == peers, "same-shape layers first, each once, other shapes ignored"
    assert all(torch.equal(c.weight, layer.weight) for c in copies[4:]), "then clones"
    many = [nn.Linear(32, 64) for _ in range(20)]
    assert linear_module._weight_copies(layer, many)[1:] == many[:9], "no clone when enough"


def test_model_measurement_passes_each_layer_its_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    from spatialmem.optimize import core

    seen: dict[tuple[int, ...], int] = {}

    def fake_choose(layer: nn.Linear, **kwargs: object) -> tuple[str, dict[str, float]]:
        peers = kwargs["peers"]
        assert all(p.weight.shape == layer.weight.shape for p in peers)  # type: ignore[attr-defined]
        seen[tuple(layer.weight.shape)] = len(peers)  # type: ignore[arg-type]
        return "aten", {}

    monkeypatch.setattr(core, "choose_linear_impl", fake_choose)
    monkeypatch.setattr(core, "onednn_linear_available", lambda dtype: True)
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 8), nn.Linear(8, 16))
    core._decide(model, torch.float32, "auto", torch.device("cpu"), False, None, 4)
    assert seen == {(16, 8): 2, (8, 16): 1}


def test_cpu_features_read_from_torch() -> None:
    cpu = cpu_features()
    assert cpu.capability == torch.backends.cpu.get_cpu_capability()
    assert isinstance(cpu.native_bf16, bool) and cpu.threads == torch.get_num_threads()
    if cpu.avx512_bf16 or cpu.amx_bf16:
        assert cpu.native_bf16


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "fastest"}, ValueError, "`backend`"),
        ({"dtype": "bf16"}, TypeError, "`dtype`"),
        ({"dtype": torch.float16}, ValueError, "`dtype`"),
        ({"dtype": torch.int32}, ValueError, "`dtype`"),
        ({"backend": "cuda_graph"}, ValueError, "cuda_graph"),
        ({"tokens": 0}, ValueError, "`tokens`"),
        ({"dtype": torch.qint8, "backend": "onednn"}, ValueError, "qint8"),
    ],
)
@pytest.mark.usefixtures("without_typecheck")
def test_bad_arguments_are_named(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        optimize_for_inference(_model("spann3r_tiny"), **kwargs)


@pytest.mark.usefixtures("without_typecheck")
def test_bad_models_are_refused() -> None:
    with pytest.raises(TypeError, match="`model`"):
        optimize_for_inference("spann3r_tiny")  # type: ignore[type-var]
    with torch.device("meta"):
        meta = sm.create_model("spann3r_tiny")
    with pytest.raises(ValueError, match="meta"):
        optimize_for_inference(meta)
    with pytest.raises(ValueError, match="float32"):
        optimize_for_inference(_model("spann3r_tiny").double())
    fast = optimize_for_inference(_model("spann3r_tiny"), backend="eager")
    with pytest.raises(ValueError, match="already optimised"):
        optimize_for_inference(fast)


class _FakeCapture:
    """CPU stand-in for a CUDA graph: 'replay' runs the call again into the same outputs."""

    recorded = 0

    def capture(self, fn):
        type(self).recorded += 1
        self.fn = fn
        self.out = fn()
        return self.out

    def replay(self) -> None:
        new = self.fn()
        self.out.copy_(new)


def test_graphed_call_records_per_signature_and_returns_fresh_outputs() -> None:
    calls = []

    def block(x: torch.Tensor, scale: int) -> torch.Tensor:
        calls.append(scale)
        return x * scale + 1

    _FakeCapture.recorded = 0
    graphed = GraphedCall(block, "block", make_capture=_FakeCapture)
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    with torch.inference_mode():
        out_a = graphed(a, 2)
        out_b = graphed(b, 2)
        assert _FakeCapture.recorded == 1
        _close(out_a, a * 2 + 1)
        _close(out_b, b * 2 + 1)  # a's output was not overwritten: outputs are clones
        _close(graphed(a, 3), a * 3 + 1)
        graphed(torch.randn(4, 3), 3)
        assert _FakeCapture.recorded == 3  # a new scale and a new shape
    with torch.enable_grad():
        graphed(a, 2)  # autograd on: eager, nothing recorded
    assert _FakeCapture.recorded == 3

    class Broken:
        def capture(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    eager = GraphedCall(block, "block", make_capture=Broken)
    with torch.inference_mode():
        _close(eager(a, 2), a * 2 + 1)  # falls back to eager
        _close(eager(a, 2), a * 2 + 1)


def test_a_graphed_block_records_anew_when_its_mode_changes() -> None:
    """The module is found beneath the autocast wrapper, and its train/eval mode is part of the
    signature: dropout recorded in eval mode is not replayed in train mode."""
    block = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).eval()
    wrap_forward(block, autocast_forward("cpu", torch.bfloat16, torch.float32))
    wrap_forward(block, graph_forward("block", make_capture=_FakeCapture))
    assert block.forward.graphed_call.owner is block
    _FakeCapture.recorded = 0
    x = torch.randn(2, 3)
    with torch.inference_mode():
        block(x)
        block(x)
        assert _FakeCapture.recorded == 1
        block.train()
        block(x)
        assert _FakeCapture.recorded == 2


def test_auto_records_cuda_graphs_for_spann3r_on_cuda_only() -> None:
    """``"auto"`` on CUDA records a Spann3R's blocks and memory (measured 1.5x in float32 on an
    H200, outputs identical); elsewhere, and for other models, it is what was asked."""
    from spatialmem.optimize.core import _blocks_backend

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    spann3r, pair = _model("spann3r_tiny"), sm.create_model("dust3r_tiny_linear")
    assert _blocks_backend(spann3r, "auto", cuda) == "cuda_graph"
    assert _blocks_backend(spann3r, "auto", cpu) == "auto"
    assert _blocks_backend(pair, "auto", cuda) == "auto"
    assert _blocks_backend(spann3r, "eager", cuda) == "eager"


class _StructCapture:
    """CPU stand-in for a CUDA graph whose outputs are any structure of tensors (a memory
    state): 'replay' runs the call again on the static inputs and copies into the outputs."""

    recorded = 0

    def capture(self, fn):
        type(self).recorded += 1
        self.fn, self.out = fn, fn()
        return self.out

    def replay(self) -> None:
        for old, new in zip(_tensors(self.out), _tensors(self.fn()), strict=True):
            if old.data_ptr() != new.data_ptr():
                old.copy_(new)


def _tensors(obj) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    map_tensors(obj, lambda t: found.append(t) or t)
    return found


@pytest.mark.usefixtures("without_typecheck")
def test_graphed_memory_read_and_update_equal_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory's read and update replayed per signature (the state is an input like any
    tensor) give eager's stream and are recorded once each: the state's signature does not
    change from step to step. The memory takes its CUDA code path (no host reads of counts),
    and every frame is written into a small long-term memory, so consolidation runs too."""
    from spatialmem.memory import spatial_memory

    monkeypatch.setattr(spatial_memory, "_host_checks_ok", lambda t: False)
    frames = _frames("spann3r_tiny", n=10)
    eager, graphed = _model("spann3r_tiny"), _model("spann3r_tiny")
    for model in (eager, graphed):
        config = dataclasses.replace(model.memory.config, long_mem_tokens=12, sim_thresh=2.0)
        model.memory.config = config
    with torch.inference_mode():
        ref = eager(frames[None], return_memory=True)
    _StructCapture.recorded = 0
    for method in ("read", "update"):
        call = GraphedCall(getattr(graphed.memory, method), method, make_capture=_StructCapture)
        setattr(graphed.memory, method, call)
    recon = sm.inference.OnlineReconstructor(graphed, optimize=False)
    results = recon.run(frames)
    _close(torch.stack([r.pts3d for r in results]), ref.pts3d[0], 1e-5)
    assert _StructCapture.recorded == 2  # one read, one update, for the whole stream
    assert int(recon.state.long_tokens[0]) <= 12 < 9 * 6  # it consolidated
    graphed.memory.train()
    with torch.no_grad():  # train mode is another signature: recorded anew, not replayed
        state = graphed.memory.init_state(1, 6)
        key = torch.randn(1, 6, state.keys.shape[-1])
        graphed.memory.update(state, key, key)
    assert _StructCapture.recorded == 3


# ---------------------------------------------------------------------- CUDA
@needs_cuda
@pytest.mark.usefixtures("without_typecheck")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["eager", "cuda_graph", "auto"])
def test_cuda_paths_equal_eager(dtype: torch.dtype, backend: str) -> None:
    model = _model("spann3r_small_synthetic").cuda()
    frames = _frames("spann3r_small_synthetic", n=6).cuda()
    fast = optimize_for_inference(model, dtype=dtype, backend=backend)
    with torch.inference_mode():
        ref = model(frames[None])
    results = sm.inference.OnlineReconstructor(fast).run(frames)
    pts = torch.stack([r.pts3d for r in results])
    if dtype == torch.float32:
        _close(pts, ref.pts3d[0], 1e-4)
    else:
        assert _relative_error(pts, ref.pts3d[0]) < BF16_TOL


@needs_cuda
@pytest.mark.usefixtures("without_typecheck")
@pytest.mark.parametrize("backend", ["eager", "cuda_graph"])
def test_cuda_stream_has_no_host_sync(backend: str) -> None:
    model = _model("spann3r_small_synthetic").cuda()
    fast = optimize_for_inference(model, dtype=torch.bfloat16, backend=backend)
    frames = _frames("spann3r_small_synthetic", n=8).cuda()
    recon = sm.inference.OnlineReconstructor(fast)
    with sm.value_checks(False):
        recon.run(frames[:3])  # record the graphs (allocations, cuBLAS handles) first
        recon.reset()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for frame in frames:
                recon.step(frame)
            recon.finish()
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(
    os.environ.get("SPATIALMEM_TEST_COMPILE") != "1",
    reason="compiles with inductor for minutes; set SPATIALMEM_TEST_COMPILE=1",
)
@pytest.mark.slow
@pytest.mark.usefixtures("without_typecheck")
def test_inductor_path_equals_eager() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model("spann3r_tiny").to(device)
    frames = _frames("spann3r_tiny", n=4).to(device)
    fast = optimize_for_inference(model, backend="inductor")
    with torch.inference_mode():
        ref = model(frames[None])
    results = sm.inference.OnlineReconstructor(fast).run(frames)
    _close(torch.stack([r.pts3d for r in results]), ref.pts3d[0], 1e-4)


@pytest.mark.usefixtures("without_typecheck")
def test_cli_optimises_in_place_unless_told_not_to() -> None:
    from spatialmem import cli

    parser = cli.build_parser()
    for argv in (["reconstruct", "a.png", "b.png"], ["evaluate"], ["demo"]):
        assert parser.parse_args(argv).optimize is True
        assert parser.parse_args([*argv, "--no-optimize"]).optimize is False
    model = _model("spann3r_tiny")
    eager = cli._inference_model(model, False, (32, 48))
    assert eager is model and not model.inference_plan.changed
    assert model.inference_plan.backend == "eager"
    other = _model("spann3r_tiny")
    assert cli._inference_model(other, True, (32, 48)) is other
    assert other.inference_plan.backend == "auto" and other.inference_plan.tokens == 6
