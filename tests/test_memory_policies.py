"""Behaviour of the default policies, the defect fixes and training vs eval mode."""

import pytest
import torch

from conftest import assert_close
from memory_driver import check_invariants, random_stream, run_stream
from spatialmem.memory import MemoryState, SpatialMemory, ops


def test_all_clipped_row_falls_back_to_the_softmax_instead_of_nan() -> None:
    """3000 identical keys: every softmax weight is 1/3000 < 5e-4. The official code divides by a
    zero row sum (NaN); ours keeps the unclipped softmax for that row."""
    memory = SpatialMemory(dim=8).eval()
    state = memory.init_state(1, 3000, capacity=3000)
    key = torch.ones(1, 1, 8).expand(1, 3000, 8).clone()
    values = torch.randn(1, 3000, 8)
    with torch.no_grad():
        state = memory.write(state, key, values)
        query = torch.randn(1, 3000, 8)
        w = memory.attention_weights(state, query)
        fused, state = memory.read(state, query)
    assert not bool(torch.isnan(w).any()) and not bool(torch.isnan(fused).any())
    assert_close(w, torch.full_like(w, 1 / 3000), 1e-6, "fallback weights")
    mean_value = memory.norm_v(values).mean(dim=1, keepdim=True)
    assert_close(fused, mean_value + query, 1e-4, "fallback read")
    # the official rule would give NaN here
    probs = ops.masked_softmax(memory.logits(state, query), state.valid)
    official = probs.masked_fill(probs < 5e-4, 0.0)
    assert bool(torch.isnan(official / official.sum(-1, keepdim=True)).all())


def test_only_the_all_clipped_rows_fall_back() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    w = SpatialMemory(dim=8, attn_clip=0.3).eval().attention(logits, valid)
    assert_close(w[0, 0], torch.full((4,), 0.25), 0.0)  # all four (0.25) under 0.3: fallback
    assert_close(w[0, 1], torch.tensor([1.0, 0.0, 0.0, 0.0]), 0.0)


def test_empty_memory_reads_the_query_back() -> None:
    memory = SpatialMemory(dim=8).eval()
    state = memory.init_state(2, 3)
    query = torch.randn(2, 3, 8)
    fused, after = memory.read(state, query)
    assert torch.equal(fused, query)
    assert not bool(after.attn.any())


def test_working_memory_order_survives_consolidation() -> None:
    """After pruning events the working memory is still the last frames, in order, so a repeat of
    the previous frame is caught by the gate (the official top-k order compares against other
    frames)."""
    torch.manual_seed(0)
    memory = SpatialMemory(dim=16, work_mem_frames=2, long_mem_tokens=20, sim_thresh=0.95).eval()
    g = torch.Generator().manual_seed(3)
    stream = random_stream(g, 12, 1, 4, 16)
    state = memory.init_state(1, 4)
    pruned = 0
    with torch.no_grad():
        for t, (q, k, v) in enumerate(stream):
            _, state = memory.read(state, q)
            lt = int(state.long_tokens[0])
            state = memory.update(state, k, v)
            pruned += int(state.long_tokens[0]) < lt + (4 if t >= 2 else 0)
            check_invariants(memory, state)
            wm = state.keys[0, state.working_mask()[0]]
            recent = torch.cat([s[1][0] for s in stream[max(0, t - 1) : t + 1]])
            assert torch.equal(wm, recent), f"step {t}: working memory is not the last frames"
        assert pruned >= 2
        sims = memory.similarity(state, stream[-1][1])
        assert_close(sims[0, -1], torch.tensor(1.0), 1e-6)
        assert not bool(memory.should_insert(state, stream[-1][1])[0])
        assert bool(
            memory.should_insert(state, stream[0][1])[0]
        )  # long gone from the working memory


def test_gate_is_per_sample_not_batch_wide() -> None:
    memory = SpatialMemory(dim=8).eval()
    state = memory.init_state(2, 3)
    a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    with torch.no_grad():
        state = memory.update(state, a, a)
        key = torch.stack([a[0], b[1]])  # sample 0 repeats its frame, sample 1 does not
        state = memory.update(state, key, key)
    assert state.count.tolist() == [3, 6]
    assert state.work_frames.tolist() == [1, 2]
    assert state.age[0, :3].tolist() == [0, 0, 0] and state.age[1, :6].tolist() == [1] * 3 + [0] * 3


def test_strictly_greater_than_the_threshold_skips() -> None:
    memory = SpatialMemory(dim=8, sim_thresh=1.0).eval()
    state = memory.init_state(1, 2)
    key = torch.tensor([[[1.0] + [0.0] * 7, [0.0, 1.0] + [0.0] * 6]])
    with torch.no_grad():
        state = memory.update(state, key, key)
        assert float(memory.similarity(state, key)[0, 0]) == 1.0
        assert bool(memory.should_insert(state, key)[0])  # 1.0 is not > 1.0


def test_training_mode_no_gate_no_clip_dropout_no_bookkeeping() -> None:
    torch.manual_seed(0)
    memory = SpatialMemory(dim=8, attn_dropout=0.5, work_mem_frames=1, long_mem_tokens=3).train()
    state = memory.init_state(1, 2)
    key = torch.randn(1, 2, 8)
    for _ in range(3):
        state = memory.update(state, key, key)  # exact repeats are written in training
    assert int(state.count[0]) == 6 and state.work_frames.tolist() == [0]
    assert state.long_tokens.tolist() == [0]  # official: no bookkeeping, no pruning in training
    logits = 8 * torch.randn(1, 2, state.capacity)
    w = memory.attention(logits, state.valid)
    probs = ops.masked_softmax(logits, state.valid)
    kept = w != 0
    assert_close(w[kept], 2 * probs[kept], 1e-6, "inverted dropout scaling")
    assert bool((~kept & state.valid[:, None, :]).any()), "dropout dropped nothing"
    memory.eval()
    w = memory.attention(logits, state.valid)
    assert_close(w.sum(-1), torch.ones(1, 2), 1e-6)
    assert bool(((w == 0) == ((probs < 5e-4) | ~state.valid[:, None, :])).all()), "eval clips"


def test_training_mode_overflow_evicts_the_oldest_tokens() -> None:
    memory = SpatialMemory(dim=4, attn_dropout=0.0).train()
    state = memory.init_state(1, 2, capacity=5)
    frames = [torch.full((1, 2, 4), float(i)) for i in range(4)]
    for f in frames:
        state = memory.update(state, f, f)
    assert int(state.count[0]) == 5
    assert state.keys[0, :, 0].tolist() == [1.0, 2.0, 2.0, 3.0, 3.0]
    assert state.age[0].tolist() == [2, 1, 1, 0, 0]


def test_gradients_flow_through_reads_and_writes_in_training() -> None:
    torch.manual_seed(0)
    memory = SpatialMemory(dim=8, attn_dropout=0.1).train()
    keys = torch.randn(4, 2, 3, 8, requires_grad=True)
    state = memory.init_state(2, 3)
    loss = torch.zeros(())
    for t in range(4):
        if t:
            fused, state = memory.read(state, keys[t - 1] * 0.5)
            loss = loss + fused.square().mean()
        state = memory.update(state, keys[t], keys[t] * 2)
    loss.backward()
    assert keys.grad is not None and bool(keys.grad[:3].abs().sum() > 0)
    assert memory.norm_k.weight.grad is not None and memory.norm_v.bias.grad is not None


def test_buffers_are_preallocated_and_updated_in_place_without_autograd() -> None:
    memory = SpatialMemory(dim=8, work_mem_frames=2, long_mem_tokens=100).eval()
    state = memory.init_state(2, 4)
    ptrs = (state.keys.data_ptr(), state.values.data_ptr())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state, _ = run_stream(memory, state, random_stream(g, 10, 2, 4, 8))
    assert (state.keys.data_ptr(), state.values.data_ptr()) == ptrs
    assert state.keys.shape == (2, memory.config.capacity(4), 8)


def test_working_memory_larger_than_top_k_is_kept_whole() -> None:
    """P * work_mem_frames > top_k (e.g. 512x512 images with the defaults): the working memory
    survives consolidation whole and the long-term memory is emptied."""
    memory = SpatialMemory(dim=4, work_mem_frames=3, long_mem_tokens=5).eval()
    state = memory.init_state(1, 4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, k, v in random_stream(g, 8, 1, 4, 4):
            state = memory.update(state, k, v)
            check_invariants(memory, state)
    assert int(state.count[0]) in (12, 16)
    assert int(state.work_frames[0]) == 3


def test_wrong_subclasses_fail_loudly(without_typecheck: None) -> None:
    class BadScores(SpatialMemory):
        def consolidation_scores(self, state: MemoryState) -> torch.Tensor:
            return state.attn.sum(-1)  # [B] instead of [B, X]

    class BadGate(SpatialMemory):
        def should_insert(self, state: MemoryState, key: torch.Tensor) -> torch.Tensor:
            return torch.ones(key.shape[0])  # float, not bool

    class BadAttention(SpatialMemory):
        def attention(self, logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
            return logits[..., :-1].softmax(-1)

    key = torch.randn(1, 2, 4)
    bad = BadScores(dim=4, work_mem_frames=1, long_mem_tokens=1).eval()
    state = bad.init_state(1, 2)
    with pytest.raises(ValueError, match=r"BadScores\.consolidation_scores\(\) return value"):
        for _ in range(3):
            state = bad.update(state, torch.randn(1, 2, 4), key)
    with pytest.raises(TypeError, match=r"BadGate\.should_insert\(\)"):
        gate = BadGate(dim=4).eval()
        gate.update(gate.init_state(1, 2), key, key)
    with pytest.raises(ValueError, match=r"BadAttention\.attention\(\) return value"):
        att = BadAttention(dim=4).eval()
        att.read(att.init_state(1, 2), key)
