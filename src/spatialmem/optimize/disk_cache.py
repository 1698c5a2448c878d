"""Measured decisions kept on disk, so that a new process does not time the same layers again.

Timing every linear layer and DPT head of the published Spann3R takes 8-12 s on a 2-core CPU,
paid by every process that optimises a model (each `spatialmem reconstruct`, each script).
The decisions depend only on the machine, the torch build and the shapes, so they are written
to ``decisions.json`` in the cache folder and read back by later processes on the same
machine. The folder is ``$SPATIALMEM_CACHE_DIR``, else ``$XDG_CACHE_HOME/spatialmem``, else
``~/.cache/spatialmem``; ``SPATIALMEM_DECISION_CACHE=0`` turns the disk cache off (each
process then measures once, as before).

Entries are grouped by a machine fingerprint (CPU model and flags as torch sees them, core
count, torch version), so a folder shared between machines, or a torch upgrade, never reuses
a decision measured elsewhere. A decision that came from a noisy measurement stays until it is
cleared: [`clear_decisions`][spatialmem.optimize.clear_decisions]``(disk=True)`` forgets this
machine's entries.
"""

import functools
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from spatialmem.optimize.cpu import cpu_features

__all__ = ["cache_path", "forget", "load", "load_decision", "machine_fingerprint", "store"]

logger = logging.getLogger(__name__)

_FORMAT = 1
_FILE = "decisions.json"


def cache_path() -> Path | None:
    """The decisions file, or ``None`` when the disk cache is off."""
    if os.environ.get("SPATIALMEM_DECISION_CACHE", "1").strip().lower() in ("0", "false", "no"):
        return None
    folder = os.environ.get("SPATIALMEM_CACHE_DIR")
    if not folder:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".cache"
        folder = str(base / "spatialmem")
    return Path(folder) / _FILE


@functools.cache
def machine_fingerprint() -> str:
    """CPU model and torch's CPU capability (as
    [`cpu_features`][spatialmem.optimize.cpu_features] reads them), core count, architecture
    and torch version."""
    cpu = cpu_features()
    return "|".join(
        [cpu.name, cpu.capability, str(os.cpu_count()), platform.machine(), torch.__version__]
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:  # unreadable or corrupt: measure again, rewrite it
        logger.warning("ignoring the decision cache %s: %s", path, err)
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return {}
    return data


def load(kind: str, key: str) -> Any | None:
    """The stored decision of ``kind`` (``"linear"``, ``"conv"``) for ``key`` on this machine,
    or ``None``."""
    path = cache_path()
    if path is None:
        return None
    machines = _read(path).get("machines", {})
    return machines.get(machine_fingerprint(), {}).get(kind, {}).get(key)


def load_decision(kind: str, key: str) -> tuple[Any, dict[str, float]] | None:
    """A stored ``(choice, seconds)`` decision, or ``None`` when there is none or the entry is
    not of that form (an edited or foreign file: measured again)."""
    stored = load(kind, key)
    if (
        isinstance(stored, list)
        and len(stored) == 2
        and isinstance(stored[1], dict)
        and all(isinstance(t, int | float) for t in stored[1].values())
    ):
        return stored[0], {str(k): float(t) for k, t in stored[1].items()}
    return None


def store(kind: str, key: str, value: Any) -> None:
    """Record a decision for this machine (a failure to write is logged, never raised)."""
    path = cache_path()
    if path is None:
        return
    data = _read(path)
    data["format"] = _FORMAT
    mine = data.setdefault("machines", {}).setdefault(machine_fingerprint(), {})
    mine.setdefault(kind, {})[key] = value
    _write(path, data)


def forget() -> None:
    """Remove this machine's decisions from the file (other machines' stay)."""
    path = cache_path()
    if path is None or not path.exists():
        return
    data = _read(path)
    if data.get("machines", {}).pop(machine_fingerprint(), None) is not None:
        _write(path, data)


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the old one), so that a process reading
    at the same time sees the old file or the new one, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".decisions-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:
        logger.warning("could not write the decision cache %s: %s", path, err)
