"""Weights shipped inside the package: the trained default model, loaded without a download.

[`create_model(name, pretrained=True)`][spatialmem.models.create_model] builds a preset and
fills it with the weights stored in the package (``spatialmem/weights/``), read with
``torch.load(weights_only=True)`` through ``importlib.resources``. The weights are stored in
float16 (half the size) and converted to the model's dtype when loaded. Only presets listed by
[`pretrained_models`][spatialmem.models.pretrained.pretrained_models] have shipped weights; the
published DUSt3R / Spann3R checkpoints are downloaded separately and loaded with
[`load_checkpoint`][spatialmem.interop.load_checkpoint].

```python
from spatialmem.models import create_model
from spatialmem.models.pretrained import pretrained_metadata, pretrained_models

print(pretrained_models())                        # ['spann3r_small_synthetic']
model = create_model("spann3r_small_synthetic", pretrained=True).eval()
print(pretrained_metadata("spann3r_small_synthetic").get("steps"))
```

A shipped file is a ``torch.save`` of ``{"format": "spatialmem-pretrained", "version": 1,
"model": name, "state_dict": {key: float16 tensor}, "metadata": {...}}``, written from a
training checkpoint by [`export_pretrained`][spatialmem.models.pretrained.export_pretrained].
From a source checkout, one command replaces the shipped weights and regenerates the test
fixture of their outputs (``tests/fixtures/``):

```text
python -m spatialmem.models.pretrained runs/small/last.pt --name spann3r_small_synthetic
```
"""

import argparse
import dataclasses
import datetime
import hashlib
import importlib.resources
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MAX_FILE_BYTES",
    "PRETRAINED_FORMAT",
    "PRETRAINED_VERSION",
    "export_pretrained",
    "load_pretrained",
    "pretrained_input_size",
    "pretrained_metadata",
    "pretrained_models",
    "pretrained_path",
    "write_output_fixture",
]

logger = logging.getLogger(__name__)

PRETRAINED_FORMAT = "spatialmem-pretrained"
"""Value of the ``format`` entry of a shipped weights file."""
PRETRAINED_VERSION = 1
"""Version of the shipped weights format that this spatialmem reads and writes."""
MAX_FILE_BYTES = 20_000_000
"""Largest shipped weights file (20 MB): the package stays small."""

_SHIPPED: dict[str, str] = {
    "spann3r_small_synthetic": "spann3r_small_synthetic.pt",
}
"""Registry name -> file name under ``spatialmem/weights/``."""

_FP16_MAX = float(torch.finfo(torch.float16).max)
# Entries of a training state (`last.pt`) copied into the metadata; the rest (optimiser,
# scheduler, scaler and random states) is left behind.
_TRAIN_STATE_KEYS = ("step", "micro_step", "epoch", "world_size", "config", "elapsed_s")
_CHECKPOINT_HEADER = ("format", "format_version", "model_class", "config", "state_dict")

# The output fixture: the first frames of a test room, every few pixels in rows and columns.
_FIXTURE_SCENE = 0
_FIXTURE_FRAMES = 4
_FIXTURE_PIXEL_STRIDE = 4


def pretrained_models() -> list[str]:
    """Sorted registry names of the models whose weights are shipped in the package.

    Returns:
        Names to pass to [`create_model`][spatialmem.models.create_model] with
        ``pretrained=True``.
    """
    return sorted(_SHIPPED)


def _check_name(name: str) -> str:
    if name not in _SHIPPED:
        raise ValueError(
            f"no pretrained weights are shipped for {name!r}; models with shipped weights: "
            f"{pretrained_models()}. Published checkpoints (e.g. spann3r.pth) load with "
            "spatialmem.load_checkpoint(model, path) into a model from create_model(name)"
        )
    return _SHIPPED[name]


def _resource(name: str) -> Path:
    """Where the package holds (or will hold) the weights file of ``name``."""
    ref = importlib.resources.files("spatialmem").joinpath("weights", _check_name(name))
    return Path(os.fspath(ref))  # type: ignore[arg-type]  # a regular (not zipped) install


def pretrained_path(name: str) -> Path:
    """The shipped weights file of a model.

    Args:
        name: a name from [`pretrained_models`][spatialmem.models.pretrained.pretrained_models].

    Returns:
        The file's path inside the installed package.

    Raises:
        ValueError: no weights are shipped for ``name``.
        FileNotFoundError: the installation lacks the file (a broken install, or a build that
            left out the package data).
    """
    path = _resource(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped weights of {name!r} are missing from the installation ({path}); "
            "reinstall spatialmem, or regenerate them with `python -m "
            "spatialmem.models.pretrained CHECKPOINT` from a source checkout"
        )
    return path


def _read_shipped(name: str) -> dict[str, Any]:
    path = pretrained_path(name)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files: several types
        raise ValueError(f"the shipped weights file {path} is unreadable: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != PRETRAINED_FORMAT:
        raise ValueError(f"{path} is not a spatialmem pretrained-weights file")
    version = obj.get("version")
    if not isinstance(version, int) or version > PRETRAINED_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this spatialmem reads up to "
            f"{PRETRAINED_VERSION}: upgrade spatialmem"
        )
    if obj.get("model") != name:
        raise ValueError(f"{path} holds weights of {obj.get('model')!r}, not of {name!r}")
    return obj


def pretrained_metadata(name: str) -> dict[str, Any]:
    """What is recorded about the shipped weights of a model: training steps, the training
    configuration, the export date, the source checkpoint and metrics when they were given.

    Args:
        name: a name from [`pretrained_models`][spatialmem.models.pretrained.pretrained_models].

    Returns:
        A dictionary of plain values (the keys present depend on the training checkpoint).

    Raises:
        ValueError: no weights are shipped for ``name``, or the file is unreadable.
        FileNotFoundError: the installation lacks the file.
    """
    return dict(_read_shipped(name).get("metadata", {}))


def pretrained_input_size(name: str) -> tuple[int, int] | None:
    """The frame size ``(H, W)`` the shipped weights of a model were trained at, as recorded in
    their metadata (``None`` when it is not recorded). Frames of about this size suit them:
    ``spatialmem reconstruct`` resizes to its long side when no ``--size`` is given.

    Args:
        name: a name from [`pretrained_models`][spatialmem.models.pretrained.pretrained_models].

    Raises:
        ValueError: no weights are shipped for ``name``, or the file is unreadable.
        FileNotFoundError: the installation lacks the file.
    """
    config = pretrained_metadata(name).get("config")
    if not isinstance(config, dict):
        return None
    height, width = config.get("height"), config.get("width")
    sizes = (height, width)
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        return height, width
    return None


def _describe_mismatch(
    state: Mapping[str, Tensor], own: Mapping[str, Tensor], limit: int = 6
) -> list[str]:
    """Human-readable differences of keys and shapes between a state dict and a model's."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: weights {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    out = []
    for label, items in (
        ("shape mismatches", shapes),
        ("missing from the weights", missing),
        ("not in the model", unexpected),
    ):
        if items:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            out.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return out


def load_pretrained(
    model: nn.Module, name: str, *, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Fill ``model`` with the shipped weights of ``name`` (converted to the model's dtypes).

    Keys and shapes are checked strictly before anything is copied, so the model is left
    untouched on failure.
    [`create_model(name, pretrained=True)`][spatialmem.models.create_model] calls it.

    Args:
        model: a model built from the preset ``name`` (any configuration that keeps the
            parameter shapes, e.g. another memory policy or threshold).
        name: a name from [`pretrained_models`][spatialmem.models.pretrained.pretrained_models].
        overrides: the configuration overrides the model was built with (named in the error).

    Returns:
        The weights' metadata (as
        [`pretrained_metadata`][spatialmem.models.pretrained.pretrained_metadata] returns it).

    Raises:
        ValueError: no weights are shipped for ``name``, the file is unreadable, or the model's
            parameter names or shapes differ from the weights' (e.g. overrides that change a
            width, a depth, the patch size or the head).
        FileNotFoundError: the installation lacks the file.
    """
    obj = _read_shipped(name)
    state: dict[str, Tensor] = dict(obj["state_dict"])
    own = model.state_dict()
    problems = _describe_mismatch(state, own)
    if problems:
        given = f" built with overrides {dict(overrides)}" if overrides else ""
        raise ValueError(
            f"the shipped weights of {name!r} do not fit the model{given}: "
            + "; ".join(problems)
            + ". Overrides that change parameter shapes (widths, depths, heads, patch size) "
            "cannot be combined with pretrained=True; drop them, or use pretrained=False and "
            "train or load your own weights"
        )
    state = {
        k: v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v
        for k, v in state.items()
    }
    meta = any(t.is_meta for t in own.values())
    model.load_state_dict(state, strict=True, assign=meta)
    return dict(obj.get("metadata", {}))


def _plain(value: Any) -> Any:
    """``value`` as plain data that ``torch.load(weights_only=True)`` reads: small tensors
    become lists, large ones ``None``, other objects their text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Tensor):
        return value.tolist() if value.numel() <= 64 else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _read_training_checkpoint(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load a training checkpoint into ``model``; return the metadata it carries."""
    from spatialmem.interop import load_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # load_checkpoint reads it again and explains what is wrong with it
        obj = None
    report = load_checkpoint(model, obj if isinstance(obj, Mapping) else path, strict=True)
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if obj.get("format") == "spatialmem":  # written by save_checkpoint
            meta.update(report.metadata)
        elif isinstance(obj.get("model"), Mapping):  # a run's last.pt ({"model": ..., ...})
            meta.update({k: obj[k] for k in _TRAIN_STATE_KEYS if k in obj})
    # One naming whatever the source: `steps` (optimiser steps) and `config` (training settings).
    for ours, theirs in (("steps", "step"), ("config", "train_config")):
        if theirs in meta and ours not in meta:
            meta[ours] = meta.pop(theirs)
    return meta


def export_pretrained(
    checkpoint_or_state_dict_path: str | os.PathLike[str],
    name: str,
    out_path: str | os.PathLike[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the shipped-weights file of ``name`` from a training checkpoint.

    Reads a file written by [`save_checkpoint`][spatialmem.interop.save_checkpoint], a run's
    ``last.pt`` (``{"model": state_dict, "step": ..., "config": ...}``) or a bare state dict
    (through [`load_checkpoint`][spatialmem.interop.load_checkpoint]: keys and shapes must fit
    the preset exactly), and writes its weights in float16 with the metadata: the training
    ``steps`` and ``config`` when the checkpoint holds them, the export ``date``, the ``source``
    file name and the given ``metadata`` (e.g. ``{"metrics": {...}}``).

    Args:
        checkpoint_or_state_dict_path: the training checkpoint.
        name: the preset the weights belong to (one of
            [`pretrained_models`][spatialmem.models.pretrained.pretrained_models]).
        out_path: the file to write; default the package's own weights file of ``name``
            (replacing the shipped weights of a source checkout).
        metadata: plain entries to record (they override those read from the checkpoint).

    Returns:
        The written path.

    Raises:
        ValueError: no weights are shipped for ``name``; the checkpoint does not fit the preset
            ([`CheckpointError`][spatialmem.interop.CheckpointError]); a weight does not fit in
            float16; the file would exceed
            [`MAX_FILE_BYTES`][spatialmem.models.pretrained.MAX_FILE_BYTES].
        FileNotFoundError: no checkpoint file.
    """
    from spatialmem.models.registry import create_model

    _check_name(name)
    source = Path(checkpoint_or_state_dict_path)
    model = create_model(name)
    meta = _read_training_checkpoint(source, model)
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            peak = float(value.detach().abs().max()) if value.numel() else 0.0
            if not math.isfinite(peak) or peak > _FP16_MAX:
                raise ValueError(
                    f"{source}: weight {key!r} holds {peak:g}, which float16 cannot store"
                )
            value = value.detach().to(torch.float16)
        state[key] = value.clone().contiguous()
    meta.update(
        {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "source": source.name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "spatialmem_version": _version(),
        }
    )
    meta.update(dict(metadata or {}))
    payload = {
        "format": PRETRAINED_FORMAT,
        "version": PRETRAINED_VERSION,
        "model": name,
        "state_dict": state,
        "metadata": _plain(meta),
    }
    out = _resource(name) if out_path is None else Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    size = tmp.stat().st_size
    if size > MAX_FILE_BYTES:
        tmp.unlink()
        raise ValueError(
            f"the weights of {name!r} take {size / 1e6:.1f} MB, more than the "
            f"{MAX_FILE_BYTES / 1e6:.0f} MB a shipped file may take"
        )
    os.replace(tmp, out)
    logger.info("wrote %s (%.1f MB, float16)", out, size / 1e6)
    return out


def _version() -> str:
    from spatialmem import __version__

    return __version__


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _default_fixture(name: str) -> Path | None:
    """``tests/fixtures/pretrained_<name>_outputs.pt`` of a source checkout, if there is one."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "tests").is_dir() or not (root / "pyproject.toml").is_file():
        return None
    return root / "tests" / "fixtures" / f"pretrained_{name}_outputs.pt"


def write_output_fixture(name: str, path: str | os.PathLike[str]) -> Path:
    """Record the streamed outputs of the shipped weights of ``name`` on a fixed test clip.

    The clip is ``spatialmem.data.rooms.room_sequence(0, num_frames=4)``,
    streamed with [`reconstruct_frames`][spatialmem.pipeline.reconstruct_frames]; every 4th
    pixel's ``pts3d`` and ``conf`` are stored in float32 with the SHA-256 of the weights file,
    so the test suite notices both changed outputs and stale fixtures.

    Args:
        name: a name from [`pretrained_models`][spatialmem.models.pretrained.pretrained_models].
        path: the file to write.

    Returns:
        The written path.
    """
    from spatialmem.data.rooms import room_sequence
    from spatialmem.models.registry import create_model
    from spatialmem.pipeline import reconstruct_frames

    model = create_model(name, pretrained=True).eval()
    clip = room_sequence(_FIXTURE_SCENE, num_frames=_FIXTURE_FRAMES)
    with torch.inference_mode():
        recon = reconstruct_frames(model, clip.images)
    s = _FIXTURE_PIXEL_STRIDE
    payload = {
        "model": name,
        "scene": _FIXTURE_SCENE,
        "num_frames": _FIXTURE_FRAMES,
        "pixel_stride": s,
        "weights_sha256": _sha256(pretrained_path(name)),
        "pts3d": recon.pts3d[:, ::s, ::s].float().contiguous().clone(),
        "conf": recon.conf[:, ::s, ::s].float().contiguous().clone(),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    logger.info("wrote %s (%.0f KB)", out, out.stat().st_size / 1e3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spatialmem.models.pretrained CHECKPOINT [--name NAME]``: export the shipped
    weights from a training checkpoint, then regenerate the test fixture of their outputs.

    Returns:
        ``0`` on success.
    """
    parser = argparse.ArgumentParser(
        prog="python -m spatialmem.models.pretrained",
        description="Write the package's shipped weights of a preset from a training checkpoint "
        "(float16) and regenerate tests/fixtures/pretrained_<name>_outputs.pt.",
    )
    parser.add_argument("checkpoint", help="save_checkpoint file, a run's last.pt or a state dict")
    parser.add_argument("--name", default="spann3r_small_synthetic", choices=pretrained_models())
    parser.add_argument("--out", help="weights file to write (default: the package's own)")
    parser.add_argument(
        "--fixture", help="output fixture to write (default: tests/fixtures/ of the checkout)"
    )
    parser.add_argument("--no-fixture", action="store_true", help="do not write the fixture")
    parser.add_argument(
        "--metadata", help="JSON object (or a .json file) of extra metadata, e.g. metrics"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra: dict[str, Any] = {}
    if args.metadata:
        text = args.metadata
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        extra = json.loads(text)
        if not isinstance(extra, dict):
            parser.error("--metadata must be a JSON object")
    out = export_pretrained(args.checkpoint, args.name, args.out, extra)
    if args.no_fixture:
        return 0
    if args.out is not None and args.fixture is None:
        logger.info("--out given: the fixture (of the package's weights) is not regenerated")
        return 0
    fixture = Path(args.fixture) if args.fixture else _default_fixture(args.name)
    if fixture is None:
        logger.warning("no tests/ folder beside the package: the output fixture is not written")
        return 0
    write_output_fixture(args.name, fixture)
    logger.info("done: %s and %s", out, fixture)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
