"""Shared helpers for the memory tests: build a memory from a fixture and replay its stream."""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from spatialmem.interop import memory_config_from_official
from spatialmem.memory import MemoryState, SpatialMemory


def memory_from_fixture(fx: dict[str, Any]) -> SpatialMemory:
    """The memory an official fixture ran with, norms loaded, in the fixture's mode."""
    cfg = fx["config"]
    dim = fx["intermediates"]["per_step"][0]["feat_k1"].shape[-1]
    config = memory_config_from_official(cfg["memory"], dim=dim, norm_eps=cfg["norm_qkv_eps"])
    memory = SpatialMemory(config)
    sd = fx["state_dict"]
    memory.load_state_dict(
        {
            f"{n}.{p}": sd[f"{n}.{p}"]
            for n in ("norm_q", "norm_k", "norm_v")
            for p in ("weight", "bias")
        }
    )
    memory.train(bool(cfg["run"]["training"]))
    return memory


@dataclass
class StepRecord:
    """What our memory did at one step of a replayed fixture."""

    sims: Tensor | None = None
    insert: Tensor | None = None
    pruned: Tensor | None = None
    weights: Tensor | None = None
    fused: Tensor | None = None
    keep: Tensor | None = None
    before_prune: MemoryState | None = None
    after: MemoryState | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def replay(memory: SpatialMemory, fx: dict[str, Any]) -> list[StepRecord]:
    """Drive ``memory`` with a fixture's logged queries, keys and values, step by step.

    Step ``i`` reads with step ``i-1``'s view-2 key (``feat_k2``) and then inserts step ``i``'s
    view-1 key (``feat_k1``) with value ``cur_v + key``, exactly as the official forward does.
    """
    per_step = fx["intermediates"]["per_step"]
    b, p, _ = per_step[0]["feat_k1"].shape
    state = memory.init_state(b, p)
    records = []
    with torch.no_grad():
        for i, st in enumerate(per_step):
            rec = StepRecord()
            if i > 0:
                query = per_step[i - 1]["feat_k2"]
                rec.weights = memory.attention_weights(state, query)
                rec.fused, state = memory.read(state, query)
            key = st["feat_k1"]
            value = st["cur_v"] + key
            if not memory.training:
                rec.sims = memory.similarity(state, key)
            rec.insert = memory.should_insert(state, key)
            state = memory.write(state, key, value, rec.insert)
            if not memory.training:
                rec.pruned = state.long_tokens > memory.config.long_mem_tokens
                if bool(rec.pruned.any()):
                    rec.before_prune = state.clone()
                    rec.keep = memory.keep_mask(state)
                state = memory.consolidate(state)
            rec.after = state.clone()
            records.append(rec)
    return records


def clipped_count(weights: Tensor, state_valid: Tensor) -> int:
    """Entries of valid tokens that the clip set to zero."""
    return int(((weights == 0) & state_valid[:, None, :]).sum())


def valid_rows(state: MemoryState, b: int, name: str) -> Tensor:
    """The valid prefix of one sample's field."""
    return getattr(state, name)[b, : int(state.count[b])]


def random_stream(
    generator: torch.Generator, steps: int, batch: int, patches: int, dim: int
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``steps`` random (query, key, value) triples."""
    out = []
    for _ in range(steps):
        q, k, v = (torch.randn(batch, patches, dim, generator=generator) for _ in range(3))
        out.append((q, k, v))
    return out


def run_stream(
    memory: SpatialMemory, state: MemoryState, stream: list[tuple[Tensor, Tensor, Tensor]]
) -> tuple[MemoryState, list[Tensor]]:
    """Read then update for every step of ``stream``; returns the final state and the reads."""
    outs = []
    for query, key, value in stream:
        fused, state = memory.read(state, query)
        outs.append(fused)
        state = memory.update(state, key, value)
    return state, outs


def check_invariants(memory: SpatialMemory, state: MemoryState) -> None:
    """Structural invariants every state must satisfy (raises AssertionError)."""
    x = state.capacity
    rows = torch.arange(x)
    assert bool((state.count >= 0).all()) and bool((state.count <= x).all())
    assert torch.equal(state.valid, rows[None, :] < state.count[:, None]), "valid is not a prefix"
    assert bool((state.age[state.valid] >= 0).all())
    for b in range(state.batch_size):
        ages = valid_rows(state, b, "age")
        assert bool((ages[1:] <= ages[:-1]).all()), "rows are not in chronological order"
    if not memory.training:
        p = state.num_patches
        assert bool((state.work_frames <= memory.config.work_mem_frames).all())
        assert torch.equal(state.count, state.work_frames * p + state.long_tokens)
        assert bool((state.long_tokens <= memory.config.long_mem_tokens).all())
        assert bool((state.count <= memory.config.capacity(p) - p).all())


__all__ = [
    "StepRecord",
    "check_invariants",
    "clipped_count",
    "memory_from_fixture",
    "random_stream",
    "replay",
    "run_stream",
    "valid_rows",
]
