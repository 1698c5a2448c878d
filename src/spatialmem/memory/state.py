"""Per-sequence tensors of a spatial memory ([`MemoryState`][spatialmem.memory.MemoryState]).

The state is separate from the network ([`SpatialMemory`][spatialmem.memory.SpatialMemory]), as XMem
keeps its memory store apart from the network: one model can drive many independent streams, and a
stream can be paused, saved, moved to another device and resumed.
"""

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from spatialmem._checks import check_tensor, checks_active
from spatialmem._typing import Bool, Float, Int
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = ["MemoryState"]

_ROW_FIELDS = ("keys", "values", "age", "attn", "valid")
_COUNTER_FIELDS = ("count", "work_frames", "long_tokens")
_STATE_DICT_VERSION = 1


@dataclass(eq=False)
class MemoryState(TensorDataclass):
    """Fixed-capacity memory of a batch of streams: keys, values and per-token statistics.

    All tensors are allocated once with a capacity ``X`` (rows) and never grow. Row ``j`` of
    sample ``b`` holds a token when ``valid[b, j]`` is true. The valid rows of a sample always form
    the prefix ``[0, count[b])`` and are kept in chronological order (oldest first), so the working
    memory of a sample is its last ``work_frames[b] * num_patches`` valid rows and the long-term
    memory the ``long_tokens[b]`` rows before them. Samples of one batch may hold different
    numbers of tokens.

    Create one with [`SpatialMemory.init_state`][spatialmem.memory.SpatialMemory.init_state]
    (or [`empty`][spatialmem.memory.MemoryState.empty]); the policies of
    [`SpatialMemory`][spatialmem.memory.SpatialMemory] return updated states. The methods that
    change a state (``write``, ``update``, ``consolidate``) may modify the given state's
    ``keys``/``values`` buffers in place when autograd is off; call
    [`clone`][spatialmem.memory.MemoryState.clone] first to keep a snapshot.
    """

    keys: Float[Tensor, "B X C"]
    """Raw (un-normalised) memory keys; rows outside the valid prefix hold stale data."""
    values: Float[Tensor, "B X C"]
    """Raw memory values (in Spann3R: value-encoder output + key)."""
    age: Int[Tensor, "B X"]
    """Insertions since the token was written (0 for the newest frame; official ``mem_count``)."""
    attn: Float[Tensor, "B X"]
    """Accumulated attention: per token, the sum over all reads and queries of the applied
    weights (official ``mem_attn``)."""
    valid: Bool[Tensor, "B X"]
    """Which rows hold a token (always the prefix ``[0, count)``)."""
    count: Int[Tensor, "B"]
    """Number of tokens held per sample."""
    work_frames: Int[Tensor, "B"]
    """Frames in the working memory per sample (official ``wm``; stays 0 in training mode)."""
    long_tokens: Int[Tensor, "B"]
    """Tokens in the long-term memory per sample (official ``lm``; stays 0 in training mode)."""
    num_patches: int
    """Tokens per frame ``P``: one insertion writes exactly this many rows."""

    def __post_init__(self) -> None:
        self.validate()

    def replace(self, **changes: Any) -> "MemoryState":
        """A new state of the same class with some fields replaced (the others are shared, not
        copied). Extra fields of a subclass are carried along unchanged.

        Called by a user, the new state is validated; called inside the library's own loop (see
        [internal_calls][spatialmem._checks.internal_calls]) it is not, since every step would
        otherwise re-check every field.
        """
        out = super().replace(**changes)
        if checks_active():
            out.validate()
        return out

    def validate(self) -> None:
        """Check the fields' shapes, dtypes and ``num_patches`` against each other.

        Raises:
            TypeError: a field has the wrong kind of dtype.
            ValueError: a field has the wrong rank or size.
        """
        keys = check_tensor("MemoryState.keys", self.keys, ndim=3, floating=True, expected="B X C")
        b, x, c = keys.shape
        check_tensor(
            "MemoryState.values", self.values, ndim=3, floating=True, dims={0: b, 1: x, 2: c},
            expected=f"B X C = {b} {x} {c}",
        )  # fmt: skip
        for name in ("age", "attn", "valid"):
            check_tensor(
                f"MemoryState.{name}", getattr(self, name), ndim=2, dims={0: b, 1: x},
                expected=f"B X = {b} {x}",
            )  # fmt: skip
        for name in _COUNTER_FIELDS:
            check_tensor(
                f"MemoryState.{name}", getattr(self, name), ndim=1, floating=False, dims={0: b},
                expected=f"B = {b}",
            )  # fmt: skip
        if self.age.is_floating_point() or self.age.dtype == torch.bool:
            raise TypeError(f"`MemoryState.age` must have an integer dtype, got {self.age.dtype}")
        if not self.attn.is_floating_point():
            raise TypeError(f"`MemoryState.attn` must have a floating dtype, got {self.attn.dtype}")
        if self.valid.dtype != torch.bool:
            raise TypeError(
                f"`MemoryState.valid` must have dtype torch.bool, got {self.valid.dtype}"
            )
        if not isinstance(self.num_patches, int) or self.num_patches <= 0:
            raise ValueError(
                f"`MemoryState.num_patches` must be a positive int, got {self.num_patches!r}"
            )
        if self.num_patches > x:
            raise ValueError(
                f"memory capacity {x} is smaller than one frame ({self.num_patches} tokens)"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(
        cls,
        batch_size: int,
        num_patches: int,
        capacity: int,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> "MemoryState":
        """Allocate an empty state.

        Args:
            batch_size: number of independent streams ``B``.
            num_patches: tokens per frame ``P``.
            capacity: rows per sample ``X`` (see
                [`MemoryConfig.capacity`][spatialmem.memory.MemoryConfig.capacity]).
            dim: token width ``C``.
            device: where to allocate.
            dtype: floating dtype of keys, values and accumulated attention.

        Returns:
            A state holding no token.
        """
        if batch_size <= 0 or dim <= 0:
            raise ValueError(
                f"`batch_size` and `dim` must be positive, got batch_size={batch_size}, dim={dim}"
            )
        if not dtype.is_floating_point:
            raise TypeError(f"`dtype` must be a floating dtype, got {dtype}")
        b, x = batch_size, capacity
        kw: dict[str, Any] = {"device": device}
        return cls(
            keys=torch.zeros(b, x, dim, dtype=dtype, **kw),
            values=torch.zeros(b, x, dim, dtype=dtype, **kw),
            age=torch.zeros(b, x, dtype=torch.long, **kw),
            attn=torch.zeros(b, x, dtype=dtype, **kw),
            valid=torch.zeros(b, x, dtype=torch.bool, **kw),
            count=torch.zeros(b, dtype=torch.long, **kw),
            work_frames=torch.zeros(b, dtype=torch.long, **kw),
            long_tokens=torch.zeros(b, dtype=torch.long, **kw),
            num_patches=int(num_patches),
        )

    @classmethod
    def from_base(cls, base: "MemoryState", **extra: Any) -> "MemoryState":
        """Build a subclass state (one with extra fields) from a plain state plus those fields.

        Example: ``GeoState.from_base(memory.init_state(b, p), last_centre=torch.zeros(b, 3))``.
        Tensors are shared, not copied.
        """
        kw = {f.name: getattr(base, f.name) for f in fields(base)}
        kw.update(extra)
        return cls(**kw)

    # ------------------------------------------------------------------ properties
    @property
    def batch_size(self) -> int:
        """Number of streams ``B``."""
        return self.keys.shape[0]

    @property
    def capacity(self) -> int:
        """Rows per sample ``X``."""
        return self.keys.shape[1]

    @property
    def dim(self) -> int:
        """Token width ``C``."""
        return self.keys.shape[2]

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.keys.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of keys, values and accumulated attention."""
        return self.keys.dtype

    def working_mask(self) -> Bool[Tensor, "B X"]:
        """Rows of the working memory: the last ``work_frames * num_patches`` valid rows."""
        rows = torch.arange(self.capacity, device=self.device)
        start = self.count - self.work_frames * self.num_patches
        return self.valid & (rows[None, :] >= start[:, None])

    def long_term_mask(self) -> Bool[Tensor, "B X"]:
        """Valid rows outside the working memory."""
        return self.valid & ~self.working_mask()

    def narrow(self, rows: int) -> "MemoryState":
        """A view of the first ``rows`` rows (which must cover every valid row).

        Counters and ``num_patches`` are shared; the row tensors are views, not copies.
        """
        if not 0 < rows <= self.capacity:
            raise ValueError(f"`rows` must lie in [1, {self.capacity}], got {rows}")
        return self.replace(**{name: getattr(self, name)[:, :rows] for name in _ROW_FIELDS})

    # ------------------------------------------------------------------ tensor plumbing
    def _tensor_fields(self) -> list[str]:
        """Names of the tensor-valued fields (the built-in ones and those of a subclass)."""
        return [f.name for f in fields(self) if isinstance(getattr(self, f.name), Tensor)]

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "MemoryState":
        """Move to ``device`` and/or cast the floating fields (keys, values, attn) to ``dtype``.

        Integer and boolean fields keep their dtype.
        """

        def move(t: Tensor) -> Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        return self.apply(move)

    def state_dict(self) -> dict[str, Any]:
        """Every field (all rows, including the stale ones, so a resumed stream is
        bit-identical) plus a format version. The tensors are shared, not copied; save the dict
        with ``torch.save`` (it loads with ``weights_only=True``). Extra tensor or plain fields
        of a subclass are included."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["version"] = _STATE_DICT_VERSION
        return out

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, Any], *, device: torch.device | str | None = None
    ) -> "MemoryState":
        """Build a new state of this class from
        [`state_dict`][spatialmem.memory.MemoryState.state_dict] output (tensors are copied)."""
        _check_state_dict(state_dict)
        kw = {}
        for f in fields(cls):
            if f.name not in state_dict:
                raise KeyError(f"{cls.__name__} state_dict is missing {f.name!r}")
            v = state_dict[f.name]
            kw[f.name] = v.to(device=device, copy=True) if isinstance(v, Tensor) else v
        return cls(**kw)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy a saved state into this one in place (shapes and ``num_patches`` must match)."""
        _check_state_dict(state_dict)
        if int(state_dict["num_patches"]) != self.num_patches:
            raise ValueError(
                f"state_dict has num_patches={state_dict['num_patches']}, "
                f"this state {self.num_patches}"
            )
        for name in self._tensor_fields():
            if name not in state_dict:
                raise KeyError(f"state_dict is missing {name!r}")
            src, dst = state_dict[name], getattr(self, name)
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(
                    f"state_dict[{name!r}] has shape {tuple(src.shape)}, "
                    f"expected {tuple(dst.shape)}"
                )
            with torch.no_grad():
                dst.copy_(src)


def _check_state_dict(state_dict: dict[str, Any]) -> None:
    missing = [k for k in (*_ROW_FIELDS, *_COUNTER_FIELDS, "num_patches") if k not in state_dict]
    if missing:
        raise KeyError(f"MemoryState state_dict is missing {missing}")
    version = state_dict.get("version", _STATE_DICT_VERSION)
    if version != _STATE_DICT_VERSION:
        raise ValueError(f"unsupported MemoryState state_dict version {version}")
