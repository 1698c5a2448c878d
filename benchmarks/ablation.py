"""Table 3 of the Spann3R paper on the synthetic rooms: what each part of the memory is worth.

Every variant reconstructs the same held-out sequences (``spatialmem.data.rooms.room_sequence``,
``split="test"``) online, frame by frame, with the model in eval mode, and is scored the same
way: ``spatialmem.metrics.evaluate_pointmaps`` with a Sim(3) alignment of the
predicted pointmaps onto the world-frame ground truth (Umeyama on all valid pixels, unweighted:
the confidence is not used), no ICP, and the same seeded subset of at most ``--max-points`` valid
pixels in every variant (the subset depends only on the number of valid pixels and the seed, so
all variants are scored on the same pixels and the same ground-truth points).

Variants (all but ``untrained`` use the same weights):

* ``trained``: the model as it is (gate 0.95, clip 5e-4, 5 working frames, consolidation);
* ``wm_only``: no long-term memory: ``long_mem_tokens=0`` (so ``top_k=0``): every frame drained
  from the working memory is dropped by the next consolidation, which keeps only the working
  memory (the paper's "w/o lm");
* ``no_clip``: ``attn_clip=0``: every attention weight is kept (the paper's "w/o clip");
* ``no_gate``: ``AlwaysInsert``, a ``SpatialMemory`` subclass whose ``should_insert`` always
  says yes: every frame is written, however similar to the working memory;
* ``uncapped``: ``long_mem_tokens = frames * tokens per frame``, more than a sequence can write,
  so consolidation never runs;
* ``untrained``: the same architecture with seeded random weights;
* ``segments``: the trained model streamed in overlapping segments
  (``spatialmem.inference.SegmentedReconstructor`` with the default ``Segments``: a fresh memory
  every 6 new frames, restarted on the previous segment's last 3, chained by similarity fits on
  those 3, loops closed at the end by a similarity pose graph); not in the paper, the demo's
  default for this model;
* ``segments_chained``: the same segments without loop closure (``loop_closure=None``);
* ``pairwise``: no memory at all: the pair model (``model.dust3r``) on (frame 0, frame t); frame
  t's points are view 2's (in frame 0's camera), frame 0's are view 1's of the first pair.

Sequences are the outer loop and the order of the variants rotates from one sequence to the next,
so a slow or busy spell of the machine falls on every variant alike; frames/s is measured in the
same run (reconstruction only, without the evaluation), every variant in eager PyTorch float32
(the streaming reconstructor's ``optimize_for_inference`` fast path is off, so the memory
variants and the pair model run the same kernels).

Examples:

```bash
python benchmarks/ablation.py                                # 20 sequences x 48 frames
python benchmarks/ablation.py --weights model.pt --sequences 5 --docs '' --plot ''
python benchmarks/ablation.py --from-json benchmarks/results/ablation.json   # redraw only
```

Writes the JSON (``--out``), the table between ``<!-- ablation:begin -->`` and
``<!-- ablation:end -->`` of ``--docs``, and a bar chart (``--plot``, needs matplotlib).
"""

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from _common import (
    cpu_name,
    default_threads,
    environment,
    markdown_table,
    pyplot_or_none,
    write_json,
)
from spatialmem.data.rooms import RoomScene, room_sequence, scene_seed
from spatialmem.inference import OnlineReconstructor, SegmentedReconstructor, Segments
from spatialmem.memory import MemoryConfig, MemoryState, SpatialMemory
from spatialmem.metrics import bounding_box_diagonal, evaluate_pointmaps
from spatialmem.models import Spann3R, create_model

logger = logging.getLogger("ablation")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ablation.json"
DEFAULT_DOCS = ROOT / "docs" / "results.md"
DEFAULT_PLOT = ROOT / "docs" / "images" / "ablation.png"
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"
METRICS = ("acc", "acc_med", "comp", "comp_med", "nc", "nc_med", "chamfer", "completion_ratio")


class AlwaysInsert(SpatialMemory):
    """A spatial memory without the similarity gate: every frame is written."""

    def should_insert(self, state: MemoryState, key: Tensor) -> Tensor:
        """Always ``True`` (the default refuses frames too similar to the working memory).

        Args:
            state: the memory (unused).
            key: raw keys of the new frame ``[B, P, C]``.

        Returns:
            ``[B]`` all true.
        """
        return torch.ones(key.shape[0], dtype=torch.bool, device=key.device)


MemoryFactory = Callable[[MemoryConfig], SpatialMemory]


def _with(**overrides: Any) -> MemoryFactory:
    """A memory factory: the default ``SpatialMemory`` with some config fields changed."""

    def build(config: MemoryConfig) -> SpatialMemory:
        return SpatialMemory(config, **overrides)

    return build


@dataclass(frozen=True)
class Variant:
    """One row of the table."""

    name: str
    """Key in the JSON."""
    label: str
    """Row name in the table."""
    how: str
    """What was changed, in words."""
    kind: str = "stream"
    """``"stream"`` (Spann3R through the online reconstructor), ``"segments"`` (through the
    segmented reconstructor) or ``"pair"`` (pair model only)."""
    trained: bool = True
    """Load the evaluated weights (``False``: seeded random init)."""
    segments: Segments | None = None
    """How a ``"segments"`` variant cuts the stream."""


VARIANTS = (
    Variant("trained", "Spann3R (trained)", "the model as it is"),
    Variant("wm_only", "working memory only", "long_mem_tokens=0 (top_k=0)"),
    Variant("no_clip", "no attention clipping", "attn_clip=0"),
    Variant("no_gate", "no similarity gate", "AlwaysInsert.should_insert"),
    Variant("uncapped", "memory uncapped", "long_mem_tokens=frames*P"),
    Variant("untrained", "untrained", "random init with --seed", trained=False),
    Variant(
        "segments",
        "segments of 6 + 3, loops closed",
        "SegmentedReconstructor(Segments(frames=6, overlap=3))",
        kind="segments",
        segments=Segments(),
    ),
    Variant(
        "segments_chained",
        "segments of 6 + 3, chained only",
        "SegmentedReconstructor(Segments(frames=6, overlap=3, loop_closure=None))",
        kind="segments",
        segments=Segments(loop_closure=None),
    ),
    Variant("pairwise", "pairwise, no memory", "pair model on (frame 0, frame t)", kind="pair"),
)
NAMES = tuple(v.name for v in VARIANTS)


def memory_factory(name: str, uncapped_tokens: int) -> MemoryFactory | None:
    """The memory of a variant (``None``: the model's default).

    Args:
        name: variant name.
        uncapped_tokens: long-term budget of ``uncapped`` (more than a sequence writes).
    """
    if name == "wm_only":
        return _with(long_mem_tokens=0, top_k=None)
    if name == "no_clip":
        return _with(attn_clip=0.0)
    if name == "no_gate":
        return AlwaysInsert
    if name == "uncapped":
        return _with(long_mem_tokens=uncapped_tokens, top_k=None)
    return None


# ---------------------------------------------------------------------------------------------
# models


def load_weights(args: argparse.Namespace) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The evaluated state dict (``--weights``, or the package's pretrained weights) and a
    description of where it came from."""
    if args.weights:
        sd = torch.load(args.weights, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):  # a checkpoint or training state, not a state dict
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
                break
        return sd, {"source": str(args.weights)}
    try:
        model = create_model(args.model, pretrained=True)
    except (TypeError, ValueError, FileNotFoundError) as err:
        raise SystemExit(
            f"create_model({args.model!r}, pretrained=True) failed ({err}); pass --weights PATH"
        ) from err
    info: dict[str, Any] = {"source": f"create_model({args.model!r}, pretrained=True)"}
    try:
        from spatialmem.models.pretrained import pretrained_metadata

        info["metadata"] = pretrained_metadata(args.model)
    except (ImportError, ValueError, FileNotFoundError):
        pass
    return model.state_dict(), info


def build_model(
    args: argparse.Namespace, variant: Variant, weights: dict[str, Tensor], uncapped: int
) -> Spann3R:
    """The variant's model in eval mode (every variant but ``untrained`` with ``weights``)."""
    memory = memory_factory(variant.name, uncapped)
    if not variant.trained:
        torch.manual_seed(args.seed)
    model = create_model(args.model, memory=memory) if memory else create_model(args.model)
    if variant.trained:
        model.load_state_dict(weights)
    assert isinstance(model, Spann3R)
    return model.eval()


def count_writes(memory: SpatialMemory) -> list[bool]:
    """Record the insertion decisions of ``memory`` (this instance's ``should_insert`` is
    wrapped; behaviour is unchanged). Returns the list the decisions are appended to."""
    decisions: list[bool] = []
    policy = memory.should_insert

    def recorded(state: MemoryState, key: Tensor) -> Tensor:
        out = policy(state, key)
        decisions.extend(bool(x) for x in out)
        return out

    memory.should_insert = recorded  # type: ignore[method-assign]
    return decisions


# ---------------------------------------------------------------------------------------------
# running one variant on one sequence


def run_stream(
    model: Spann3R, images: Tensor, writes: list[bool], *, segments: Segments | None = None
) -> tuple[Tensor, float, dict[str, int]]:
    """Stream ``images [T, 3, H, W]`` through the model: points, seconds, memory at the end.

    Args:
        model: a Spann3R in eval mode.
        images: the frames in [-1, 1].
        writes: the list ``count_writes`` fills for this model's memory (cleared here).
        segments: stream in overlapping segments cut this way (the memory at the end is the
            last segment's; writes are counted over all of them, loop pairs included).
    """
    writes.clear()
    recon: OnlineReconstructor | SegmentedReconstructor
    if segments is not None:
        recon = SegmentedReconstructor(model, segments, optimize=False)
    else:
        recon = OnlineReconstructor(model, optimize=False)  # eager, as the pair model runs
    start = time.perf_counter()
    results = recon.run(images)
    seconds = time.perf_counter() - start
    state = recon.state
    assert state is not None
    mem = {
        "frames_written": sum(writes),
        "writes_offered": len(writes),
        "tokens": int(state.count[0]),
        "long_tokens": int(state.long_tokens[0]),
        "work_frames": int(state.work_frames[0]),
    }
    return torch.stack([r.pts3d for r in results]), seconds, mem


def run_pairwise(
    model: Spann3R, images: Tensor, writes: list[bool] | None = None
) -> tuple[Tensor, float, dict[str, int]]:
    """Each frame against frame 0 with the pair model, one pair per incoming frame.

    Frame 0 is encoded once; frame t's points are view 2's of the pair (0, t), in frame 0's
    camera; frame 0's are view 1's of the first pair (head 1 runs only there).

    Args:
        model: a Spann3R in eval mode (only ``model.dust3r`` is used).
        images: the frames ``[T, 3, H, W]`` in [-1, 1].
        writes: unused (there is no memory).

    Returns:
        ``(points [T, H, W, 3], seconds, {})``.
    """
    pair = model.dust3r
    start = time.perf_counter()
    with torch.inference_mode():
        first = pair.encode(images[:1])
        points = []
        for t in range(1, images.shape[0]):
            view2 = pair.encode(images[t : t + 1])
            if t == 1:
                out = pair.predict_pair(first, view2)
                assert out.view2 is not None
                points += [out.view1.pts3d[0], out.view2.pts3d[0]]
            else:
                _, dec2 = pair.decode(first, view2)
                points.append(pair.predict_view2(dec2, view2).pts3d[0])
    seconds = time.perf_counter() - start
    return torch.stack(points), seconds, {}


def evaluate(pred: Tensor, clip: Any, args: argparse.Namespace) -> dict[str, float]:
    """Metrics of one reconstruction (identical settings for every variant)."""
    try:
        m = evaluate_pointmaps(
            pred.float(),
            clip.pts3d,
            clip.valid,
            align="sim3",
            max_points=args.max_points or None,
            seed=0,
            workers=args.threads,
        )
    except ValueError as err:  # e.g. non-finite points of a degenerate model
        logger.warning("evaluation failed: %s", err)
        return {k: math.nan for k in METRICS} | {"error": str(err)}
    return {k: float(getattr(m, k)) for k in METRICS} | {"num_pred": m.num_pred}


# ---------------------------------------------------------------------------------------------
# summary, table, plot, docs


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-variant summary: metrics averaged over sequences (mean of the per-sequence means and
    of the per-sequence medians), frames/s as total frames over total seconds."""
    out: dict[str, Any] = {k: _mean([r[k] for r in records]) for k in (*METRICS, "acc_rel")}
    out["acc_rel_median_over_sequences"] = statistics.median(r["acc_rel"] for r in records)
    frames = sum(r["frames"] for r in records)
    seconds = math.fsum(r["seconds"] for r in records)
    out["fps"] = frames / seconds if seconds > 0 else math.nan
    out["seconds"] = seconds
    out["cpu_seconds"] = math.fsum(r["cpu_seconds"] for r in records)
    out["sequences"] = len(records)
    out["failed"] = sum("error" in r for r in records)
    paths = sorted({r["path"] for r in records if "path" in r})
    out["by_path"] = {
        p: {
            "sequences": sum(r.get("path") == p for r in records),
            **{k: _mean([r[k] for r in records if r.get("path") == p]) for k in PATH_METRICS},
        }
        for p in paths
    }
    mem = [r["memory"] for r in records if r["memory"]]
    if mem:
        for key in ("frames_written", "writes_offered", "tokens", "long_tokens"):
            out[f"mean_{key}"] = _mean([m[key] for m in mem])
    return out


# What the per-path table shows: each sequence's distances over its diameter, and NC.
PATH_METRICS = ("acc_rel", "comp_rel", "nc")


def _fmt(digits: int) -> Callable[[Any], str]:
    return lambda v: "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


def results_table(payload: dict[str, Any]) -> str:
    """The Markdown table of the summary, one row per variant."""
    rows = []
    for v in VARIANTS:
        if v.name not in payload["variants"]:
            continue
        s = payload["variants"][v.name]["summary"]
        written = (
            f"{s['mean_frames_written']:.1f} / {s['mean_writes_offered']:.0f}"
            if "mean_frames_written" in s
            else "-"
        )
        tokens = f"{s['mean_tokens']:.0f}" if "mean_tokens" in s else "-"
        rows.append({"label": v.label, **s, "written": written, "tokens_end": tokens})
    f4, f3 = _fmt(4), _fmt(3)
    return markdown_table(
        rows,
        [
            ("label", "variant"),
            ("acc", "Acc mean ↓", f4),
            ("acc_med", "Acc med ↓", f4),
            ("comp", "Comp mean ↓", f4),
            ("comp_med", "Comp med ↓", f4),
            ("nc", "NC mean ↑", f3),
            ("nc_med", "NC med ↑", f3),
            ("acc_rel", "Acc / diameter", f4),
            ("fps", "frames/s", _fmt(1)),
            ("written", "frames written"),
            ("tokens_end", "tokens at end"),
        ],
    )


def path_table(payload: dict[str, Any]) -> str:
    """The Markdown table of each variant by the camera path of the rooms (walk-through,
    forward motion, orbit): Acc and Comp over the diameter and NC, averaged over the sequences
    of that path; empty when the results do not record the paths."""
    variants = [v for v in VARIANTS if v.name in payload["variants"]]
    counts: dict[str, int] = {}
    for v in variants:
        for p, s in payload["variants"][v.name]["summary"].get("by_path", {}).items():
            counts[p] = s["sequences"]
    if not counts:
        return ""
    paths = sorted(counts)
    rows, columns = [], [("label", "variant")]
    for p in paths:
        columns += [
            (f"{p}_acc_rel", f"{p} ({counts[p]}): Acc / diam.", _fmt(4)),
            (f"{p}_comp_rel", "Comp / diam.", _fmt(4)),
            (f"{p}_nc", "NC", _fmt(3)),
        ]
    for v in variants:
        by_path = payload["variants"][v.name]["summary"].get("by_path", {})
        row: dict[str, Any] = {"label": v.label}
        for p in paths:
            for k in PATH_METRICS:
                row[f"{p}_{k}"] = by_path.get(p, {}).get(k, math.nan)
        rows.append(row)
    return markdown_table(rows, columns)


def docs_block(payload: dict[str, Any]) -> str:
    """What goes between the markers of the docs page: the table and how it was made."""
    c, m = payload["config"], payload["machine"]
    flags = ", ".join(m["cpu_flags"]) or "none"
    weights = payload["weights"].get("source", c["weights"])
    load = m.get("loadavg_at_start")
    load_text = f", load average {load[0]:.1f} at the start" if load else ""
    return "\n".join(
        [
            results_table(payload),
            "",
            f"{c['sequences']} test sequences x {c['frames']} frames "
            f"({c['height']}x{c['width']}, stride {c['stride']}), model `{c['model']}`, "
            f"weights `{weights}`; metrics averaged over sequences (each sequence's mean and "
            f"median), at most {c['max_points']} points per cloud. Machine: {m['cpu']}, "
            f"{m['cores']} cores, torch threads: {m['threads']}, AVX-512/AMX flags: {flags}, "
            f"torch {m['torch']}{load_text}. The whole run took "
            f"{payload['total_seconds'] / 60:.1f} min ({payload['cpu_seconds'] / 60:.1f} min of "
            "process CPU time).",
            *(
                ["", "By the camera path of the rooms (sequences of each path in brackets):", "",
                 by_path]
                if (by_path := path_table(payload))
                else []
            ),
        ]
    )  # fmt: skip


def update_docs(path: Path, block: str) -> None:
    """Replace what lies between the ablation markers of ``path`` with ``block``.

    Raises:
        ValueError: the page lacks the markers (or has them out of order).
    """
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no '{BEGIN}' ... '{END}' block to replace")
    new = f"{BEGIN}\n{block.strip()}\n{END}"
    path.write_text(pattern.sub(lambda _: new, text, count=1))


def plot(payload: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of Acc (and, beside it, Comp) per variant: the mean and the median averaged
    over sequences, and every sequence's mean as a dot."""
    plt = pyplot_or_none()
    if plt is None:
        return None

    variants = [v for v in VARIANTS if v.name in payload["variants"]]
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=110, sharey=True)
    width = 0.38
    for ax, (key, name) in zip(axes, (("acc", "Acc"), ("comp", "Comp")), strict=True):
        for i, v in enumerate(variants):
            entry = payload["variants"][v.name]
            s = entry["summary"]
            first = i == 0
            ax.bar(i - width / 2, s[key], width, color="tab:blue", label="mean" if first else None)
            ax.bar(
                i + width / 2,
                s[f"{key}_med"],
                width,
                color="tab:orange",
                label="median" if first else None,
            )
            per_seq = [r[key] for r in entry["per_sequence"] if math.isfinite(r[key])]
            ax.scatter(
                [i - width / 2] * len(per_seq), per_seq, s=8, color="black", alpha=0.5,
                zorder=3, label="mean of one room" if first else None,
            )  # fmt: skip
        ax.set_xticks(range(len(variants)), [v.label for v in variants], rotation=25, ha="right")
        ax.set_title(f"{name} (lower is better)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    values = [
        x
        for v in variants
        for key in ("acc", "acc_med", "comp", "comp_med")
        for x in [payload["variants"][v.name]["summary"][key]]
        + [r[key] for r in payload["variants"][v.name]["per_sequence"]]
    ]
    finite = [x for x in values if math.isfinite(x) and x > 0]
    if finite and max(finite) / min(finite) > 30:
        axes[0].set_yscale("log")
    axes[0].set_ylabel("distance (m) after Sim(3) alignment")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    c = payload["config"]
    fig.suptitle(
        f"{c['sequences']} test rooms x {c['frames']} frames: mean and median averaged over rooms",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, its AVX-512/AMX flags, cores, torch version and threads."""
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                names = line.split(":", 1)[1].split()
                flags = sorted(f for f in names if f.startswith(("avx512", "amx")))
                break
    except OSError:
        pass
    return {
        "cpu": cpu_name(),
        "cpu_flags": flags,
        "cores": default_threads(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sequences", type=int, default=20, help="test sequences 0..N-1")
    p.add_argument("--frames", type=int, default=48, help="frames per sequence")
    p.add_argument("--stride", type=int, default=2, help="video frames between frames")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--model", default="spann3r_small_synthetic", help="registered model name")
    p.add_argument("--weights", default=None, help="state dict (default: pretrained weights)")
    p.add_argument("--seed", type=int, default=0, help="seed of the untrained model")
    p.add_argument("--max-points", type=int, default=20000, help="points per cloud (0: all)")
    p.add_argument("--variants", nargs="+", choices=NAMES, default=list(NAMES))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results ('' to skip)")
    p.add_argument("--docs", default=str(DEFAULT_DOCS), help="page to update ('' to skip)")
    p.add_argument("--plot", default=str(DEFAULT_PLOT), help="bar chart PNG ('' to skip)")
    p.add_argument(
        "--from-json", default=None, help="redraw the table and chart from this JSON, run nothing"
    )
    args = p.parse_args(argv)
    args.threads = args.threads or default_threads()
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the ablation; returns the JSON payload (also written to ``--out``)."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%X")
    if args.from_json:
        payload = json.loads(Path(args.from_json).read_text())
        publish(payload, args)
        return payload
    torch.set_num_threads(args.threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    variants = [v for v in VARIANTS if v.name in args.variants]
    weights, weights_info = load_weights(args) if any(v.trained for v in variants) else ({}, {})

    with torch.device("meta"):
        probe = create_model(args.model)
    patch = probe.config.dust3r.patch_size
    tokens_per_frame = (args.height // patch) * (args.width // patch)
    uncapped = args.frames * tokens_per_frame  # more than a sequence can ever write
    models = {v.name: build_model(args, v, weights, uncapped) for v in variants}
    writes = {v.name: count_writes(models[v.name].memory) for v in variants}

    def run(v: Variant, images: Tensor) -> tuple[Tensor, float, dict[str, int]]:
        if v.kind == "pair":
            return run_pairwise(models[v.name], images, writes[v.name])
        return run_stream(models[v.name], images, writes[v.name], segments=v.segments)

    # untimed warm-up of every model on 3 frames of the first sequence
    warm = room_sequence(0, 3, args.height, args.width, split="test", stride=args.stride)
    for v in variants:
        run(v, warm.images)

    per_seq: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for i in range(args.sequences):
        clip = room_sequence(
            i, args.frames, args.height, args.width, split="test", stride=args.stride
        )
        diameter = float(bounding_box_diagonal(clip.pts3d[clip.valid]))
        path = RoomScene.random(scene_seed("test", i)).trajectory
        shift = i % len(variants)
        for v in variants[shift:] + variants[:shift]:
            cpu = time.process_time()
            pred, seconds, mem = run(v, clip.images)
            cpu = time.process_time() - cpu  # all threads; not slowed by other processes
            tic = time.perf_counter()
            scores = evaluate(pred, clip, args)
            scores["eval_seconds"] = time.perf_counter() - tic
            per_seq[v.name].append(
                {"sequence": i, "path": path, "diameter": diameter, **scores,
                 "acc_rel": scores["acc"] / diameter, "comp_rel": scores["comp"] / diameter,
                 "frames": args.frames,
                 "seconds": seconds, "fps": args.frames / seconds, "cpu_seconds": cpu,
                 "memory": mem}
            )  # fmt: skip
        logger.info(
            "sequence %d/%d: %s",
            i + 1,
            args.sequences,
            ", ".join(f"{n} {r[-1]['acc']:.3f}" for n, r in per_seq.items()),
        )

    fields = ("sequences", "frames", "stride", "height", "width", "model", "weights", "seed")
    config = {k: getattr(args, k) for k in (*fields, "max_points", "threads")}
    config |= {"split": "test", "align": "sim3", "icp": None, "conf_used": False}
    config["tokens_per_frame"] = tokens_per_frame
    payload: dict[str, Any] = {
        "config": config,
        "weights": weights_info,
        "machine": machine_info(args.threads),
        "variants": {},
    }
    for v in variants:
        model = models[v.name]
        payload["variants"][v.name] = {
            "label": v.label,
            "how": v.how,
            "kind": v.kind,
            "trained": v.trained,
            "memory_class": type(model.memory).__name__,
            "memory_config": dataclasses.asdict(model.memory.config),
            "summary": summarize(per_seq[v.name]),
            "per_sequence": per_seq[v.name],
        }
    payload["total_seconds"] = time.perf_counter() - start
    payload["cpu_seconds"] = time.process_time() - cpu_start
    payload["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    print(
        f"total {payload['total_seconds']:.0f} s (process CPU time {payload['cpu_seconds']:.0f} s)"
    )
    if args.out:
        logger.info("wrote %s", write_json(args.out, payload))
    publish(payload, args)
    payload["env"] = environment()
    return payload


def publish(payload: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the table, draw the chart (``--plot``) and update the page (``--docs``)."""
    print(results_table(payload))
    if args.plot and (png := plot(payload, Path(args.plot))):
        logger.info("wrote %s", png)
    if args.docs:
        update_docs(Path(args.docs), docs_block(payload))
        logger.info("updated %s", args.docs)


if __name__ == "__main__":
    main()
