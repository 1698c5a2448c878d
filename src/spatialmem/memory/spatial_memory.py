"""XMem-style spatial memory of Spann3R: learned read-out norms plus overridable policies."""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spatialmem._checks import (
    check_finite,
    check_same_batch,
    check_tensor,
    checks_active,
    internal_calls,
)
from spatialmem._typing import Bool, Float
from spatialmem.memory import ops
from spatialmem.memory.state import MemoryState

__all__ = ["MemoryConfig", "SpatialMemory"]


@dataclass(frozen=True)
class MemoryConfig:
    """Configuration of a [`SpatialMemory`][spatialmem.memory.SpatialMemory]. Defaults are the
    paper's (Sec. 3.2).

    Only ``dim`` has no default: the model that owns the memory passes its key/value width.
    """

    dim: int
    """Key/value/query width ``C`` (width of ``norm_q/norm_k/norm_v``)."""
    work_mem_frames: int = 5
    """Frames in the working memory (official ``work_mem_size``)."""
    long_mem_tokens: int = 4000
    """Long-term token budget; consolidation runs when it is exceeded (``long_mem_size``)."""
    top_k: int | None = None
    """Tokens of the whole memory kept by a consolidation; ``None`` means ``long_mem_tokens``."""
    attn_clip: float = 5e-4
    """Eval mode: attention weights below this are zeroed and rows renormalised
    (``attn_thresh``)."""
    sim_thresh: float = 0.95
    """Eval mode: a frame is not inserted when its mean cosine similarity to a working-memory
    frame is strictly greater than this; ``1.0`` disables the gate in practice."""
    attn_dropout: float = 0.15
    """Training mode: dropout probability on the applied attention weights."""
    protect_age: int | None = None
    """Tokens younger than this (``age < protect_age``) are never consolidated away; ``None``
    means ``work_mem_frames + 5`` (the official rule: the 10 most recent frames by default)."""
    norm_eps: float = 1e-5
    """Epsilon of the LayerNorms ``norm_q/norm_k/norm_v``."""

    def __post_init__(self) -> None:
        for name in ("dim", "work_mem_frames"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(
                    f"MemoryConfig.{name} must be a positive int, got {getattr(self, name)!r}"
                )
        if self.long_mem_tokens < 0:
            raise ValueError(
                f"MemoryConfig.long_mem_tokens must be >= 0, got {self.long_mem_tokens}"
            )
        if self.top_k is not None and not 0 <= self.top_k <= self.long_mem_tokens:
            raise ValueError(
                f"MemoryConfig.top_k must lie in [0, long_mem_tokens={self.long_mem_tokens}], "
                f"got {self.top_k}"
            )
        if not 0.0 <= self.attn_clip < 1.0:
            raise ValueError(f"MemoryConfig.attn_clip must lie in [0, 1), got {self.attn_clip}")
        if not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError(
                f"MemoryConfig.attn_dropout must lie in [0, 1), got {self.attn_dropout}"
            )
        if self.protect_age is not None and self.protect_age < 0:
            raise ValueError(f"MemoryConfig.protect_age must be >= 0, got {self.protect_age}")
        if not math.isfinite(self.sim_thresh):
            raise ValueError(f"MemoryConfig.sim_thresh must be finite, got {self.sim_thresh}")

    @property
    def resolved_top_k(self) -> int:
        """Tokens kept by a consolidation (``top_k``, default ``long_mem_tokens``)."""
        return self.long_mem_tokens if self.top_k is None else self.top_k

    @property
    def resolved_protect_age(self) -> int:
        """Age under which tokens are protected (``protect_age``, default ``work_mem_frames+5``)."""
        return self.work_mem_frames + 5 if self.protect_age is None else self.protect_age

    def capacity(self, num_patches: int) -> int:
        """Rows a state needs: long-term budget + working memory + one frame of headroom.

        Args:
            num_patches: tokens per frame ``P``.
        """
        return self.long_mem_tokens + (self.work_mem_frames + 1) * num_patches


def _host_checks_ok(t: Tensor) -> bool:
    """Whether data-dependent Python branches are free (CPU, eager): used only for fast paths."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _active_rows(state: MemoryState) -> int | None:
    """Rows worth reading (CPU fast path), or ``None`` to read all of them."""
    if not _host_checks_ok(state.count):
        return None
    rows = max(int(state.count.max()), state.num_patches)
    return None if rows >= state.capacity else rows


class SpatialMemory(nn.Module):
    """Spann3R's spatial memory: working memory + long-term memory with consolidation.

    The module holds what is learned and configured (``norm_q``, ``norm_k``, ``norm_v``, the
    attention dropout, [`MemoryConfig`][spatialmem.memory.MemoryConfig]); the tokens of each stream
    live in a [`MemoryState`][spatialmem.memory.MemoryState], which every method takes and (if it
    changes it) returns. A model drives it once per frame:

    ```python
    state = memory.init_state(batch_size, num_patches)
    for t, frame in enumerate(frames):
        if t > 0:  # step 0 has nothing to read
            fused, state = memory.read(state, query)  # query: previous step's view-2 key
        ...  # decode with `fused`, predict, encode the value
        state = memory.update(state, key, value)  # gate -> write -> consolidate
    ```

    Every decision is taken per sample (the official gate takes one maximum over the whole batch),
    so running a batch gives exactly the results of running its samples one by one.

    Behaviour by mode (as the official model): in ``train()`` mode every frame is written (no
    gate), attention is not clipped, dropout is applied to the attention weights, and there is no
    working/long-term bookkeeping and no consolidation; in ``eval()`` mode the similarity gate,
    the clip with renormalisation, the bookkeeping and the consolidation run and dropout is off.

    Policies are small public methods; override one to change one behaviour:

    | method | policy |
    |---|---|
    | `similarity` | gate score of a new key against each working-memory frame |
    | `should_insert` | per-sample insertion decision |
    | `logits` | query-key attention logits |
    | `attention` | logits -> applied weights (softmax, clip, dropout) |
    | `read` | fused features + accumulated attention |
    | `write` | append a frame, age the others, working/long-term bookkeeping |
    | `consolidation_scores` | score of each token for consolidation (higher is kept) |
    | `protected` | tokens consolidation must keep |
    | `keep_mask` | tokens a consolidation keeps |
    | `consolidate` | prune the samples whose long-term memory is over budget |

    The values returned by overridden policies are shape-checked, so a wrong subclass fails with a
    message naming the method.

    Differences from the official code (defect fixes, all tested): per-sample gate instead of a
    batch-wide maximum; the chronological row order (and therefore the working memory) survives
    consolidation, where the official top-k scrambles it and its gate then compares against the
    wrong frames; a row whose weights all fall under the clip threshold keeps its unclipped
    softmax instead of becoming NaN; consolidation never drops working-memory tokens; widths come
    from the config; if a stream outgrows the capacity (possible only in training mode, which does
    not consolidate, or with a custom policy) the oldest tokens are evicted instead of the memory
    growing.

    Args:
        config: the configuration; keyword arguments override its fields (or build it when
            ``config`` is omitted, e.g. ``SpatialMemory(dim=1024)``).
        norm_layer: normalisation layer class for ``norm_q/norm_k/norm_v``, called as
            ``norm_layer(dim, eps=config.norm_eps)``.
    """

    def __init__(
        self,
        config: MemoryConfig | None = None,
        *,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if config is None:
            config = MemoryConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, MemoryConfig):
            raise TypeError(f"`config` must be a MemoryConfig, got {type(config).__name__}")
        self.config = config
        self.norm_q = norm_layer(config.dim, eps=config.norm_eps)
        self.norm_k = norm_layer(config.dim, eps=config.norm_eps)
        self.norm_v = norm_layer(config.dim, eps=config.norm_eps)
        self.attn_drop = nn.Dropout(config.attn_dropout)
        self.scale = config.dim**-0.5

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"dim={c.dim}, work_mem_frames={c.work_mem_frames}, "
            f"long_mem_tokens={c.long_mem_tokens}, top_k={c.resolved_top_k}, "
            f"attn_clip={c.attn_clip}, sim_thresh={c.sim_thresh}"
        )

    # ------------------------------------------------------------------ state
    def init_state(
        self,
        batch_size: int,
        num_patches: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        capacity: int | None = None,
    ) -> MemoryState:
        """Allocate an empty [`MemoryState`][spatialmem.memory.MemoryState] for ``batch_size``
        streams.

        Args:
            batch_size: number of streams ``B``.
            num_patches: tokens per frame ``P``.
            device: defaults to the device of the norm parameters.
            dtype: defaults to the dtype of the norm parameters.
            capacity: rows per sample; defaults to
                [`MemoryConfig.capacity`][spatialmem.memory.MemoryConfig.capacity], which eval mode
                never exceeds. A smaller capacity evicts the oldest tokens when full.
        """
        ref = next(iter(self.parameters()), None)
        if device is None:
            device = ref.device if ref is not None else None
        if dtype is None:
            dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        if num_patches <= 0:
            raise ValueError(f"`num_patches` must be positive, got {num_patches}")
        if capacity is None:
            capacity = self.config.capacity(num_patches)
        if capacity < num_patches:
            raise ValueError(f"`capacity` ({capacity}) must hold one frame ({num_patches} tokens)")
        return MemoryState.empty(
            batch_size, num_patches, capacity, self.config.dim, device=device, dtype=dtype
        )

    # ------------------------------------------------------------------ insertion gate
    def similarity(self, state: MemoryState, key: Float[Tensor, "B P C"]) -> Float[Tensor, "B Fw"]:
        """Gate score of a new frame against each working-memory frame.

        Default: per patch index, the cosine similarity between the raw new key and the raw key
        of a working-memory frame, averaged over patches (no ``norm_k``, as the official model).

        Args:
            state: the memory.
            key: raw keys of the new frame.

        Returns:
            ``Fw = work_mem_frames`` columns, the working-memory frames oldest first; columns of
            absent frames are ``-inf``.
        """
        w = self.config.work_mem_frames
        p = key.shape[1]
        if _host_checks_ok(state.count):
            # CPU fast path: samples in lockstep with a full working memory read a view
            start = state.count - state.work_frames * p
            s0 = int(start[0])
            if bool((start == s0).all()) and bool((state.work_frames == w).all()) and s0 >= 0:
                frames = state.keys[:, s0 : s0 + w * p].view(key.shape[0], w, p, -1)
                cos = F.cosine_similarity(frames, key.unsqueeze(1).to(frames.dtype), dim=-1)
                return cos.mean(dim=-1)
        return ops.working_frame_similarity(state.keys, state.count, state.work_frames, key, w)

    def should_insert(self, state: MemoryState, key: Float[Tensor, "B P C"]) -> Bool[Tensor, "B"]:
        """Per-sample decision to write the new frame.

        Default: always in training mode; in eval mode unless the largest
        [`similarity`][spatialmem.memory.SpatialMemory.similarity] is strictly greater than
        ``sim_thresh`` (an empty working memory always inserts).

        Args:
            state: the memory.
            key: raw keys of the new frame.

        Returns:
            ``True`` where the frame is written.
        """
        b = key.shape[0]
        if self.training:
            return torch.ones(b, dtype=torch.bool, device=key.device)
        sims = self._checked(
            "similarity", self.similarity(state, key), ndim=2, floating=True, dims={0: b},
            expected="B Fw",
        )  # fmt: skip
        return ~(sims.amax(dim=-1) > self.config.sim_thresh)

    # ------------------------------------------------------------------ read
    def logits(self, state: MemoryState, query: Float[Tensor, "B P C"]) -> Float[Tensor, "B P X"]:
        """Attention logits ``norm_q(query) · norm_k(keys)ᵀ / sqrt(C)`` over all rows.

        Args:
            state: the memory.
            query: raw queries.

        Returns:
            Logits for every row, valid or not (masking is
            [`attention`][spatialmem.memory.SpatialMemory.attention]'s job).
        """
        q = self.norm_q(query)
        k = self.norm_k(state.keys)
        return (q @ k.transpose(-2, -1)) * self.scale

    def attention(
        self, logits: Float[Tensor, "B P X"], valid: Bool[Tensor, "B X"]
    ) -> Float[Tensor, "B P X"]:
        """Turn logits into the weights applied to the memory values.

        Default: softmax over the valid rows; in eval mode weights below ``attn_clip`` are zeroed
        and each row renormalised (a row entirely under the threshold keeps its softmax, see
        [`clip_and_renormalise`][spatialmem.memory.ops.clip_and_renormalise]); in training mode
        dropout is applied instead (no clipping). Invalid rows get weight 0 and no row is ever NaN.

        Args:
            logits: attention logits.
            valid: which rows hold a token.

        Returns:
            Applied weights.
        """
        probs = ops.masked_softmax(logits, valid)
        if self.training:
            return self.attn_drop(probs)
        return ops.clip_and_renormalise(probs, self.config.attn_clip)

    def attention_weights(
        self, state: MemoryState, query: Float[Tensor, "B P C"]
    ) -> Float[Tensor, "B P X"]:
        """[`logits`][spatialmem.memory.SpatialMemory.logits] then
        [`attention`][spatialmem.memory.SpatialMemory.attention]: the weights a
        [`read`][spatialmem.memory.SpatialMemory.read] would apply."""
        b, p = query.shape[:2]
        x = state.capacity
        logits = self._checked(
            "logits", self.logits(state, query), ndim=3, floating=True, dims={0: b, 1: p, 2: x},
            expected=f"B P X = {b} {p} {x}",
        )  # fmt: skip
        return self._checked(
            "attention", self.attention(logits, state.valid), ndim=3, floating=True,
            dims={0: b, 1: p, 2: x}, expected=f"B P X = {b} {p} {x}",
        )  # fmt: skip

    def read(
        self, state: MemoryState, query: Float[Tensor, "B P C"]
    ) -> tuple[Float[Tensor, "B P C"], MemoryState]:
        """Read the memory: ``weights · norm_v(values) + query``, accumulating attention.

        The accumulated attention of each token grows by its applied weights summed over the
        queries (after clipping/renormalisation, after dropout in training), detached from
        autograd. An empty memory returns ``query`` unchanged.

        On CPU (eager), where reading the token counts costs no device sync, the policies
        [`logits`][spatialmem.memory.SpatialMemory.logits] and
        [`attention`][spatialmem.memory.SpatialMemory.attention] receive the state narrowed to the
        longest valid prefix of the batch
        ([`MemoryState.narrow`][spatialmem.memory.MemoryState.narrow]); elsewhere they see every
        row.

        Args:
            state: the memory (not modified).
            query: raw queries (Spann3R: the previous step's view-2 key).

        Returns:
            ``(fused, new_state)``.

        Raises:
            ValueError: wrong token shapes or a batch mismatch with ``state``; NaN/Inf in ``query``
                (a value check, see [`set_value_checks`][spatialmem.set_value_checks]).
        """
        if checks_active():
            self._check_tokens("query", query, state)
        with internal_calls():  # the policies below get validated inputs
            # On CPU, where reading the counts costs no device sync, attend only over the longest
            # valid prefix of the batch (the other rows are masked anyway); elsewhere use all rows.
            rows = _active_rows(state)
            view = state if rows is None else state.narrow(rows)
            weights = self.attention_weights(view, query)
            values = self.norm_v(view.values)
            fused = weights @ values + query
            gained = weights.detach().sum(dim=1).to(state.attn.dtype)
            if rows is not None:
                gained = F.pad(gained, (0, state.capacity - rows))
            return fused, state.replace(attn=state.attn + gained)

    # ------------------------------------------------------------------ write
    def write(
        self,
        state: MemoryState,
        key: Float[Tensor, "B P C"],
        value: Float[Tensor, "B P C"],
        insert: Bool[Tensor, "B"] | None = None,
    ) -> MemoryState:
        """Append one frame per sample where ``insert`` is true.

        Rows ``count .. count+P-1`` receive the raw key and value with age 0 and accumulated
        attention 0; every other token of an inserting sample ages by one. In eval mode the
        working memory grows by one frame up to ``work_mem_frames``, after which each insertion
        moves one frame (``P`` tokens) to the long-term memory. When a sample has no room left
        (only possible in training mode or with a custom capacity or policy) its oldest tokens are
        evicted first.

        Args:
            state: the memory (its key/value buffers are updated in place when autograd is off).
            key: raw keys of the new frame.
            value: raw values of the new frame.
            insert: per-sample decision (default: all).

        Returns:
            The new state.

        Raises:
            ValueError: wrong token shapes or a batch mismatch with ``state``; NaN/Inf keys or
                values (a value check, see [`set_value_checks`][spatialmem.set_value_checks]).
        """
        b, p, _ = key.shape
        if checks_active():
            self._check_tokens("key", key, state)
            self._check_tokens("value", value, state)
            if insert is not None:
                check_tensor("insert", insert, ndim=1, floating=False, dims={0: b}, expected="B")
        if insert is None:
            insert = torch.ones(b, dtype=torch.bool, device=key.device)
        insert = insert.to(dtype=torch.bool, device=state.device)
        state = self._make_room(state, insert)

        rows = (state.count[:, None] + torch.arange(p, device=state.device)).clamp(
            max=state.capacity - 1
        )
        ins = insert[:, None]
        in_place = not torch.is_grad_enabled()
        # CPU fast path, decided once for the five buffers: every sample inserts.
        every = _host_checks_ok(insert) and bool(insert.all())
        keys = _put_rows(state.keys, rows, key.to(state.dtype), ins, in_place, every)
        values = _put_rows(state.values, rows, value.to(state.dtype), ins, in_place, every)
        age = torch.where(state.valid & ins, state.age + 1, state.age)
        age = _put_rows(age, rows, torch.zeros_like(rows), ins, False, every)
        attn = _put_rows(
            state.attn, rows, torch.zeros_like(rows, dtype=state.attn.dtype), ins, False, every
        )
        ones = torch.ones_like(rows, dtype=torch.bool)
        valid = _put_rows(state.valid, rows, ones, ins, False, every)
        count = state.count + insert.long() * p

        work_frames, long_tokens = state.work_frames, state.long_tokens
        if not self.training:
            w = self.config.work_mem_frames
            full = work_frames >= w
            work_frames = torch.where(insert, (work_frames + 1).clamp(max=w), work_frames)
            long_tokens = torch.where(insert & full, long_tokens + p, long_tokens)
        return state.replace(
            keys=keys,
            values=values,
            age=age,
            attn=attn,
            valid=valid,
            count=count,
            work_frames=work_frames,
            long_tokens=long_tokens,
        )

    def _make_room(self, state: MemoryState, insert: Bool[Tensor, "B"]) -> MemoryState:
        """Evict the oldest tokens of samples that would overflow (a shift of the valid rows)."""
        p, x = state.num_patches, state.capacity
        drop = (state.count + insert.long() * p - x).clamp(min=0)
        if _host_checks_ok(drop) and not bool((drop > 0).any()):
            return state
        rows = torch.arange(x, device=state.device)
        src = (rows[None, :] + drop[:, None]).clamp(max=x - 1)
        count = state.count - drop
        long_tokens = (state.long_tokens - drop).clamp(min=0)
        work_frames = torch.minimum(state.work_frames, (count - long_tokens) // p)
        return self._gather_state(state, src, count).replace(
            long_tokens=long_tokens, work_frames=work_frames
        )

    def update(
        self,
        state: MemoryState,
        key: Float[Tensor, "B P C"],
        value: Float[Tensor, "B P C"],
    ) -> MemoryState:
        """End-of-step insertion: [`should_insert`][spatialmem.memory.SpatialMemory.should_insert],
        [`write`][spatialmem.memory.SpatialMemory.write], then (eval mode only)
        [`consolidate`][spatialmem.memory.SpatialMemory.consolidate].

        Args:
            state: the memory (may be updated in place when autograd is off).
            key: raw keys of the new frame (Spann3R: view 1's key).
            value: raw values of the new frame (Spann3R: value-encoder output + key).

        Returns:
            The new state.

        Raises:
            ValueError: wrong token shapes or a batch mismatch with ``state``; NaN/Inf keys or
                values (a value check, see [`set_value_checks`][spatialmem.set_value_checks]).
        """
        if checks_active():
            self._check_tokens("key", key, state)
            self._check_tokens("value", value, state)
        b = key.shape[0]
        with internal_calls():  # the policies below get validated inputs
            insert = self._checked(
                "should_insert", self.should_insert(state, key), ndim=1, floating=False,
                dims={0: b}, expected="B",
            )  # fmt: skip
            if insert.dtype != torch.bool:
                raise TypeError(
                    f"{type(self).__name__}.should_insert() must return a bool tensor, "
                    f"got {insert.dtype}"
                )
            state = self.write(state, key, value, insert)
            if not self.training:
                state = self.consolidate(state)
        return state

    # ------------------------------------------------------------------ consolidation
    def consolidation_scores(self, state: MemoryState) -> Float[Tensor, "B X"]:
        """Score of each token for consolidation; higher scores are kept first.

        Default: accumulated attention / age (the mean attention per insertion since the token
        was written). Age 0 is treated as 1 to avoid inf/NaN; those tokens are protected anyway.

        Args:
            state: the memory.

        Returns:
            Scores of every row (values of invalid rows are ignored).
        """
        return state.attn / state.age.clamp(min=1).to(state.attn.dtype)

    def protected(self, state: MemoryState) -> Bool[Tensor, "B X"]:
        """Tokens a consolidation must keep (ranked above every score).

        Default: valid tokens with ``age < protect_age`` (``work_mem_frames + 5``). The working
        memory is always kept in addition, whatever this returns.

        Args:
            state: the memory.

        Returns:
            Mask of protected rows.
        """
        return state.valid & (state.age < self.config.resolved_protect_age)

    def keep_mask(self, state: MemoryState) -> Bool[Tensor, "B X"]:
        """Tokens a consolidation of this state keeps.

        Default: ``top_k`` tokens of the whole memory: the working memory, then the
        [`protected`][spatialmem.memory.SpatialMemory.protected] tokens (newest first), then the
        highest [`consolidation_scores`][spatialmem.memory.SpatialMemory.consolidation_scores] (ties
        go to the older row), see [`keep_top_k`][spatialmem.memory.ops.keep_top_k].

        Args:
            state: the memory.

        Returns:
            Mask of kept rows (only used for samples that are over budget).
        """
        b, x = state.batch_size, state.capacity
        scores = self._checked(
            "consolidation_scores", self.consolidation_scores(state), ndim=2, floating=True,
            dims={0: b, 1: x}, expected=f"B X = {b} {x}",
        )  # fmt: skip
        prot = self._checked(
            "protected", self.protected(state), ndim=2, floating=False, dims={0: b, 1: x},
            expected=f"B X = {b} {x}",
        )  # fmt: skip
        return ops.keep_top_k(
            scores,
            prot.bool(),
            state.working_mask(),
            state.valid,
            state.age,
            self.config.resolved_top_k,
        )

    def consolidate(self, state: MemoryState) -> MemoryState:
        """Prune the samples whose long-term memory exceeds ``long_mem_tokens``.

        For those samples only the rows of [`keep_mask`][spatialmem.memory.SpatialMemory.keep_mask]
        (plus the whole working memory) remain, compacted to the front in chronological order, and
        the long-term count becomes ``kept - work_frames * P`` (``top_k - wm*P`` with the default
        policy, as the official model). Other samples are unchanged.

        Args:
            state: the memory.

        Returns:
            The new state.
        """
        need = state.long_tokens > self.config.long_mem_tokens
        if _host_checks_ok(need) and not bool(need.any()):
            return state
        b, x = state.batch_size, state.capacity
        keep = self._checked(
            "keep_mask", self.keep_mask(state), ndim=2, floating=False, dims={0: b, 1: x},
            expected=f"B X = {b} {x}",
        )  # fmt: skip
        kept = state.valid & (keep.bool() | state.working_mask() | ~need[:, None])
        src, count = ops.compaction_index(kept)
        out = self._gather_state(state, src, count)
        wm_tokens = state.work_frames * state.num_patches
        long_tokens = torch.where(need, (count - wm_tokens).clamp(min=0), state.long_tokens)
        return out.replace(long_tokens=long_tokens)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _gather_state(state: MemoryState, src: Tensor, count: Tensor) -> MemoryState:
        rows = torch.arange(state.capacity, device=state.device)
        valid = rows[None, :] < count[:, None]
        age = ops.gather_rows(state.age, src).masked_fill(~valid, 0)
        attn = ops.gather_rows(state.attn, src).masked_fill(~valid, 0.0)
        return state.replace(
            keys=ops.gather_rows(state.keys, src),
            values=ops.gather_rows(state.values, src),
            age=age,
            attn=attn,
            valid=valid,
            count=count,
        )

    def _checked(self, method: str, out: object, **kw: Any) -> Tensor:
        return check_tensor(f"{type(self).__name__}.{method}() return value", out, **kw)

    def _check_tokens(self, name: str, x: object, state: MemoryState) -> None:
        c = self.config.dim
        check_tensor(name, x, ndim=3, floating=True, dims={-1: c}, expected=f"B P C with C={c}")
        assert isinstance(x, Tensor)
        check_same_batch((name, "state.keys"), (x, state.keys))
        if x.shape[1] != state.num_patches:
            raise ValueError(
                f"`{name}` has {x.shape[1]} tokens per frame but the memory state was created "
                f"with num_patches={state.num_patches} ({tuple(x.shape)})"
            )
        if state.dim != c:
            raise ValueError(f"memory state has width {state.dim}, the memory expects {c}")
        check_finite(name, x)  # a value check: NaN would poison every later read-out


def _put_rows(
    buf: Tensor, rows: Tensor, new: Tensor, insert: Tensor, in_place: bool, every: bool
) -> Tensor:
    """Write ``new`` at ``rows`` for inserting samples (others rewrite their current rows);
    ``every``: all samples insert, known without reading ``insert`` again."""
    if buf.ndim == 3:
        idx = rows[..., None].expand(-1, -1, buf.shape[2])
        mask = insert[..., None]
    else:
        idx, mask = rows, insert
    src = new if every else torch.where(mask, new, buf.gather(1, idx))
    if in_place:
        return buf.scatter_(1, idx, src)
    return buf.scatter(1, idx, src)
