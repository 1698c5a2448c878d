"""Property tests of SpatialMemory: each one a real invariant, on tiny random streams."""

import io

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_close
from memory_driver import check_invariants, random_stream, run_stream, valid_rows
from spatialmem.memory import MemoryState, SpatialMemory, ops


def _memory(seed: int, dim: int, training: bool = False, **cfg: object) -> SpatialMemory:
    torch.manual_seed(seed)
    memory = SpatialMemory(dim=dim, **cfg)
    with torch.no_grad():  # non-trivial affine norms
        for norm in (memory.norm_q, memory.norm_k, memory.norm_v):
            norm.weight.mul_(1.5).add_(0.3 * torch.randn_like(norm.weight))
            norm.bias.add_(0.2 * torch.randn_like(norm.bias))
    return memory.train(training)


configs = st.fixed_dictionaries(
    {
        "patches": st.integers(2, 9),
        "dim": st.integers(8, 16),
        "work": st.integers(1, 3),
        "long_frames": st.integers(1, 4),
        "protect_extra": st.integers(0, 5),
        "seed": st.integers(0, 2**16),
    }
)


def _cfg(c: dict, **extra: object) -> dict:
    p = c["patches"]
    return {
        "work_mem_frames": c["work"],
        "long_mem_tokens": c["long_frames"] * p + p // 2,
        "protect_age": c["work"] + c["protect_extra"],
        **extra,
    }


@settings(max_examples=6)
@given(c=configs, training=st.booleans(), repeat_every=st.integers(2, 7))
def test_capacity_never_exceeded(c: dict, training: bool, repeat_every: int) -> None:
    """Streams of hundreds of steps (some frames repeated, so the gate fires) stay in capacity."""
    p, dim = c["patches"], c["dim"]
    memory = _memory(c["seed"], dim, training, **_cfg(c, sim_thresh=0.9))
    state = memory.init_state(2, p)
    x = state.capacity
    g = torch.Generator().manual_seed(c["seed"])
    stream = random_stream(g, 300, 2, p, dim)
    for t in range(repeat_every, len(stream), repeat_every):  # exact repeats of the last frame
        stream[t] = (stream[t][0], stream[t - 1][1], stream[t][2])
    with torch.no_grad():
        for q, k, v in stream:
            _, state = memory.read(state, q)
            state = memory.update(state, k, v)
            assert state.capacity == x and state.keys.shape == (2, x, dim)
            check_invariants(memory, state)


def test_capacity_over_thousands_of_steps(without_typecheck: None) -> None:
    """3000 steps in eval mode (consolidation) and training mode (eviction of the oldest)."""
    for training in (False, True):
        memory = _memory(0, 8, training, work_mem_frames=2, long_mem_tokens=10)
        state = memory.init_state(3, 4)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for t, (q, k, v) in enumerate(random_stream(g, 3000, 3, 4, 8)):
                _, state = memory.read(state, q)
                state = memory.update(state, k, v)
                if t % 50 == 0 or t > 2990:
                    check_invariants(memory, state)
        assert state.capacity == memory.config.capacity(4)
        if training:  # full, newest frames kept, ages 0.. in order
            assert state.count.tolist() == [state.capacity] * 3
            assert state.age[0, -4:].tolist() == [0] * 4
            assert int(state.age[0, 0]) == (state.capacity - 1) // 4  # partly evicted frame


@settings(max_examples=15)
@given(c=configs, steps=st.integers(1, 8), scale=st.sampled_from([1.0, 4.0]))
def test_read_is_invariant_to_token_order(c: dict, steps: int, scale: float) -> None:
    p, dim = c["patches"], c["dim"]
    memory = _memory(c["seed"], dim, **_cfg(c))
    g = torch.Generator().manual_seed(c["seed"])
    with torch.no_grad():
        state, _ = run_stream(memory, memory.init_state(2, p), random_stream(g, steps, 2, p, dim))
        state = state.replace(attn=torch.rand(state.attn.shape, generator=g))
        query = scale * torch.randn(2, p, dim, generator=g)
        perm = torch.stack([torch.randperm(state.capacity, generator=g) for _ in range(2)])
        # permute the valid rows only among themselves (valid rows stay a prefix)
        for b in range(2):
            n = int(state.count[b])
            perm[b, :n] = torch.randperm(n, generator=g)
            perm[b, n:] = torch.arange(n, state.capacity)
        shuffled = state.replace(
            **{
                n: ops.gather_rows(getattr(state, n), perm)
                for n in ("keys", "values", "age", "attn")
            }
        )
        fused, after = memory.read(state.clone(), query)
        fused2, after2 = memory.read(shuffled, query)
        w = memory.attention_weights(state, query)
        w2 = memory.attention_weights(shuffled, query)
    assert_close(fused2, fused, 1e-5, "fused")
    assert_close(w2, ops.gather_rows(w.transpose(1, 2), perm).transpose(1, 2), 1e-6, "weights")
    assert_close(after2.attn, ops.gather_rows(after.attn, perm), 1e-5, "accumulated attention")


@settings(max_examples=25)
@given(
    b=st.integers(1, 3),
    p=st.integers(1, 9),
    x=st.integers(1, 40),
    spread=st.sampled_from([0.0, 0.01, 1.0, 10.0]),
    clip=st.sampled_from([0.0, 5e-4, 0.02, 0.2, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_attention_rows_sum_to_one_zero_where_clipped_never_nan(
    b: int, p: int, x: int, spread: float, clip: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = spread * torch.randn(b, p, x, generator=g)
    count = torch.randint(0, x + 1, (b,), generator=g)
    valid = torch.arange(x)[None, :] < count[:, None]
    memory = SpatialMemory(dim=8, attn_clip=clip).eval()
    w = memory.attention(logits, valid)
    probs = ops.masked_softmax(logits, valid)
    assert not bool(torch.isnan(w).any())
    assert bool((w[~valid[:, None, :].expand_as(w)] == 0).all()), "weight on an invalid row"
    has = valid.any(-1)[:, None].expand(b, p)
    assert_close(w.sum(-1)[has], torch.ones(int(has.sum())), 1e-5, "row sums")
    assert bool((w.sum(-1)[~has] == 0).all())
    below = probs < clip
    fallback = (below | ~valid[:, None, :]).all(-1) & has  # the whole row is under the clip
    clipped = below & valid[:, None, :] & ~fallback[..., None]
    assert bool((w[clipped] == 0).all()), "a clipped entry has weight"
    assert_close(w[fallback], probs[fallback], 1e-6, "fallback rows keep the softmax")
    assert bool((w[~clipped & valid[:, None, :]] > 0).all() or spread >= 10.0)
    # training mode: softmax with dropout, never NaN, no weight on invalid rows
    memory.train()
    wt = memory.attention(logits, valid)
    assert not bool(torch.isnan(wt).any()) and bool(
        (wt[~valid[:, None, :].expand_as(wt)] == 0).all()
    )


@settings(max_examples=20)
@given(
    c=configs,
    steps=st.integers(0, 14),
    back=st.integers(0, 2),
    thresh=st.floats(0.3, 0.999),
    repeats=st.lists(st.booleans(), min_size=2, max_size=2),
)
def test_exact_repeat_of_a_working_frame_is_skipped(
    c: dict, steps: int, back: int, thresh: float, repeats: list[bool]
) -> None:
    """A frame equal to one of the working-memory frames is not written (per sample), also
    after consolidations."""
    p, dim = c["patches"], c["dim"]
    memory = _memory(c["seed"], dim, **_cfg(c, sim_thresh=thresh))
    g = torch.Generator().manual_seed(c["seed"])
    with torch.no_grad():
        state, _ = run_stream(
            memory, memory.init_state(2, p), random_stream(g, steps + 1, 2, p, dim)
        )
        key = torch.randn(2, p, dim, generator=g)
        cols = []
        for b, r in enumerate(repeats):
            w = int(state.work_frames[b])
            j = min(back, w - 1)  # frames back from the newest working-memory frame
            cols.append(w - 1 - j)
            if r:
                end = int(state.count[b]) - j * p
                key[b] = state.keys[b, end - p : end]
        sims = memory.similarity(state, key)
        insert = memory.should_insert(state, key)
        before = state.clone()
        after = memory.update(state, key, key)
    assert insert.tolist() == (~(sims.amax(-1) > thresh)).tolist()
    for b, r in enumerate(repeats):
        if r:
            assert_close(sims[b, cols[b]], torch.tensor(1.0), 1e-5, "self-similarity")
            assert not bool(insert[b])
            for name in ("keys", "values", "age", "attn"):
                assert torch.equal(valid_rows(after, b, name), valid_rows(before, b, name))
            assert int(after.count[b]) == int(before.count[b])


@settings(max_examples=10)
@given(c=configs, steps=st.integers(1, 16), b=st.integers(2, 3))
def test_batch_equals_per_sample(c: dict, steps: int, b: int) -> None:
    """Samples with different gate decisions and token counts in one batch give exactly the
    results of running each sample alone."""
    p, dim = c["patches"], c["dim"]
    memory = _memory(c["seed"], dim, **_cfg(c, sim_thresh=0.9))
    g = torch.Generator().manual_seed(c["seed"])
    stream = random_stream(g, steps, b, p, dim)
    # sample k repeats its previous key every (k + 2) steps: different gates per sample
    prev = stream[0][1].clone()
    for t in range(1, steps):
        k = stream[t][1]
        for s in range(b):
            if t % (s + 2) == 0:
                k[s] = prev[s]
        prev = k.clone()
    with torch.no_grad():
        batched, outs = run_stream(memory, memory.init_state(b, p), stream)
        # the premise: the gates differ within the batch (at t = 2 only sample 0 repeats)
        gates, state = [], memory.init_state(b, p)
        for q, k, v in stream:
            _, state = memory.read(state, q)
            gates.append(memory.should_insert(state, k))
            state = memory.update(state, k, v)
        assert steps < 3 or any(bool((gate != gate[0]).any()) for gate in gates), gates
        for s in range(b):
            single = [(q[s : s + 1], k[s : s + 1], v[s : s + 1]) for q, k, v in stream]
            alone, outs1 = run_stream(memory, memory.init_state(1, p), single)
            for name in ("count", "work_frames", "long_tokens"):
                assert getattr(alone, name)[0] == getattr(batched, name)[s], name
            for name in ("keys", "values", "age", "attn"):
                assert_close(valid_rows(alone, 0, name), valid_rows(batched, s, name), 1e-5, name)
            for o1, o in zip(outs1, outs, strict=True):
                assert_close(o1[0], o[s], 1e-5, "fused")


def _random_state(
    g: torch.Generator, b: int, p: int, w: int, long_mem: int, dim: int = 4
) -> MemoryState:
    """A state right after a write: working memory full, long-term memory over budget."""
    cap = long_mem + (w + 1) * p
    state = MemoryState.empty(b, p, cap, dim)
    age = torch.zeros(b, cap, dtype=torch.long)
    counts, lts = [], []
    for s in range(b):
        lt = int(torch.randint(max(0, long_mem - p), long_mem + p + 1, (1,), generator=g))
        n = lt + w * p
        # long-term ages: non-increasing, >= w, with gaps; working memory: w-1 .. 0 per frame
        lt_age = w + torch.randint(0, 12, (lt,), generator=g).sort(descending=True).values
        wm_age = torch.arange(w - 1, -1, -1).repeat_interleave(p)
        age[s, :n] = torch.cat([lt_age, wm_age])
        counts.append(n)
        lts.append(lt)
    count = torch.tensor(counts)
    valid = torch.arange(cap)[None, :] < count[:, None]
    attn = (torch.randint(0, 6, (b, cap), generator=g).float() / 4) * valid
    return state.replace(
        keys=torch.randn(b, cap, dim, generator=g),
        values=torch.randn(b, cap, dim, generator=g),
        age=age * valid,
        attn=attn,
        valid=valid,
        count=count,
        work_frames=torch.full((b,), w),
        long_tokens=torch.tensor(lts),
    )


@settings(max_examples=25)
@given(c=configs, b=st.integers(1, 3), top_k_frac=st.floats(0.5, 1.0))
def test_consolidation_keeps_protected_and_best_scores(c: dict, b: int, top_k_frac: float) -> None:
    p, w = c["patches"], c["work"]
    long_mem = c["long_frames"] * p + p // 2
    top_k = min(long_mem, max(1, round(top_k_frac * long_mem)))
    memory = _memory(c["seed"], 4, **_cfg(c, top_k=top_k)).eval()
    g = torch.Generator().manual_seed(c["seed"])
    state = _random_state(g, b, p, w, long_mem)
    need = state.long_tokens > long_mem
    scores = memory.consolidation_scores(state)
    prot = memory.protected(state)
    after = memory.consolidate(state.clone())
    check_invariants(memory, after)
    for s in range(b):
        n = int(state.count[s])
        if not bool(need[s]):
            assert torch.equal(valid_rows(after, s, "keys"), valid_rows(state, s, "keys"))
            continue
        # identify kept rows by their (unique) keys; they stay in chronological order
        rows = [
            int((state.keys[s, :n] == k).all(-1).nonzero()) for k in valid_rows(after, s, "keys")
        ]
        assert rows == sorted(rows), "consolidation changed the order of the kept tokens"
        kept = torch.zeros(n, dtype=torch.bool)
        kept[rows] = True
        assert len(rows) == max(top_k, w * p)
        assert bool(kept[state.working_mask()[s, :n]].all()), "working memory dropped"
        pr = prot[s, :n]
        if int(pr.sum()) <= top_k:
            assert bool(kept[pr].all()), "a protected token was dropped"
            others_kept, others_dropped = scores[s, :n][kept & ~pr], scores[s, :n][~kept & ~pr]
            if others_kept.numel() and others_dropped.numel():
                assert float(others_kept.min()) >= float(others_dropped.max())
        else:  # more protected tokens than room: the newest protected ones are kept
            assert not bool(kept[~pr].any())
            ages = state.age[s, :n]
            if bool((pr & ~kept).any()):
                assert float(ages[kept].max()) <= float(ages[pr & ~kept].min())
        assert torch.equal(valid_rows(after, s, "age"), state.age[s, :n][kept])
        assert_close(valid_rows(after, s, "attn"), state.attn[s, :n][kept], 0.0)
        assert int(after.long_tokens[s]) == len(rows) - w * p


@settings(max_examples=8)
@given(c=configs, k=st.integers(1, 12), m=st.integers(1, 12), training=st.booleans())
def test_save_load_continue_equals_uninterrupted(c: dict, k: int, m: int, training: bool) -> None:
    p, dim = c["patches"], c["dim"]
    memory = _memory(c["seed"], dim, training, **_cfg(c, attn_dropout=0.0))
    g = torch.Generator().manual_seed(c["seed"])
    stream = random_stream(g, k + m, 2, p, dim)
    with torch.no_grad():
        state, _ = run_stream(memory, memory.init_state(2, p), stream[:k])
        buf = io.BytesIO()
        torch.save(state.state_dict(), buf)
        uninterrupted, outs = run_stream(memory, state, stream[k:])
        buf.seek(0)
        restored = MemoryState.from_state_dict(torch.load(buf, weights_only=True))
        resumed, outs2 = run_stream(memory, restored, stream[k:])
        # load_state_dict into a fresh state gives the same
        buf.seek(0)
        fresh = memory.init_state(2, p)
        fresh.load_state_dict(torch.load(buf, weights_only=True))
        resumed2, _ = run_stream(memory, fresh, stream[k:])
    for a, b_ in ((uninterrupted, resumed), (uninterrupted, resumed2)):
        for name, t in a.state_dict().items():
            other = b_.state_dict()[name]
            assert torch.equal(t, other) if isinstance(t, torch.Tensor) else t == other, name
    for o, o2 in zip(outs, outs2, strict=True):
        assert torch.equal(o, o2)


class NewestFirst(SpatialMemory):
    """Keeps the newest long-term tokens instead of the most attended ones."""

    def consolidation_scores(self, state: MemoryState) -> torch.Tensor:
        return -state.age.float()


class NoClip(SpatialMemory):
    """Plain softmax attention in eval mode."""

    def attention(self, logits: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return ops.masked_softmax(logits, valid)


@settings(max_examples=10)
@given(c=configs, steps=st.integers(1, 12))
def test_a_subclass_overriding_one_policy_changes_only_that(c: dict, steps: int) -> None:
    p, dim = c["patches"], c["dim"]
    base = _memory(c["seed"], dim, **_cfg(c, sim_thresh=0.9))
    g = torch.Generator().manual_seed(c["seed"])
    with torch.no_grad():
        state, _ = run_stream(base, base.init_state(2, p), random_stream(g, steps, 2, p, dim))
        query, key = (4 * torch.randn(2, p, dim, generator=g) for _ in range(2))
        over = _random_state(g, 2, p, c["work"], base.config.long_mem_tokens, dim)
        for cls, changed in ((NewestFirst, {"consolidation_scores", "keep_mask", "consolidate"}),
                             (NoClip, {"attention", "attention_weights", "read"})):  # fmt: skip
            other = cls(base.config)
            other.load_state_dict(base.state_dict())
            other.eval()
            calls = {
                "similarity": lambda m, s: m.similarity(s, key),
                "should_insert": lambda m, s: m.should_insert(s, key),
                "logits": lambda m, s: m.logits(s, query),
                "attention": lambda m, s: m.attention(m.logits(s, query), s.valid),
                "attention_weights": lambda m, s: m.attention_weights(s, query),
                "read": lambda m, s: m.read(s.clone(), query)[0],
                "write": lambda m, s: m.write(s.clone(), key, key).keys,
                "consolidation_scores": lambda m, s: m.consolidation_scores(s),
                "protected": lambda m, s: m.protected(s),
                "keep_mask": lambda m, s: m.keep_mask(s),
                "consolidate": lambda m, s: m.consolidate(s.clone()).keys,
            }
            differs = set()
            for name, call in calls.items():
                for s in (state, over):
                    a, b = call(base, s), call(other, s)
                    if not torch.equal(a, b):
                        differs.add(name)
            assert differs <= changed, f"{cls.__name__} changed {differs - changed}"
            assert ("consolidation_scores" in differs) == (cls is NewestFirst)
