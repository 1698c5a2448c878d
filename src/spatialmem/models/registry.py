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


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build a registered model, with random weights or the weights shipped in the package.

    With ``pretrained=True`` the preset is filled with the weights the package ships for it
    (no download; the presets with weights are listed by
    [`pretrained_models`][spatialmem.models.pretrained.pretrained_models], e.g.
    ``spann3r_small_synthetic``, the default model of ``spatialmem demo``). Published weights
    are loaded afterwards with
    [`spatialmem.load_checkpoint`][spatialmem.interop.load_checkpoint]. To build a large model
    without allocating memory, create it under ``torch.device("meta")``.

    Args:
        name: a name from [`list_models`][spatialmem.models.list_models].
        pretrained: load the shipped weights
            ([`load_pretrained`][spatialmem.models.pretrained.load_pretrained]); overrides that
            change parameter shapes are then refused, those that keep them (a memory policy, a
            threshold) are allowed.
        **overrides: configuration fields to change (e.g. ``portrait="native"``).

    Returns:
        The model (in training mode, as any freshly built module: call ``.eval()`` for
        inference).

    Raises:
        ValueError: unknown model name; ``pretrained=True`` for a model without shipped weights
            or with overrides that change parameter shapes.
        TypeError: unknown configuration field.

    Example:
        ```python
        from spatialmem.models import create_model

        model = create_model("spann3r_small_synthetic", pretrained=True).eval()
        ```
    """
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}") from None
    if not pretrained:
        return entry(**overrides)
    from spatialmem.models.pretrained import load_pretrained, pretrained_models

    if name not in pretrained_models():
        raise ValueError(
            f"no pretrained weights are shipped for {name!r}; models with shipped weights: "
            f"{pretrained_models()}. Published checkpoints (e.g. spann3r.pth) load with "
            f"spatialmem.load_checkpoint(model, path) into create_model({name!r})"
        )
    model = entry(**overrides)
    load_pretrained(model, name, overrides=overrides)
    return model
