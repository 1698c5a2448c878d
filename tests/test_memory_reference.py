"""SpatialMemory reproduces the memory logs of the official model (fixtures A3, A4, A5).

The memory is driven with the logged queries, keys and values; every logged decision and tensor
is compared. Tokens are tracked by identity (insertion step, patch) so quantities whose row order
differs after a pruning event (the official top-k scrambles the rows, ours stay chronological;
reference README item 16) are compared token by token.
"""

from typing import Any

import pytest
import torch

from conftest import assert_close, load_fixture
from memory_driver import StepRecord, clipped_count, memory_from_fixture, replay
from spatialmem.memory import ops

FIXTURES = {
    "A3": "spann3r_tiny_eval.pt",
    "A4": "spann3r_tiny_prune.pt",
    "A5": "spann3r_tiny_train.pt",
}
TOL = 1e-5


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def replayed(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[StepRecord]]:
    fx = load_fixture(FIXTURES[request.param])
    memory = memory_from_fixture(fx)
    return request.param, fx, replay(memory, fx)


def _token_ids(fx: dict[str, Any], records: list[StepRecord], b: int) -> tuple[list, list]:
    """Per step, the token ids (step, patch) in official row order and in our row order."""
    p = fx["memory"]["num_patches"]
    prunes = {pr["step"]: pr for pr in fx["memory"]["prunes"]}
    official, ours, off_ids, our_ids = [], [], [], []
    for i, (rec, log) in enumerate(zip(records, fx["memory"]["steps"], strict=True)):
        new = [(i, j) for j in range(p)]
        if log["inserted"]:
            off_ids = off_ids + new
        if bool(rec.insert[b]):
            our_ids = our_ids + new
        if i in prunes:
            off_ids = [off_ids[j] for j in prunes[i]["selected_indices"][b].tolist()]
        if rec.keep is not None and bool(rec.pruned[b]):
            kept = rec.keep[b] | rec.before_prune.working_mask()[b]
            our_ids = [t for t, k in zip(our_ids, kept.tolist(), strict=False) if k]
        official.append(off_ids)
        ours.append(our_ids)
    return official, ours


def _reorder(ours: torch.Tensor, our_ids: list, off_ids: list) -> torch.Tensor:
    """Columns of ``ours`` (last dim, our row order) put in official row order."""
    assert sorted(our_ids) == sorted(off_ids), "the memories hold different tokens"
    pos = {t: j for j, t in enumerate(our_ids)}
    return ours[..., [pos[t] for t in off_ids]]


def test_gate_and_token_counts(replayed: tuple) -> None:
    name, fx, records = replayed
    for i, (rec, log) in enumerate(zip(records, fx["memory"]["steps"], strict=True)):
        st = rec.after
        assert rec.insert.tolist() == [log["inserted"]] * st.batch_size, f"{name} step {i}: gate"
        assert st.count.tolist() == [log["tokens_after"]] * st.batch_size, f"{name} step {i}"
        assert st.work_frames.tolist() == [log["wm_after"]] * st.batch_size, f"{name} step {i}"
        assert st.long_tokens.tolist() == [log["lm_after"]] * st.batch_size, f"{name} step {i}"
        pruned = bool(rec.pruned.any()) if rec.pruned is not None else False
        assert pruned == log["pruned"], f"{name} step {i}: pruning decision"


def test_similarity_scores(replayed: tuple) -> None:
    name, fx, records = replayed
    first_prune = min((p["step"] for p in fx["memory"]["prunes"]), default=10**9)
    for i, (rec, log) in enumerate(zip(records, fx["memory"]["steps"], strict=True)):
        if log["sim_scores"] is None or i > first_prune:  # README item 16
            continue
        w = log["sim_scores"].shape[1]
        assert_close(rec.sims[:, :w], log["sim_scores"], TOL, f"{name} step {i} sim_scores")
        assert bool(torch.isneginf(rec.sims[:, w:]).all())
        assert_close(rec.sims.amax(-1), torch.tensor([log["sim_max"]]), TOL, "sim_max")


def test_reads(replayed: tuple) -> None:
    name, fx, records = replayed
    per_step = fx["intermediates"]["per_step"]
    reads = {r["step"]: r for r in fx["memory"]["reads"]}
    b = records[0].after.batch_size
    ids = [_token_ids(fx, records, k) for k in range(b)]
    for i, rec in enumerate(records):
        if i == 0:
            assert rec.weights is None
            continue
        log = reads[i]
        valid = records[i - 1].after.valid
        assert clipped_count(rec.weights, valid) == log["n_clipped"], f"{name} read {i}"
        assert int(valid.sum()) * rec.weights.shape[1] == log["n_entries"]
        for k in range(b):
            official_ids, our_ids = ids[k][0][i - 1], ids[k][1][i - 1]
            got = _reorder(rec.weights[k], our_ids, official_ids)
            assert_close(got, log["attn"][k], TOL, f"{name} read {i} weights (sample {k})")
            assert_close(rec.weights[k].sum(-1), torch.ones(rec.weights.shape[1]), TOL)
        assert_close(rec.fused, per_step[i]["feat_fuse"], TOL, f"{name} read {i} fused output")


def test_ages_and_accumulated_attention(replayed: tuple) -> None:
    name, fx, records = replayed
    b = records[0].after.batch_size
    ids = [_token_ids(fx, records, k) for k in range(b)]
    for i, (rec, log) in enumerate(zip(records, fx["memory"]["steps"], strict=True)):
        st = rec.after
        for k in range(b):
            n = int(st.count[k])
            official_ids, our_ids = ids[k][0][i], ids[k][1][i]
            age = _reorder(st.age[k, :n].float(), our_ids, official_ids)
            attn = _reorder(st.attn[k, :n], our_ids, official_ids)
            assert torch.equal(age, log["mem_count_after"][k]), f"{name} step {i} ages"
            assert_close(attn, log["mem_attn_after"][k], TOL, f"{name} step {i} mem_attn")


def test_pruning_keeps_the_official_set(replayed: tuple) -> None:
    name, fx, records = replayed
    prunes = fx["memory"]["prunes"]
    if not prunes:
        assert all(r.keep is None for r in records)
        return
    memory = memory_from_fixture(fx)
    p = fx["memory"]["num_patches"]
    b = records[0].after.batch_size
    for k in range(b):  # every batch element (the official bookkeeping is batch-wide)
        ids = _token_ids(fx, records, k)
        for pr in prunes:
            i = pr["step"]
            rec = records[i]
            before = rec.before_prune
            what = f"{name} sample {k} prune at step {i}"
            n = int(before.count[k])
            assert n == pr["n_before"] and int(rec.after.count[k]) == pr["n_after"], what
            assert int(before.long_tokens[k]) == pr["lm_before"], what
            assert int(before.work_frames[k]) == pr["wm"], what
            # official row order before this prune
            official_before = ids[0][i - 1] + [(i, j) for j in range(p)]
            our_before = ids[1][i - 1] + [(i, j) for j in range(p)]
            kept_official = {official_before[j] for j in pr["selected_indices"][k].tolist()}
            keep = rec.keep[k, :n].tolist()
            kept_ours = {t for t, kept in zip(our_before, keep, strict=True) if kept}
            assert kept_ours == kept_official, f"{what}: another set is kept"
            # the inputs of the decision, token by token
            scores = memory.consolidation_scores(before)[k, :n]
            protected = memory.protected(before)[k, :n]
            assert int(protected.sum()) == pr["n_protected"][k], what
            ours_w = _reorder(
                torch.where(protected, torch.tensor(1e8), scores), our_before, official_before
            )
            assert_close(ours_w, pr["weights"][k], TOL, f"{what}: weights")
            assert_close(
                _reorder(before.age[k, :n].float(), our_before, official_before),
                pr["mem_count_before"][k], 0.0, f"{what}: ages before prune",
            )  # fmt: skip


def test_final_memory(replayed: tuple) -> None:
    name, fx, records = replayed
    final = fx["memory"]["final"]
    st = records[-1].after
    b = st.batch_size
    ids = [_token_ids(fx, records, k) for k in range(b)]
    assert st.work_frames.tolist() == [final["wm"]] * b
    assert st.long_tokens.tolist() == [final["lm"]] * b
    for k in range(b):
        n = int(st.count[k])
        off, ours = ids[k][0][-1], ids[k][1][-1]
        keys = _reorder(st.keys[k, :n].T, ours, off).T
        values = _reorder(st.values[k, :n].T, ours, off).T
        assert_close(keys, final["mem_k"][k], 0.0, f"{name} final keys")
        assert_close(values, final["mem_v"][k], TOL, f"{name} final values")
        assert_close(_reorder(st.attn[k, :n], ours, off), final["mem_attn"][k], TOL)


def test_first_insert_and_first_read() -> None:
    fx = load_fixture(FIXTURES["A3"])
    memory = memory_from_fixture(fx)
    ins, rd = fx["intermediates"]["first_insert"], fx["intermediates"]["first_read"]
    b, p, _ = ins["key"].shape
    x = rd["mem_k"].shape[1]  # tokens at the first read: the first insertion's P
    assert x == p == fx["memory"]["num_patches"]
    with torch.no_grad():
        state = memory.init_state(b, p)
        state = memory.update(state, ins["key"], ins["value"])
        assert_close(state.keys[:, :x], rd["mem_k"], 0.0, "mem_k")
        assert_close(state.values[:, :x], rd["mem_v"], 0.0, "mem_v")
        logits = memory.logits(state, rd["query"])
        probs = ops.masked_softmax(logits, state.valid)[..., :x]
        zeroed = probs.masked_fill(probs < memory.config.attn_clip, 0.0)
        assert_close(zeroed, rd["attn_softmax"], TOL, "clipped softmax before renormalisation")
        assert int((zeroed == 0).sum()) == rd["n_clipped"]
        fused, state = memory.read(state, rd["query"])
    assert_close(fused, rd["out"], TOL, "first read output")
    assert_close(state.attn[:, :x], rd["mem_attn_after"], TOL, "mem_attn after the first read")
    assert not bool(state.attn[:, x:].any())


def test_batch_of_fixture_streams_equals_each_stream() -> None:
    """A5 has several streams in one batch: running each alone gives the same numbers."""
    fx = load_fixture(FIXTURES["A5"])
    b = fx["intermediates"]["per_step"][0]["feat_k1"].shape[0]
    if b < 2:
        pytest.skip(f"{FIXTURES['A5']} has a single stream (B = {b})")
    memory = memory_from_fixture(fx)
    full = replay(memory, fx)
    for k in range(b):
        single = {**fx, "intermediates": {"per_step": [
            {n: t[k : k + 1] for n, t in st.items() if isinstance(t, torch.Tensor)}
            for st in fx["intermediates"]["per_step"]
        ]}}  # fmt: skip
        alone = replay(memory, single)
        for a, f in zip(alone, full, strict=True):
            assert_close(a.after.keys[0], f.after.keys[k], 0.0)
            assert_close(a.after.attn[0], f.after.attn[k], 1e-6)
            if a.fused is not None:
                assert_close(a.fused[0], f.fused[k], 1e-6)
