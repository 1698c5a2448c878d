"""Loading and saving weights in the official and in spatialmem's own checkpoint layouts."""

import argparse
import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spatialmem.interop.keymap import DUST3R_RULES, SPANN3R_RULES, KeyMap, Rule
from spatialmem.models import DUSt3R, Spann3R

__all__ = [
    "CheckpointError",
    "LoadReport",
    "load_checkpoint",
    "official_keymap",
    "official_state_dict",
    "register_official_layout",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT_NAME = "spatialmem"
FORMAT_VERSION = 1

_LAYOUTS: dict[type[nn.Module], KeyMap] = {
    DUSt3R: KeyMap(DUST3R_RULES),
    Spann3R: KeyMap(SPANN3R_RULES),
}


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped tensors)."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    layout: str
    """``"official"`` or ``"spatialmem"``."""
    loaded: int
    """Number of model tensors that received a value."""
    missing: list[str] = field(default_factory=list)
    """Model keys absent from the checkpoint (non-empty only with ``strict=False``)."""
    unexpected: list[str] = field(default_factory=list)
    """Checkpoint keys the model has no place for (non-empty only with ``strict=False``)."""


def register_official_layout(model_class: type[nn.Module], rules: tuple[Rule, ...]) -> None:
    """Declare how ``model_class``'s parameter names map to an official checkpoint layout."""
    _LAYOUTS[model_class] = KeyMap(rules)


def official_keymap(model: nn.Module) -> KeyMap:
    """The :class:`KeyMap` of a model class (looked up along its MRO).

    Raises:
        TypeError: the model has no official counterpart.
    """
    for cls in type(model).__mro__:
        if cls in _LAYOUTS:
            return _LAYOUTS[cls]
    raise TypeError(f"{type(model).__name__} has no official checkpoint layout")


def official_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's weights under the official key names.

    Aliased official keys (the DPT ``scratch.layer{k}_rn`` / ``scratch.layer_rn.{k-1}`` pairs)
    are both present and share one tensor, as in the published files. The result can be saved
    with ``torch.save({"model": sd}, path)`` and loaded by the official code.
    """
    keymap = official_keymap(model)
    return {
        off: tensor for key, tensor in model.state_dict().items() for off in keymap.to_official(key)
    }


def _read(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(path_or_dict, Mapping):
        return path_or_dict
    path = Path(path_or_dict)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    # The published files store their training arguments as an argparse.Namespace; allowing that
    # one class keeps `weights_only=True` (no arbitrary code runs while unpickling).
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in several types
        raise CheckpointError(
            f"could not load {path} with weights_only=True: {exc}. spatialmem never unpickles "
            "arbitrary objects; re-save the file's state dict with torch.save."
        ) from exc


def _unwrap(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """Return the state dict inside a checkpoint object and its declared layout."""
    if obj.get("format") == FORMAT_NAME:
        return obj["state_dict"], "spatialmem"
    for key in ("model", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            return inner, None
    if all(isinstance(v, Tensor) for v in obj.values()):
        return obj, None
    raise CheckpointError(
        "unrecognised checkpoint: expected a state dict, {'model': state_dict, ...} "
        f"(published layout) or a spatialmem checkpoint; top-level keys: {sorted(obj)[:10]}"
    )


def _translate(
    model: nn.Module, state: Mapping[str, Any], layout: str | None
) -> tuple[dict[str, Tensor], list[str], str]:
    own = model.state_dict()
    if layout == "spatialmem" or set(state) <= set(own):
        return dict(state), [k for k in state if k not in own], "spatialmem"
    back = official_keymap(model).official_to_ours(list(own))
    mapped: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    unexpected = []
    for key, value in state.items():
        ours = back.get(key)
        if ours is None:
            unexpected.append(key)
            continue
        if ours in mapped:
            # An alias of a tensor already read: the published files store both names.
            if value.shape != mapped[ours].shape or not _same_values(value, mapped[ours]):
                raise CheckpointError(
                    f"alias keys {source[ours]!r} and {key!r} hold different tensors"
                )
            continue
        mapped[ours], source[ours] = value, key
    return mapped, unexpected, "official"


def _same_values(a: Tensor, b: Tensor) -> bool:
    """Equal values; meta tensors (shape-only checkpoints) compare by storage identity."""
    if a.is_meta or b.is_meta:
        return a is b or (a.is_meta and b.is_meta)
    return torch.equal(a, b)


def _summary(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_checkpoint(
    model: nn.Module,
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
    strict: bool = True,
) -> LoadReport:
    """Load weights into ``model`` from a published or a spatialmem checkpoint.

    Accepted inputs: a file path or an already loaded object that is a published checkpoint
    (``{"model": state_dict, "args": ...}``, official key names), a file written by
    :func:`save_checkpoint`, or a bare state dict in either naming. Files are read with
    ``torch.load(weights_only=True)``; no string from a checkpoint is ever evaluated. A model
    on the meta device receives the checkpoint tensors themselves (``assign=True``).

    Args:
        model: the model to fill, e.g. from :func:`spatialmem.create_model`.
        path_or_dict: checkpoint file or loaded object.
        strict: raise on missing or unexpected keys (shape mismatches always raise).

    Returns:
        A :class:`LoadReport`.

    Raises:
        CheckpointError: keys or shapes do not match (the message lists them), or the file cannot
            be read safely.
    """
    state, layout = _unwrap(_read(path_or_dict))
    mapped, unexpected, layout = _translate(model, state, layout)
    own = model.state_dict()
    missing = [k for k in own if k not in mapped]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"shape mismatch for {len(mismatched)} tensors: {_summary(mismatched)}"
        )
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys: {_summary(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {_summary(unexpected)}")
        raise CheckpointError(
            f"checkpoint ({layout} layout) does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    to_load = {k: v for k, v in mapped.items() if k in own}
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(to_load, strict=False, assign=on_meta)
    if missing or unexpected:
        logger.warning(
            "load_checkpoint: %d missing, %d unexpected keys", len(missing), len(unexpected)
        )
    return LoadReport(layout=layout, loaded=len(to_load), missing=missing, unexpected=unexpected)


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], **extra: Any) -> None:
    """Save ``model`` in spatialmem's layout: weights, configuration and ``extra`` metadata.

    ``extra`` values must be plain data (numbers, strings, lists, dicts, tensors) so the file
    loads with ``weights_only=True``.
    """
    config = getattr(model, "config", None)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None,
        "state_dict": model.state_dict(),
        **extra,
    }
    torch.save(payload, Path(path))
