"""Model registry: published architectures by name."""

import fnmatch
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Decorator registering a model entry point under the function's name.

    The entry point takes keyword overrides of the model configuration and returns the model.
    """
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model with random weights.

    Load published weights afterwards with
    [`spatialmem.load_checkpoint`][spatialmem.interop.load_checkpoint]. To build a large model
    without allocating memory, create it under ``torch.device("meta")``.

    Args:
        name: a name from [`list_models`][spatialmem.models.list_models].
        **overrides: configuration fields to change (e.g. ``portrait="native"``).

    Raises:
        ValueError: unknown model name.
        TypeError: unknown configuration field.
    """
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}") from None
    return entry(**overrides)
