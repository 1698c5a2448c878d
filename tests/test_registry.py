"""Tests over the registry: every preset of ``spatialmem.list_models()`` is checked.

As in timm's tests, the registry is the parametrisation, so registering a preset is enough to
have it tested. Every preset is built on the meta device (no memory is allocated) and its
official checkpoint layout round-trips through ``load_checkpoint``. Presets small enough for a
quick CPU run (fewer than ``CPU_MAX_PARAMS`` parameters, counted on the meta device) also run a
forward and a backward pass on a tiny input and save/load their weights; the published full-size
presets get the meta-device tests only.
"""

import functools
import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import spatialmem as sm
from spatialmem.interop import official_state_dict
from spatialmem.models import DUSt3R, Spann3R

MODELS = sm.list_models()
CPU_MAX_PARAMS = 30_000_000
"""Presets below this many parameters run on CPU in these tests (the tiny ones: < 1M)."""

# Parameters that no forward pass uses, so they legitimately get no gradient: the decoder's mask
# token (CroCo masked pre-training only) and, in DPT heads, the first residual unit of the
# coarsest fusion block (it would refine a skip input that the coarsest level does not have).
UNUSED = re.compile(r"(^|\.)decoder\.mask_token$|(^|\.)head[12]\.refinenet\.3\.res_unit1\.")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the tensors here are tiny, so a second thread only adds barrier
    waits, which become very slow when the cores are shared with other processes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return sm.create_model(name)


@functools.cache
def _num_params(name: str) -> int:
    return sum(p.numel() for p in _meta(name).parameters())


SMALL = [name for name in MODELS if _num_params(name) < CPU_MAX_PARAMS]


def _patch_size(model: nn.Module) -> int:
    if isinstance(model, Spann3R):
        return model.config.dust3r.patch_size
    if isinstance(model, DUSt3R):
        return model.config.patch_size
    raise NotImplementedError(f"add a test recipe for {type(model).__name__} in {__file__}")


def _conf_min(model: nn.Module) -> float:
    config = model.config.dust3r if isinstance(model, Spann3R) else model.config
    return config.conf_mode.vmin


def _inputs(model: nn.Module, seed: int = 0) -> tuple[Tensor, ...]:
    """A tiny landscape input (2 x 3 patches), batch 2; Spann3R gets 3 frames, so that the
    memory is read once (step 1) and every memory parameter takes part."""
    p = _patch_size(model)
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, Spann3R):
        return (torch.rand(2, 3, 3, 2 * p, 3 * p, generator=g) * 2 - 1,)
    return tuple(torch.rand(2, 3, 2 * p, 3 * p, generator=g) * 2 - 1 for _ in range(2))


def _outputs(model: nn.Module, inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """Every prediction tensor of a forward pass, by name."""
    out = model(*inputs)
    if isinstance(model, Spann3R):
        got = {"pts3d": out.pts3d, "conf": out.conf}
        if out.steps is not None:
            got["steps.pts_view2"] = out.steps.pts_view2
            got["steps.conf_view2"] = out.steps.conf_view2
        return got
    return {
        "view1.pts3d": out.view1.pts3d,
        "view1.conf": out.view1.conf,
        "view2.pts3d": out.view2.pts3d,
        "view2.conf": out.view2.conf,
    }


def _build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return sm.create_model(name)


# ----------------------------------------------------------------------------- every preset
def test_registry_has_presets_for_the_cpu_tests() -> None:
    """The CPU tests below need at least one small preset of each model family."""
    families = {type(_meta(name)) for name in SMALL}
    assert {DUSt3R, Spann3R} <= families, f"small presets: {SMALL}"
    assert len(SMALL) < len(MODELS), "the published presets must be in the registry too"


@pytest.mark.parametrize("name", MODELS)
def test_builds_on_the_meta_device(name: str) -> None:
    model = _meta(name)
    assert isinstance(model, (DUSt3R, Spann3R)), type(model)
    tensors = list(model.state_dict().values())
    assert _num_params(name) > 0 and tensors
    assert all(t.is_meta for t in tensors), "a meta build allocated real storage"
    assert _patch_size(model) > 0


@pytest.mark.parametrize("name", MODELS)
def test_official_layout_round_trips_on_meta(name: str) -> None:
    """``official_state_dict`` -> ``load_checkpoint`` into a fresh model -> the same layout,
    key for key (order included) and shape for shape, aliases still shared."""
    model = _meta(name)
    sd = official_state_dict(model)
    assert len(sd) >= len(model.state_dict())  # aliases add names, nothing is dropped
    fresh = _meta(name)
    report = sm.load_checkpoint(fresh, {"model": sd, "args": None})
    assert report.layout == "official"
    assert report.missing == [] and report.unexpected == []
    assert report.loaded == len(fresh.state_dict())
    back = official_state_dict(fresh)
    assert list(back) == list(sd)
    for key, value in sd.items():
        assert back[key].shape == value.shape and back[key].dtype == value.dtype, key

    def alias_groups(state: dict[str, Tensor]) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for key, value in state.items():
            groups.setdefault(id(value), []).append(key)
        return sorted(g for g in groups.values() if len(g) > 1)

    assert alias_groups(back) == alias_groups(sd)
    ours = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    assert {k: (v.shape, v.dtype) for k, v in fresh.state_dict().items()} == ours


# ----------------------------------------------------------------------------- small presets
@pytest.mark.parametrize("name", SMALL)
def test_forward_shapes_and_finite_values(name: str) -> None:
    model = _build(name, 0).eval()
    inputs = _inputs(model)
    with torch.no_grad():
        out = _outputs(model, inputs)
    if isinstance(model, Spann3R):
        b, t, _, h, w = inputs[0].shape
        assert out["pts3d"].shape == (b, t, h, w, 3) and out["conf"].shape == (b, t, h, w)
    else:
        b, _, h, w = inputs[0].shape
        for view in ("view1", "view2"):
            assert out[f"{view}.pts3d"].shape == (b, h, w, 3), view
            assert out[f"{view}.conf"].shape == (b, h, w), view
    for key, value in out.items():
        assert value.dtype == torch.float32, key
        assert bool(torch.isfinite(value).all()), f"{key} is not finite"
        if key.endswith("conf"):
            assert bool((value >= _conf_min(model)).all()), key


@pytest.mark.parametrize("name", SMALL)
def test_backward_reaches_every_used_parameter(name: str) -> None:
    model = _build(name, 0).train()
    out = _outputs(model, _inputs(model))
    if isinstance(model, Spann3R):  # training mode returns both views of every step
        assert "steps.pts_view2" in out
    loss = sum(value.abs().mean() for value in out.values())
    loss.backward()
    unused = {n for n, _ in model.named_parameters() if UNUSED.search(n)}
    without = {n for n, p in model.named_parameters() if p.grad is None}
    assert without == unused
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert bool(torch.isfinite(p.grad).all()), f"{n}: non-finite gradient"
            assert bool(p.grad.abs().sum() > 0), f"{n}: all-zero gradient"


@pytest.mark.parametrize("name", SMALL)
def test_state_dict_save_load_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    model = _build(name, 0).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    fresh = _build(name, 1).eval()
    inputs = _inputs(model)
    with torch.no_grad():
        want = _outputs(model, inputs)
        before = _outputs(fresh, inputs)
    assert any(not torch.equal(before[k], want[k]) for k in want), "seeds gave the same weights"
    result = fresh.load_state_dict(torch.load(path, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        got = _outputs(fresh, inputs)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
