"""Loading and saving weights in the official and in spatialmem's own checkpoint layouts."""

import argparse
import dataclasses
import logging
import os
import pickle
import re
import zipfile
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
# Entries of a spatialmem checkpoint written by save_checkpoint itself; the rest is `extra`.
_HEADER_KEYS = ("format", "format_version", "model_class", "config", "state_dict")

_LAYOUTS: dict[type[nn.Module], KeyMap] = {
    DUSt3R: KeyMap(DUST3R_RULES),
    Spann3R: KeyMap(SPANN3R_RULES),
}


class CheckpointError(ValueError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped tensors)."""


@dataclass
class LoadReport:
    """What [`load_checkpoint`][spatialmem.interop.load_checkpoint] did."""

    layout: str
    """``"official"`` or ``"spatialmem"``."""
    loaded: int
    """Number of model tensors that received a value."""
    missing: list[str] = field(default_factory=list)
    """Model keys absent from the checkpoint (non-empty only with ``strict=False``)."""
    unexpected: list[str] = field(default_factory=list)
    """Checkpoint keys the model has no place for (non-empty only with ``strict=False``)."""
    config_mismatch: list[str] = field(default_factory=list)
    """Spatialmem layout only: where the model class and configuration stored by
    [`save_checkpoint`][spatialmem.interop.save_checkpoint] differ from the model's, one
    ``"<field>: checkpoint <value> vs model <value>"`` entry each (nested fields dotted, e.g.
    ``"dust3r.portrait"``). The weights are loaded all the same (a deliberately changed setting
    such as a memory threshold keeps the weights valid) and a warning is logged. Fields the
    checkpoint does not hold (added since it was written) or the model does not have (removed
    since) are not compared."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Spatialmem layout only: the ``extra`` entries given to
    [`save_checkpoint`][spatialmem.interop.save_checkpoint] (e.g. the training ``step``,
    ``epoch`` and ``train_config``); empty for other layouts."""


def register_official_layout(model_class: type[nn.Module], rules: tuple[Rule, ...]) -> None:
    """Declare how ``model_class``'s parameter names map to an official checkpoint layout."""
    _LAYOUTS[model_class] = KeyMap(rules)


def official_keymap(model: nn.Module) -> KeyMap:
    """The [`KeyMap`][spatialmem.interop.KeyMap] of a model class (looked up along its MRO).

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
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        # A text file can read as "pickle" opcodes too: the advice is only for torch.save files.
        refused = found is not None or "weights only" in str(exc).lower()
        if not (refused and _torch_format(path)):
            raise CheckpointError(_unreadable(path, exc)) from exc
        what = f" (it holds a {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} holds pickled Python objects that weights_only=True refuses{what}. "
            "spatialmem never unpickles arbitrary objects; if you trust the file, load it with "
            "torch.load(weights_only=False) and re-save its state dict with torch.save."
        ) from exc
    except Exception as exc:  # truncated archives, empty or foreign files: several types
        raise CheckpointError(_unreadable(path, exc)) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a checkpoint (expected a state dict or "
            "a dict with one)"
        )
    return obj


def _torch_format(path: Path) -> bool:
    """Whether the file starts like a ``torch.save`` file (a zip archive or a binary pickle)."""
    with path.open("rb") as f:
        head = f.read(4)
    return head[:1] == b"\x80" or head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path)


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``path`` is not a readable PyTorch checkpoint, in one sentence."""
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        reason = "the file is empty"
    elif _torch_format(path):
        detail = str(exc).split(". ")[0].strip() or type(exc).__name__
        reason = f"it is truncated or corrupt ({detail})"
    else:
        reason = f"it is not a file written by torch.save (it begins with {head!r})"
    return f"{path} is not a readable PyTorch checkpoint: {reason}; download or save it again"


def _unwrap(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    """Return the state dict inside a checkpoint object and its declared layout."""
    if obj.get("format") == FORMAT_NAME:
        version = obj.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format version {version!r} is newer than this spatialmem reads "
                f"({FORMAT_VERSION}); upgrade spatialmem to load it"
            )
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
    try:
        back = official_keymap(model).official_to_ours(list(own))
    except TypeError:  # no official layout: only spatialmem's naming applies
        back = {}
    # The layout whose key set overlaps the checkpoint's most: a spatialmem state dict with an
    # extra key is reported as such, not as an official one missing every key.
    if len(set(state) & set(own)) >= len(set(state) & set(back)):
        return dict(state), [k for k in state if k not in own], "spatialmem"
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


def _config_differences(stored: Any, current: Any, prefix: str = "") -> list[str]:
    """``"<field>: checkpoint <a> vs model <b>"`` for every field that both configurations hold
    with different values (nested dicts compared field by field, sequences as tuples)."""
    if isinstance(stored, Mapping) and isinstance(current, Mapping):
        return [
            diff
            for key in stored
            if key in current
            for diff in _config_differences(stored[key], current[key], f"{prefix}{key}.")
        ]
    if isinstance(stored, list | tuple) and isinstance(current, list | tuple):
        stored, current = tuple(stored), tuple(current)
    if stored == current:
        return []
    return [f"{prefix.rstrip('.')}: checkpoint {stored!r} vs model {current!r}"]


def _check_header(model: nn.Module, obj: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Compare a spatialmem checkpoint's model class and configuration with ``model``'s.

    Returns:
        ``(config_mismatch, metadata)`` as in [`LoadReport`][spatialmem.interop.LoadReport].
    """
    mismatch = []
    stored_class = obj.get("model_class")
    if stored_class is not None and stored_class not in {c.__name__ for c in type(model).__mro__}:
        mismatch.append(
            f"model_class: checkpoint {stored_class!r} vs model {type(model).__name__!r}"
        )
    stored_config = obj.get("config")
    config = getattr(model, "config", None)
    if isinstance(stored_config, Mapping) and dataclasses.is_dataclass(config):
        mismatch += _config_differences(stored_config, dataclasses.asdict(config))
    metadata = {k: v for k, v in obj.items() if k not in _HEADER_KEYS}
    return mismatch, metadata


def _cast_floats(state: dict[str, Tensor], own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Cast floating-point tensors stored in another dtype than the model's, with a warning."""
    casts: dict[tuple[torch.dtype, torch.dtype], list[str]] = {}
    for key, value in state.items():
        target = own[key].dtype
        if value.is_floating_point() and own[key].is_floating_point() and value.dtype != target:
            casts.setdefault((value.dtype, target), []).append(key)
    for (src, dst), keys in casts.items():
        logger.warning(
            "load_checkpoint: %d tensors stored as %s are cast to the model's %s: %s",
            len(keys),
            src,
            dst,
            _summary(keys),
        )
        for key in keys:
            state[key] = state[key].to(dst)
    return state


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
    [`save_checkpoint`][spatialmem.interop.save_checkpoint], or a bare state dict in either naming.
    Files are read with ``torch.load(weights_only=True)``; no string from a checkpoint is ever
    evaluated. A model on the meta device receives the checkpoint tensors themselves
    (``assign=True``). For a file written by
    [`save_checkpoint`][spatialmem.interop.save_checkpoint] the stored model class and
    configuration are compared with the model's (differences are logged and listed in
    [`LoadReport.config_mismatch`][spatialmem.interop.LoadReport.config_mismatch]; they do not
    stop the loading) and the saved ``extra`` entries are returned as
    [`LoadReport.metadata`][spatialmem.interop.LoadReport.metadata]. Floating-point tensors
    stored in another dtype than the model's (e.g. ``float64``) are cast to the model's dtype,
    with a logged warning naming them.

    Args:
        model: the model to fill, e.g. from
            [`spatialmem.create_model`][spatialmem.models.create_model].
        path_or_dict: checkpoint file or loaded object.
        strict: raise on missing or unexpected keys (shape mismatches always raise).

    Returns:
        A [`LoadReport`][spatialmem.interop.LoadReport].

    Raises:
        FileNotFoundError: no file at ``path_or_dict``.
        CheckpointError: keys or shapes do not match (the message lists them and names the
            layout, official or spatialmem, that the checkpoint's keys match best); the file is
            not a readable PyTorch checkpoint (empty, truncated, corrupt or another kind of
            file; the message names it); it holds pickled Python objects that
            ``weights_only=True`` refuses; or it was written by a newer spatialmem format
            version.
    """
    obj = _read(path_or_dict)
    state, declared = _unwrap(obj)
    config_mismatch, metadata = _check_header(model, obj) if declared else ([], {})
    mapped, unexpected, layout = _translate(model, state, declared)
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
        stored_class = obj.get("model_class") if declared else None
        if stored_class is not None and any(m.startswith("model_class:") for m in config_mismatch):
            parts.insert(0, f"it was saved from a {stored_class}, not a {type(model).__name__}")
        raise CheckpointError(
            f"checkpoint ({layout} layout) does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    to_load = _cast_floats({k: v for k, v in mapped.items() if k in own}, own)
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(to_load, strict=False, assign=on_meta)
    if missing or unexpected:
        logger.warning(
            "load_checkpoint: %d missing, %d unexpected keys", len(missing), len(unexpected)
        )
    if config_mismatch:
        logger.warning(
            "load_checkpoint: the checkpoint was saved from a different configuration than "
            "%s's (weights loaded): %s",
            type(model).__name__,
            _summary(config_mismatch),
        )
    return LoadReport(
        layout=layout,
        loaded=len(to_load),
        missing=missing,
        unexpected=unexpected,
        config_mismatch=config_mismatch,
        metadata=metadata,
    )


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], **extra: Any) -> None:
    """Save ``model`` in spatialmem's layout: weights, configuration and ``extra`` metadata.

    [`load_checkpoint`][spatialmem.interop.load_checkpoint] compares the stored model class and
    configuration with the model it fills (differences are reported in
    [`LoadReport.config_mismatch`][spatialmem.interop.LoadReport.config_mismatch]) and returns
    ``extra`` as [`LoadReport.metadata`][spatialmem.interop.LoadReport.metadata].

    Args:
        model: the model to save (its ``config`` dataclass, if any, is stored as a dict).
        path: the file to write.
        **extra: plain data (numbers, strings, lists, dicts, tensors, so the file loads with
            ``weights_only=True``), e.g. the training step.

    Raises:
        ValueError: an ``extra`` name that the layout itself uses (``format``,
            ``format_version``, ``model_class``, ``config``, ``state_dict``).
    """
    reserved = sorted(set(extra) & set(_HEADER_KEYS))
    if reserved:
        raise ValueError(f"`extra` must not use the reserved checkpoint entries {reserved}")
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
