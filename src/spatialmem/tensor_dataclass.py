"""A small base for dataclasses of batch-first tensors (after nerfstudio's ``TensorDataclass``).

Every container of the library (memory states, encoded frames, step predictions, targets,
batches, outputs) derives from [TensorDataclass][spatialmem.tensor_dataclass.TensorDataclass], so
moving, detaching, copying, indexing and concatenating them is one generic operation instead of a
field-by-field copy in each caller.

Fields are handled by kind: a tensor is transformed; a nested
[TensorDataclass][spatialmem.tensor_dataclass.TensorDataclass] is transformed recursively; a list
or tuple whose items are tensors (e.g. a decoder's per-layer tokens) is transformed item by item;
``None`` and plain values (ints, tuples of ints, flags) are carried along unchanged. Every tensor
field is batch-first: dimension 0 is the batch ``B``.

Derived containers are built by copying the instance and setting the new field values, so a
subclass's ``__post_init__`` checks run when a user constructs a container, not again on every
derived one (a container derived from a valid one by a batch-consistent operation stays valid).
"""

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["TensorDataclass"]

TensorFn = Callable[[Tensor], Tensor]
# A TypeVar rather than typing.Self: beartype (the test suite's runtime checker) accepts the
# latter only on methods of classes it decorates itself.
T = TypeVar("T", bound="TensorDataclass")


def _is_tensor_list(value: object) -> bool:
    return isinstance(value, list | tuple) and len(value) > 0 and isinstance(value[0], Tensor)


def _map_value(value: Any, fn: TensorFn) -> Any:
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, TensorDataclass):
        return value.apply(fn)
    if _is_tensor_list(value):
        return type(value)(fn(t) for t in value)
    return value


def _join_values(name: str, values: list[Any], join: Callable[[list[Tensor]], Tensor]) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        return join(values)
    if isinstance(first, TensorDataclass):
        return type(first)._join(values, join)
    if _is_tensor_list(first):
        lengths = {len(v) for v in values}
        if len(lengths) != 1:
            raise ValueError(f"field `{name}` holds lists of different lengths {sorted(lengths)}")
        return type(first)(join(list(items)) for items in zip(*values, strict=True))
    if any(v != first for v in values[1:]):
        raise ValueError(
            f"field `{name}` differs between the items ({values!r}); only tensor fields may differ"
        )
    return first


class TensorDataclass:
    """Mixin for ``@dataclass`` containers whose tensor fields share a leading batch dimension.

    Example:
        ```python
        from dataclasses import dataclass
        import torch
        from torch import Tensor
        from spatialmem.tensor_dataclass import TensorDataclass

        @dataclass
        class Points(TensorDataclass):
            xyz: Tensor      # [B, N, 3]
            label: str = "points"

        batch = Points(torch.zeros(4, 10, 3))
        batch[1:3].xyz.shape                    # torch.Size([2, 10, 3])
        Points.cat([batch, batch]).xyz.shape    # torch.Size([8, 10, 3])
        ```
    """

    def apply(self: T, fn: TensorFn) -> T:
        """A copy with ``fn`` applied to every tensor (nested containers and tensor lists too).

        Args:
            fn: maps a tensor to a tensor.

        Returns:
            A new container of the same class; non-tensor fields are shared.
        """
        changes = {f.name: _map_value(getattr(self, f.name), fn) for f in dataclasses.fields(self)}
        return self.replace(**changes)

    def replace(self: T, **changes: Any) -> T:
        """A copy with some fields replaced; the others are shared, not copied.

        Unlike ``dataclasses.replace`` this does not run ``__post_init__`` again: the caller
        vouches for the new values (the library's own derived states are consistent by
        construction). Unknown field names raise ``TypeError``.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {unknown}")
        out = copy.copy(self)
        for name, value in changes.items():
            object.__setattr__(out, name, value)
        return out

    def to(self: T, *args: Any, **kwargs: Any) -> T:
        """``Tensor.to`` on every tensor (device and/or dtype; a dtype casts every tensor, so
        containers with integer fields usually want a device only)."""
        return self.apply(lambda t: t.to(*args, **kwargs))

    def detach(self: T) -> T:
        """Every tensor detached from the autograd graph (storage shared)."""
        return self.apply(Tensor.detach)

    def clone(self: T) -> T:
        """A deep copy of every tensor (new storage)."""
        return self.apply(Tensor.clone)

    def pin_memory(self: T) -> T:
        """Page-locked copies of every tensor (called by ``DataLoader(pin_memory=True)``)."""
        return self.apply(Tensor.pin_memory)

    def __getitem__(self: T, index: Any) -> T:
        """Index every tensor along the batch dimension.

        A slice, a list or an index tensor keeps the batch dimension (``x[1:3]``, ``x[[0, 2]]``);
        an int removes it, which gives a container that no longer follows the batch-first
        layout, so use ``x[i : i + 1]`` to take one sample.
        """
        return self.apply(lambda t: t[index])

    @classmethod
    def _join(cls: type[T], items: Sequence[T], join: Callable[[list[Tensor]], Tensor]) -> T:
        if len(items) == 0:
            raise ValueError(f"cannot join an empty sequence of {cls.__name__}")
        first = items[0]
        for item in items:
            if type(item) is not type(first):
                raise TypeError(
                    f"cannot join {type(item).__name__} with {type(first).__name__}: "
                    "all items must be of one class"
                )
        changes = {
            f.name: _join_values(f.name, [getattr(i, f.name) for i in items], join)
            for f in dataclasses.fields(first)
        }
        return first.replace(**changes)

    @classmethod
    def cat(cls: type[T], items: Sequence[T], dim: int = 0) -> T:
        """Concatenate containers along the batch dimension (``torch.cat`` on every tensor).

        Args:
            items: containers of one class; non-tensor fields must be equal.
            dim: the dimension to concatenate (0: the batch).
        """
        return cls._join(items, lambda ts: torch.cat(ts, dim=dim))

    @classmethod
    def stack(cls: type[T], items: Sequence[T], dim: int = 0) -> T:
        """Stack containers along a new dimension (``torch.stack`` on every tensor).

        Args:
            items: containers of one class; non-tensor fields must be equal.
            dim: where the new dimension goes.
        """
        return cls._join(items, lambda ts: torch.stack(ts, dim=dim))
