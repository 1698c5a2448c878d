"""Composable criteria: [`Criterion`][spatialmem.losses.Criterion],
[`LossOutput`][spatialmem.losses.LossOutput] and
[`CombinedCriterion`][spatialmem.losses.CombinedCriterion].

Every criterion is an ``nn.Module`` called as ``criterion(pred, target)`` that returns a
[`LossOutput`][spatialmem.losses.LossOutput] (or a subclass with more fields). Criteria combine with
``+`` and scale with ``*``:

```python
criterion = ConfidenceRegression(alpha=0.4) + 0.5 * ScaleLoss()
out = criterion(pred, target)
out.loss.backward()             # 1.0 * conf loss + 0.5 * scale loss
out.parts["ScaleLoss"].loss     # each part's full output stays available
```
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from spatialmem._typing import Float

__all__ = ["CombinedCriterion", "CombinedOutput", "Criterion", "LossOutput"]


@dataclass(eq=False, kw_only=True)
class LossOutput:
    """What every criterion returns."""

    loss: Float[Tensor, ""]
    """The scalar to backpropagate."""
    details: dict[str, Tensor] = field(default_factory=dict)
    """Named 0-dim, detached tensors for logging (no device synchronisation; call ``float()``
    on them when logging)."""


@dataclass(eq=False, kw_only=True)
class CombinedOutput(LossOutput):
    """Output of a [`CombinedCriterion`][spatialmem.losses.CombinedCriterion]:
    ``loss = sum(weights[n] * parts[n].loss)``."""

    parts: dict[str, LossOutput]
    """Each part's own output, keyed by the part's name."""
    weights: dict[str, float]
    """The weight of each part."""


class Criterion(nn.Module):
    """Base class of the losses: ``forward(pred, target) -> LossOutput``.

    Subclasses implement [`forward`][spatialmem.losses.Criterion.forward]. ``a + b`` builds a
    [`CombinedCriterion`][spatialmem.losses.CombinedCriterion] summing the two losses, ``w * a`` (or
    ``a * w``) one that scales ``a``'s loss by the float ``w``; combinations nest and flatten
    (``2 * (a + b)`` is ``2 * a + 2 * b``).
    """

    def forward(self, pred: Any, target: Any) -> LossOutput:  # pragma: no cover - abstract
        """Compute the loss of ``pred`` against ``target`` (implemented by every subclass)."""
        raise NotImplementedError

    def _weighted_parts(self) -> list[tuple[float, "Criterion"]]:
        return [(1.0, self)]

    def __add__(self, other: object) -> "CombinedCriterion":
        if not isinstance(other, Criterion):
            return NotImplemented
        return CombinedCriterion(self._weighted_parts() + other._weighted_parts())

    def __radd__(self, other: object) -> "Criterion":
        # Lets ``sum([a, b, c])`` work (it starts from the int 0).
        if isinstance(other, int | float) and other == 0:
            return self
        return NotImplemented

    def __mul__(self, weight: object) -> "CombinedCriterion":
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            return NotImplemented
        return CombinedCriterion([(float(weight) * w, c) for w, c in self._weighted_parts()])

    __rmul__ = __mul__

    def __neg__(self) -> "CombinedCriterion":
        return self * -1.0

    def __sub__(self, other: object) -> "CombinedCriterion":
        if not isinstance(other, Criterion):
            return NotImplemented
        return self + (-1.0) * other


class CombinedCriterion(Criterion):
    """Weighted sum of criteria sharing the same ``(pred, target)`` inputs.

    Usually built with ``+`` and ``*`` rather than directly.

    Args:
        parts: ``(weight, criterion)`` pairs. Parts are named after their class
            (``"ScaleLoss"``), with ``"_1"``, ``"_2"``, ... appended to repeated names.
    """

    def __init__(self, parts: Iterable[tuple[float, Criterion]]) -> None:
        super().__init__()
        parts = list(parts)
        if not parts:
            raise ValueError("`parts` must hold at least one (weight, criterion) pair")
        names: list[str] = []
        for weight, criterion in parts:
            if not isinstance(criterion, Criterion):
                raise TypeError(
                    f"parts must be Criterion instances, got {type(criterion).__name__}"
                )
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise TypeError(f"weights must be floats, got {weight!r}")
            base = type(criterion).__name__
            name, k = base, 0
            while name in names:
                k += 1
                name = f"{base}_{k}"
            names.append(name)
        self.criteria = nn.ModuleDict(dict(zip(names, (c for _, c in parts), strict=True)))
        self.weights: dict[str, float] = {
            n: float(w) for n, (w, _) in zip(names, parts, strict=True)
        }

    def _weighted_parts(self) -> list[tuple[float, Criterion]]:
        return [(self.weights[n], c) for n, c in self.criteria.items()]  # type: ignore[misc]

    def forward(self, pred: Any, target: Any) -> CombinedOutput:
        """Evaluate every part on ``(pred, target)`` and sum the weighted losses.

        ``details`` holds ``"<part>"`` (the part's unweighted loss, detached) and
        ``"<part>.<key>"`` for every entry of the part's own details.
        """
        outputs: dict[str, LossOutput] = {}
        total: Tensor | None = None
        details: dict[str, Tensor] = {}
        for name, criterion in self.criteria.items():
            out = criterion(pred, target)
            outputs[name] = out
            term = self.weights[name] * out.loss
            total = term if total is None else total + term
            details[name] = out.loss.detach()
            details.update({f"{name}.{k}": v for k, v in out.details.items()})
        assert total is not None
        return CombinedOutput(
            loss=total, details=details, parts=outputs, weights=dict(self.weights)
        )

    def extra_repr(self) -> str:
        return "weights=" + ", ".join(f"{n}: {w:g}" for n, w in self.weights.items())
