"""Measurement helpers shared by ``spatialmem bench`` and the scripts in ``benchmarks/``: timing
with device sync, FLOP counting, matmul peak, resident memory, Markdown tables and JSON results
with the environment they were measured in."""

import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = [
    "FlopCount",
    "count_flops",
    "cpu_name",
    "current_rss",
    "default_threads",
    "device_name",
    "environment",
    "fmt_sig",
    "markdown_table",
    "matmul_peak",
    "peak_rss",
    "reset_peak_rss",
    "summarize",
    "sync",
    "time_fn",
    "write_json",
]


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], Any],
    device: torch.device | str,
    warmup: int = 1,
    repeats: int = 3,
    min_seconds: float = 0.0,
) -> list[float]:
    """Seconds of each timed call of ``fn`` after ``warmup`` untimed calls.

    Every call is bracketed by [`sync`][spatialmem.bench.measure.sync] and timed with
    ``time.perf_counter``. At least ``repeats`` calls are timed, more while their total is under
    ``min_seconds``.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < max(1, repeats) or sum(times) < min_seconds:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, min, mean and max of a list of durations, plus the count."""
    return {
        "median": statistics.median(times),
        "min": min(times),
        "mean": statistics.fmean(times),
        "max": max(times),
        "n": len(times),
    }


class FlopCount(NamedTuple):
    """What [`count_flops`][spatialmem.bench.measure.count_flops] saw."""

    total: int
    """FLOPs of the call, a multiply-add counting 2."""
    by_op: dict[str, int]
    """FLOPs per ATen operator."""
    result: Any
    """What the call returned."""


def _sdpa_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


# Fused attention kernels the counter has no formula for (it knows the CUDA ones).
_EXTRA_FORMULAS = {
    name: _sdpa_flops
    for name in ("_scaled_dot_product_flash_attention_for_cpu",)
    if hasattr(torch.ops.aten, name)
}


def count_flops(fn: Callable[[], Any]) -> FlopCount:
    """FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` sees in one call of ``fn``.

    Only operators with a formula count: matmuls, convolutions and attention (the CPU fused
    ``scaled_dot_product_attention`` kernel is added to the counter's own CUDA ones).
    """
    mapping = {getattr(torch.ops.aten, name): f for name, f in _EXTRA_FORMULAS.items()}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        result = fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(int(counter.get_total_flops()), by_op, result)


def matmul_peak(
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    n: int | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Measured ``torch.mm`` throughput of ``n x n`` matrices on ``device`` in ``dtype``.

    Runs for about ``seconds`` after one warm-up call. Returns the best and median GFLOP/s
    (``2 n^3`` FLOPs per product) with the settings used. Defaults: ``n=2048`` and 3 s on CPU,
    ``n=8192`` and 1 s on CUDA.
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    n = n or (8192 if on_cuda else 2048)
    seconds = seconds if seconds is not None else (1.0 if on_cuda else 3.0)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = time_fn(lambda: torch.mm(a, b, out=out), device, 1, 3, seconds)
    flops = 2.0 * n**3
    return {
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "n": n,
        "gflops_best": flops / min(times) / 1e9,
        "gflops_median": flops / statistics.median(times) / 1e9,
        "calls": len(times),
    }


def default_threads() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """CPU model name from ``/proc/cpuinfo`` (falls back on ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """Human-readable name of a device (GPU name or CPU model)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def environment(devices: Iterable[torch.device | str] = ("cpu",)) -> dict[str, Any]:
    """Versions, device names, thread count, load average and a UTC timestamp."""
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "devices": {str(d): device_name(d) for d in devices},
    }


def fmt_sig(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits in fixed-point notation (``1234.4 -> "1234"``,
    ``0.01234 -> "0.0123"``)."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


Format = str | Callable[[Any], str] | None


def _cell(value: Any, fmt: Format) -> str:
    if value is None:
        return ""
    if callable(fmt):
        return fmt(value)
    if fmt and isinstance(value, int | float):
        return format(value, fmt)
    return str(value)


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str] | tuple[str, str, Format]],
) -> str:
    """Render ``rows`` as a Markdown table.

    Args:
        rows: one dict per line.
        columns: ``(key, header)`` or ``(key, header, format)`` where ``format`` is a format spec
            (``".3f"``) or a function of the value
            ([`fmt_sig`][spatialmem.bench.measure.fmt_sig]); numbers are right-aligned.
    """
    header = "| " + " | ".join(c[1] for c in columns) + " |"
    align = []
    for c in columns:
        numeric = any(isinstance(r.get(c[0]), int | float) for r in rows)
        align.append("---:" if numeric else "---")
    lines = [header, "| " + " | ".join(align) + " |"]
    for r in rows:
        cells = [_cell(r.get(c[0]), c[2] if len(c) > 2 else None) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict[str, Any], **env: Any) -> Path:
    """Write ``payload`` with an ``"env"`` entry
    ([`environment`][spatialmem.bench.measure.environment] of ``env``) as indented JSON, creating
    parent folders. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"env": environment(**env), **payload}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


# ---------------------------------------------------------------------- resident memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss() -> int | None:
    """Resident set size of this process in bytes (``VmRSS``; ``None`` off Linux)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``VmHWM``) to the current RSS.

    Writes ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). Returns whether it worked; when it
    did not, [`peak_rss`][spatialmem.bench.measure.peak_rss] is the peak since the process started.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    """Peak resident set size in bytes since the last
    [`reset_peak_rss`][spatialmem.bench.measure.reset_peak_rss] (``VmHWM``; ``ru_maxrss`` where
    ``/proc`` is missing; ``None`` when neither exists)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource

        scale = 1 if platform.system() == "Darwin" else 1024
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale
    except (ImportError, OSError):
        return None
