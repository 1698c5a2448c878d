"""Checks run once at the door: public entry points validate, the per-frame loop does not.

The host-synchronisation counts are pinned: a change that adds a ``.item()``/``bool(tensor)`` to
the streaming step (a GPU stall per frame) fails here and must be justified by updating the pin.
"""

import contextlib
from collections.abc import Iterator

import pytest
import torch

import spatialmem as sm
from spatialmem._checks import checks_active, internal_calls
from spatialmem.layers import rope as rope_module
from spatialmem.memory import MemoryState, SpatialMemory

_SYNC_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Record every tensor-to-Python conversion (each one is a device sync on a GPU)."""
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in _SYNC_METHODS}

    def wrap(name: str):
        original = originals[name]

        def counted(self, *args, **kwargs):
            calls.append(name)
            return original(self, *args, **kwargs)

        return counted

    try:
        for name in _SYNC_METHODS:
            setattr(torch.Tensor, name, wrap(name))
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.fixture(scope="module")
def tiny() -> sm.Spann3R:
    torch.manual_seed(0)
    return sm.create_model("spann3r_tiny").eval()


def _frames(n: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _syncs_per_step(model: sm.Spann3R, n: int = 8) -> list[int]:
    recon = sm.inference.OnlineReconstructor(model)
    counts = []
    for frame in _frames(n):
        with count_host_syncs() as calls:
            recon.step(frame)
        counts.append(len(calls))
    recon.finish()
    return counts


@pytest.mark.usefixtures("without_typecheck")
def test_streaming_step_host_syncs_are_pinned(tiny: sm.Spann3R) -> None:
    # With value checks on, the frame's NaN/Inf check is the one sync at the door (bool of the
    # isfinite reduction). The rest are the memory's CPU-only fast paths (reading the token
    # counts, free on the CPU): none of them runs on another device (see test_memory_state's
    # CUDA sync-debug test).
    with sm.value_checks(False):
        unchecked = _syncs_per_step(tiny)
    checked = _syncs_per_step(tiny)
    # Frame 0 waits for frame 1; the first step has nothing to read.
    assert unchecked[:2] == [0, CPU_FAST_PATH_SYNCS_PER_STEP - 1]
    steady = unchecked[2:]
    assert len(set(steady)) == 1, f"host syncs vary from step to step: {unchecked}"
    assert steady[0] == CPU_FAST_PATH_SYNCS_PER_STEP, unchecked
    assert [c - u for c, u in zip(checked, unchecked, strict=True)] == [1] * len(checked)


# Per streaming step on the CPU, value checks off: the memory's read narrows to the valid rows
# (1), the similarity gate's lockstep test (3), the write's "every sample inserts" test (1) and
# the eviction and consolidation "nothing to do" tests (2).
CPU_FAST_PATH_SYNCS_PER_STEP = 7


def test_internal_calls_turn_checks_off_and_nest() -> None:
    assert checks_active()
    with internal_calls():
        assert not checks_active()
        with internal_calls():
            assert not checks_active()
        assert not checks_active()
    assert checks_active()


@pytest.mark.usefixtures("without_typecheck")
def test_rope_checks_only_when_called_directly(
    tiny: sm.Spann3R, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = rope_module._check_rope_inputs
    monkeypatch.setattr(
        rope_module, "_check_rope_inputs", lambda *a: calls.append(1) or original(*a)
    )
    with torch.no_grad():
        tiny(_frames(3)[None])
    assert calls == []
    rope = rope_module.RoPE2D(100.0)
    rope(torch.randn(1, 2, 4, 8), torch.zeros(1, 4, 2, dtype=torch.long))
    assert calls == [1]


@pytest.mark.usefixtures("without_typecheck")
def test_memory_state_and_tokens_validated_at_the_door_only(
    tiny: sm.Spann3R, monkeypatch: pytest.MonkeyPatch
) -> None:
    validations: list[int] = []
    token_checks: list[str] = []
    original_validate = MemoryState.validate
    original_tokens = SpatialMemory._check_tokens

    def validate(self: MemoryState) -> None:
        validations.append(1)
        original_validate(self)

    def check_tokens(self: SpatialMemory, name: str, x: object, state: MemoryState) -> None:
        token_checks.append(name)
        original_tokens(self, name, x, state)

    monkeypatch.setattr(MemoryState, "validate", validate)
    monkeypatch.setattr(SpatialMemory, "_check_tokens", check_tokens)
    with torch.no_grad():
        tiny(_frames(5)[None])
    assert validations == [1]  # the empty state, once per sequence
    assert token_checks == []

    memory = SpatialMemory(dim=8).eval()
    state = memory.init_state(1, 4)
    key = torch.randn(1, 4, 8)
    validations.clear()
    state = memory.update(state, key, key)
    assert token_checks == ["key", "value"]  # once each, not again inside write()
    token_checks.clear()
    memory.read(state, key)
    assert token_checks == ["query"]
    state.replace(attn=state.attn)  # a user's replace is validated
    assert validations == [1]


@pytest.mark.usefixtures("without_typecheck")
def test_predicted_points_are_not_value_checked(tiny: sm.Spann3R) -> None:
    # The memory encoder embeds the *predicted* pointmap: no NaN check (and no sync) there,
    # and no misleading "`img` contains NaN" error from the patch embedding.
    pts = torch.full((1, 32, 32, 3), float("nan"))
    with torch.no_grad(), internal_calls():
        out = tiny.memory_encoder(pts)
    assert torch.isnan(out).all()
    with pytest.raises(ValueError, match="`img` contains"):
        tiny.memory_encoder.patch_embed(pts.permute(0, 3, 1, 2))
