"""Tables, plots and the generated sections of the performance page, from a benchmark's results.

The page keeps its prose; every number on it sits between markers that ``spatialmem bench``
rewrites:

```text
<!-- bench:latency -->
...generated...
<!-- /bench:latency -->
```
"""

import datetime
import logging
import re
from pathlib import Path
from typing import Any

from spatialmem.bench.measure import fmt_sig, markdown_table

__all__ = ["SECTIONS", "plot_components", "plot_stream", "render_sections", "update_page"]

logger = logging.getLogger(__name__)

SECTIONS = ("env", "latency", "components", "stream", "accuracy")
"""The generated sections of the page, by marker name."""

MIB = 2**20
COMPONENTS_PNG = "perf-components.png"
STREAM_PNG = "perf-stream.png"


def _mib(value: float | int | None) -> float | None:
    return None if value is None else value / MIB


def _ms(value: float | int | None) -> float | None:
    return None if value is None else 1e3 * value


def render_env(results: dict[str, Any]) -> str:
    """The machine and the run, as a short list."""
    env = results.get("env", {})
    cfg = results["config"]
    cpu = results.get("cpu", {})
    when = env.get("timestamp") or datetime.datetime.now(datetime.UTC).isoformat()
    device = env.get("devices", {}).get(cfg["device"], env.get("cpu", "?"))
    lines = [
        f"* **Machine:** {device}; {env.get('threads', '?')} threads; vector ISA "
        f"`{cpu.get('capability', '?')}`, native bf16: {cpu.get('native_bf16', '?')}, "
        f"AVX-512: {cpu.get('avx512', '?')}; load average at start "
        f"{_fmt_load(results.get('loadavg_start'))}.",
        f"* **Software:** torch {env.get('torch', '?')}, Python {env.get('python', '?')}.",
        f"* **Run:** `{results.get('command', 'spatialmem bench')}` ({cfg['mode']}), "
        f"{when}, {results.get('seconds', 0):.0f} s in all; model `{cfg['model']}` "
        f"({results.get('params', 0) / 1e6:.0f}M parameters, random weights), "
        f"{cfg['rounds']} alternating rounds of {cfg['steps_per_round']} steps per variant.",
    ]
    return "\n".join(lines)


def _fmt_load(load: Any) -> str:
    if not load:
        return "unknown"
    return ", ".join(f"{v:.1f}" for v in load)


def render_latency(results: dict[str, Any]) -> str:
    """One row per case and variant: latency, throughput, FLOPs, peak, memory, equality."""
    rows = []
    for case in results["cases"]:
        for v in case["variants"]:
            rows.append(
                {
                    "case": f"{case['width']}x{case['height']}",
                    "batch": case["batch"],
                    "variant": v["variant"],
                    "med": v["s_per_frame_median"],
                    "min": v["s_per_step_min"] / case["batch"],
                    "fps": v["frames_per_s"],
                    "speedup": v.get("speedup_median"),
                    "speedup_min": v.get("speedup_min"),
                    "gflop": case["flops_per_step"] / case["batch"] / 1e9,
                    "achieved": v["achieved_gflops"],
                    "peak": v.get("peak_gflops"),
                    "fraction": v.get("fraction_of_peak"),
                    "fraction_median": v.get("fraction_of_peak_median"),
                    "in_turn": v.get("in_turn_gflops"),
                    "rss": _mib(v.get("peak_rss_bytes")),
                    "device": _mib(v.get("peak_device_bytes")),
                    "extra": _mib(v.get("extra_bytes")),
                    "diff": v.get("max_rel_diff"),
                }
            )
    on_device = any(r["device"] is not None for r in rows)  # a GPU run: its peak memory too
    table = markdown_table(
        rows,
        [
            ("case", "W x H"),
            ("batch", "batch"),
            ("variant", "variant"),
            ("med", "s/frame (median)", fmt_sig),
            ("min", "s/frame (min)", fmt_sig),
            ("fps", "frames/s", fmt_sig),
            ("speedup", "speed-up (median)", ".2f"),
            ("speedup_min", "speed-up (min)", ".2f"),
            ("gflop", "GFLOP/frame", fmt_sig),
            ("achieved", "achieved GFLOP/s", fmt_sig),
            ("peak", "matmul peak GFLOP/s (same path, hot)", fmt_sig),
            ("fraction", "fraction of peak (best)", ".2f"),
            ("fraction_median", "fraction of peak (median)", ".2f"),
            ("in_turn", "GEMM GFLOP/s, layers in turn", fmt_sig),
            ("rss", "peak RSS MiB", ".0f"),
            *([("device", "peak GPU MiB (max_memory_allocated)", ".0f")] if on_device else []),
            ("extra", "extra weight MiB", ".0f"),
            ("diff", "max rel. diff vs eager", ".1e"),
        ],
    )
    plans = []
    for case in results["cases"][:1]:
        for v in case["variants"]:
            if v.get("plan"):
                plans.append(f"* `{v['variant']}`: {v['plan']}")
    text = table
    squares = [
        f"{c['width']}x{c['height']} batch {c['batch']}: {c['square_matmul']['gflops']:.0f} "
        f"GFLOP/s best, {c['square_matmul']['gflops_median']:.0f} median"
        for c in results["cases"]
        if c.get("square_matmul")
    ]
    if squares:
        n = results["cases"][0]["square_matmul"]["n"]
        text += (
            f"\n\nA square float32 product ({n} x {n}) `torch.mm` in the same rounds, for "
            "reference: " + "; ".join(squares) + "."
        )
    if plans:
        text += "\n\nWhat the optimisation chose (first case):\n\n" + "\n".join(plans)
    return text


def render_components(results: dict[str, Any], image: str | None) -> str:
    """Per-block latency of the first case."""
    case = results["cases"][0]
    comp = case.get("components")
    if not comp:
        return "_Components were not timed in this run._"
    names = comp["variants"]
    whole = comp.get("whole_step") or {}
    step = {n: whole.get(f"{n}_s_min") for n in names}
    rows = []
    for r in comp["rows"]:
        row = {"component": r["component"], "gflop": r["flops"] / 1e9}
        for n in names:
            row[n] = _ms(r[f"{n}_s_min"])
            if step.get(n) and not r["component"].startswith("head 2"):
                row[f"{n}_share"] = r[f"{n}_s_min"] / step[n]
        row["speedup"] = r.get("speedup_min")
        rows.append(row)
    if whole:
        rest: dict[str, Any] = {"component": "rest of the step (Python, copies, slicing)"}
        total: dict[str, Any] = {"component": "whole step (encode + Spann3R.step)"}
        for n in names:
            inside = sum(
                r[f"{n}_s_min"] for r in comp["rows"] if not r["component"].startswith("head 2")
            )
            rest[n] = _ms(step[n] - inside)
            rest[f"{n}_share"] = (step[n] - inside) / step[n]
            total[n] = _ms(step[n])
        if len(names) == 2:
            total["speedup"] = step[names[0]] / step[names[1]]
        rows += [rest, total]
    columns: list[tuple[Any, ...]] = [("component", "component"), ("gflop", "GFLOP", fmt_sig)]
    for n in names:
        columns.append((n, f"{n} ms (min)", fmt_sig))
        columns.append((f"{n}_share", f"{n} share of step", ".0%"))
    if len(names) == 2:
        columns.append(("speedup", "speed-up", ".2f"))
    text = (
        f"{case['width']}x{case['height']}, batch {case['batch']}; minimum over the rounds, every "
        "block and the whole step timed in the same alternating rounds.\n\n"
        + markdown_table(rows, columns)
    )
    if image:
        text += f"\n\n![Latency per component]({image})"
    return text


def render_stream(results: dict[str, Any], image: str | None) -> str:
    """Latency and memory along the long stream."""
    s = results.get("stream")
    if not s:
        return "_The stream-length run was skipped._"
    rows = [
        {
            "model": s["model"],
            "size": f"{s['width']}x{s['height']}",
            "frames": s["frames"],
            "early": s["ms_early"],
            "late": s["ms_late"],
            "ratio": s["late_over_early"],
            "rss0": _mib(s.get("rss_settled_bytes")),
            "rss1": _mib(s.get("rss_end_bytes")),
            "state": _mib(s["state_bytes_end"]),
            "tokens": s["tokens_end"],
        }
    ]
    table = markdown_table(
        rows,
        [
            ("model", "model"),
            ("size", "W x H"),
            ("frames", "frames"),
            ("early", f"ms/step at frame {s['early_at']}", fmt_sig),
            ("late", "ms/step at the end", fmt_sig),
            ("ratio", "end / early", ".2f"),
            ("rss0", f"RSS MiB at frame {s['early_at']}", ".0f"),
            ("rss1", "RSS MiB at the end", ".0f"),
            ("state", "memory state MiB", ".1f"),
            ("tokens", "tokens held", "d"),
        ],
    )
    text = f"Medians over windows of {s['window']} steps.\n\n" + table
    if s.get("plan"):
        text += f"\n\nFast path of the stream: {s['plan']}."
    if image:
        text += f"\n\n![Latency and memory along the stream]({image})"
    return text


def render_accuracy(results: dict[str, Any]) -> str:
    """Accuracy and speed of the approximate tiers beside float32."""
    acc = results.get("accuracy")
    if not acc:
        return (
            "_Not measured in this run: `spatialmem bench --int8` fills this table (with the "
            "small model's shipped weights, or `--checkpoint WEIGHTS.pt`)._"
        )
    table = markdown_table(
        acc["rows"],
        [
            ("variant", "variant"),
            ("acc", "accuracy", fmt_sig),
            ("comp", "completion", fmt_sig),
            ("chamfer", "chamfer", fmt_sig),
            ("completion_ratio", "completion ratio", ".3f"),
            ("max_rel_diff_vs_fp32", "max rel. diff vs fp32", ".1e"),
            ("ms_per_frame", "ms/frame", fmt_sig),
        ],
    )
    return (
        f"`{acc['model']}` ({acc['weights']}), {acc['sequences']} synthetic room sequences of "
        f"{acc['frames']} frames (`room_sequence(i)`, test split), Sim(3)-aligned; means over "
        f"the sequences.\n\n" + table
    )


def render_sections(
    results: dict[str, Any], images: dict[str, str] | None = None
) -> dict[str, str]:
    """The text of every generated section (``SECTIONS``)."""
    images = images or {}
    return {
        "env": render_env(results),
        "latency": render_latency(results),
        "components": render_components(results, images.get("components")),
        "stream": render_stream(results, images.get("stream")),
        "accuracy": render_accuracy(results),
    }


def update_page(page: Path, sections: dict[str, str]) -> None:
    """Replace the generated sections of ``page`` (between ``<!-- bench:NAME -->`` and
    ``<!-- /bench:NAME -->``); the rest of the page is kept.

    Raises:
        ValueError: a section's markers are missing from the page.
    """
    text = page.read_text()
    for name, body in sections.items():
        pattern = re.compile(
            rf"(<!-- bench:{re.escape(name)} -->\n).*?(\n<!-- /bench:{re.escape(name)} -->)", re.S
        )
        if not pattern.search(text):
            raise ValueError(
                f"{page} has no generated section {name!r} (markers <!-- bench:{name} --> and "
                f"<!-- /bench:{name} -->)"
            )
        text = pattern.sub(lambda m, body=body: m.group(1) + body.strip() + m.group(2), text)
    page.write_text(text)


# ---------------------------------------------------------------------- plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_components(results: dict[str, Any], path: Path) -> Path | None:
    """Horizontal bars: milliseconds of every block of the step, one bar per variant."""
    case = results["cases"][0]
    comp = case.get("components")
    if not comp:
        return None
    plt = _pyplot()
    names = comp["variants"]
    rows = comp["rows"]
    labels = [r["component"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    height = 0.8 / len(names)
    colors = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"]
    for k, name in enumerate(names):
        ys = [i + (k - (len(names) - 1) / 2) * height for i in range(len(rows))]
        ax.barh(ys, [1e3 * r[f"{name}_s_min"] for r in rows], height, label=name,
                color=colors[k % len(colors)])  # fmt: skip
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds per call (min over rounds)")
    ax.set_title(
        f"{results['config']['model']} at {case['width']}x{case['height']}, batch {case['batch']}"
    )
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_stream(results: dict[str, Any], path: Path) -> Path | None:
    """Two panels along the stream: latency per step (and its running median), and resident
    memory with the memory state's size."""
    s = results.get("stream")
    if not s:
        return None
    plt = _pyplot()
    import statistics

    ms = s["steps_ms"]
    w = max(1, s["window"])
    running = [statistics.median(ms[max(0, i - w + 1) : i + 1]) for i in range(len(ms))]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(range(len(ms)), ms, ".", ms=2, alpha=0.3, color="#1f77b4", label="each step")
    ax1.plot(range(len(ms)), running, color="#d62728", label=f"running median ({w} steps)")
    top = sorted(ms)[int(0.99 * (len(ms) - 1))] * 1.3
    ax1.set_ylim(0, max(top, 1e-3))
    ax1.set_ylabel("ms per step")
    ax1.legend(loc="upper right")
    ax1.grid(alpha=0.3)
    ax1.set_title(f"{s['model']} at {s['width']}x{s['height']}: {s['frames']} frames")
    frames = [p["frame"] for p in s["samples"]]
    rss = [(p["rss_bytes"] or 0) / MIB for p in s["samples"]]
    state = [p["state_bytes"] / MIB for p in s["samples"]]
    ax2.plot(frames, rss, color="#2ca02c", label="process RSS (MiB)")
    ax2.set_ylabel("RSS MiB")
    ax2.set_ylim(0, max([*rss, 1]) * 1.15)
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(frames, state, color="#9467bd", label="memory state (MiB)")
    ax3.set_ylabel("memory state MiB")
    ax3.set_ylim(0, max([*state, 0.001]) * 1.15)
    lines = ax2.get_lines() + ax3.get_lines()
    ax2.legend(lines, [ln.get_label() for ln in lines], loc="lower right")
    ax2.set_xlabel("frame")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
