"""MemoryState / MemoryConfig API, argument checks, torch.compile and device behaviour."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memory_driver import random_stream, run_stream
from spatialmem.interop import memory_config_from_official
from spatialmem.memory import MemoryConfig, MemoryState, SpatialMemory

REPO = Path(__file__).resolve().parents[1]


def _filled(steps: int = 5, training: bool = False) -> tuple[SpatialMemory, MemoryState]:
    torch.manual_seed(0)
    memory = SpatialMemory(dim=8, work_mem_frames=2, long_mem_tokens=8).train(training)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state, _ = run_stream(memory, memory.init_state(2, 3), random_stream(g, steps, 2, 3, 8))
    return memory, state


def test_config_defaults_are_the_papers() -> None:
    c = MemoryConfig(dim=1024)
    assert (c.work_mem_frames, c.long_mem_tokens, c.resolved_top_k) == (5, 4000, 4000)
    defaults = (c.attn_clip, c.sim_thresh, c.attn_dropout, c.resolved_protect_age)
    assert defaults == (5e-4, 0.95, 0.15, 10)
    assert c.capacity(196) == 4000 + 6 * 196
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.dim = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 8, "work_mem_frames": 0}, "work_mem_frames"),
        ({"dim": 8, "top_k": 5000}, "top_k"),
        ({"dim": 8, "attn_clip": 1.5}, "attn_clip"),
        ({"dim": 8, "attn_dropout": -0.1}, "attn_dropout"),
        ({"dim": 8, "long_mem_tokens": -1}, "long_mem_tokens"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MemoryConfig(**kwargs)


def test_from_official_arguments() -> None:
    args = {"long_mem_size": 70, "work_mem_size": 2, "attn_thresh": 0, "sim_thresh": 1.0,
            "top_k": 70, "mem_dropout_p": None, "constructed_by": "ignored"}  # fmt: skip
    c = memory_config_from_official(args, dim=64, norm_eps=1e-5)
    assert (c.long_mem_tokens, c.work_mem_frames, c.resolved_top_k) == (70, 2, 70)
    assert (c.attn_clip, c.sim_thresh, c.attn_dropout) == (0.0, 1.0, 0.0)
    memory = SpatialMemory(c, sim_thresh=0.9)
    assert memory.config.sim_thresh == 0.9 and memory.norm_q.normalized_shape == (64,)
    assert sorted(memory.state_dict()) == sorted(
        f"norm_{n}.{p}" for n in "qkv" for p in ("weight", "bias")
    )


def test_state_to_detach_clone() -> None:
    _, state = _filled()
    half = state.to(dtype=torch.float16)
    assert half.keys.dtype == torch.float16 and half.attn.dtype == torch.float16
    assert half.age.dtype == torch.long and half.valid.dtype == torch.bool
    c = state.clone()
    assert c.keys.data_ptr() != state.keys.data_ptr() and torch.equal(c.keys, state.keys)
    d = state.replace(keys=state.keys.requires_grad_()).detach()
    assert not d.keys.requires_grad
    assert (state.batch_size, state.dim, state.num_patches) == (2, 8, 3)
    assert state.capacity == 8 + 3 * 3
    assert torch.equal(state.working_mask() | state.long_term_mask(), state.valid)
    assert int(state.working_mask().sum()) == 2 * 2 * 3


def test_state_dict_round_trip_and_errors() -> None:
    memory, state = _filled()
    sd = state.state_dict()
    back = MemoryState.from_state_dict(sd)
    for name, t in sd.items():
        if isinstance(t, torch.Tensor):
            assert torch.equal(getattr(back, name), t) and getattr(back, name) is not t
    other = memory.init_state(2, 4)
    with pytest.raises(ValueError, match="num_patches"):
        other.load_state_dict(sd)
    small = SpatialMemory(dim=8, long_mem_tokens=1).init_state(2, 3)
    with pytest.raises(ValueError, match="shape"):
        small.load_state_dict(sd)
    with pytest.raises(KeyError, match="age"):
        MemoryState.from_state_dict({k: v for k, v in sd.items() if k != "age"})


def test_state_validation(without_typecheck: None) -> None:
    state = MemoryState.empty(2, 3, 10, 8)
    with pytest.raises(ValueError, match=r"MemoryState\.values"):
        state.replace(values=torch.zeros(2, 9, 8))
    with pytest.raises(TypeError, match=r"MemoryState\.age"):
        state.replace(age=torch.zeros(2, 10))
    with pytest.raises(TypeError, match=r"MemoryState\.valid"):
        state.replace(valid=torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="capacity"):
        MemoryState.empty(1, 11, 10, 8)


def test_bad_inputs_name_the_argument(without_typecheck: None) -> None:
    memory, state = _filled()
    with pytest.raises(ValueError, match=r"`query` must have size 8"):
        memory.read(state, torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match=r"`key`.*num_patches=3"):
        memory.update(state, torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="same batch size"):
        memory.update(state, torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    with pytest.raises(TypeError, match="`value`"):
        memory.write(state, torch.randn(2, 3, 8), torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="`insert`"):
        memory.write(
            state, torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.ones(3, dtype=torch.bool)
        )


def test_type_annotations_are_checked_under_pytest() -> None:
    """The suite runs with jaxtyping + beartype: inconsistent shapes are caught at the call."""
    from jaxtyping import TypeCheckError

    memory = SpatialMemory(dim=8).eval()
    # Not any exception: without the hook torch itself fails later ("size of tensor a ...").
    with pytest.raises(TypeCheckError):
        memory.attention(torch.randn(2, 3, 5), torch.ones(2, 6, dtype=torch.bool))


COMPILE_SCRIPT = """
import torch
from spatialmem.memory import SpatialMemory

torch.manual_seed(0)
memory = SpatialMemory(dim=8, work_mem_frames=2, long_mem_tokens=6).eval()


def step(state, q, k, v):
    fused, state = memory.read(state, q)
    return fused, memory.update(state, k, v)


compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
a, b = memory.init_state(2, 3), memory.init_state(2, 3)
g = torch.Generator().manual_seed(0)
counts = []
with torch.no_grad():
    for _ in range(9):
        q, k, v = (torch.randn(2, 3, 8, generator=g) for _ in range(3))
        fa, a = compiled(a, q, k, v)
        fb, b = step(b, q, k, v)
        torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-5)
        assert torch.equal(a.count, b.count) and torch.equal(a.valid, b.valid)
        assert torch.equal(a.age, b.age) and torch.equal(a.keys[a.valid], b.keys[b.valid])
        counts.append(int(b.count[0]))
assert counts == [3, 6, 9, 12, 6, 9, 12, 6, 9], counts  # two consolidations
print("compiled ok")
"""


def test_torch_compile_full_graph() -> None:
    """A read + update step compiles as one graph (``fullgraph=True``: no graph break) and
    matches eager through consolidation events. Run in a fresh interpreter, as users import the
    package: without the test suite's runtime type-check hook, whose ``isinstance`` checks
    dynamo cannot trace."""
    res = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "compiled ok" in res.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_syncs_on_cuda() -> None:
    memory = SpatialMemory(dim=16, work_mem_frames=2, long_mem_tokens=12).eval().cuda()
    state = memory.init_state(2, 4)
    g = torch.Generator().manual_seed(0)
    stream = [tuple(t.cuda() for t in s) for s in random_stream(g, 12, 2, 4, 16)]
    from spatialmem._checks import value_checks

    with torch.no_grad(), value_checks(False):
        run_stream(memory, state, stream[:1])  # warm-up (lazy CUDA init)
        torch.cuda.set_sync_debug_mode("error")
        try:
            run_stream(memory, state, stream[1:])
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_benchmark_script_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_memory.py"), "--steps", "20",
           "--P", "4", "--C", "8", "--long-mem", "40", "--json", str(out), "--window", "5",
           "--reps", "1"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert out.exists() and "spatialmem" in res.stdout
