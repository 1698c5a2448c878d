"""``spatialmem bench``: the streaming step of the published-size Spann3R timed eager against
optimised in one run, with FLOPs, the machine's matmul peak on the same path, memory, a
per-component breakdown, the cost along a long stream and the approximate tiers' accuracy.

Also runnable as ``python benchmarks/bench_step.py``. The results go to a JSON file; the
*Performance* page's tables and plots are regenerated from them (see
[`report`][spatialmem.bench.report]).
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from spatialmem.bench.measure import default_threads, environment, write_json
from spatialmem.bench.report import (
    COMPONENTS_PNG,
    STREAM_PNG,
    plot_components,
    plot_stream,
    render_sections,
    update_page,
)
from spatialmem.bench.step import VARIANTS, BenchConfig, run_bench

__all__ = [
    "VARIANTS",
    "BenchConfig",
    "add_arguments",
    "config_from_args",
    "main",
    "run_bench",
    "run_from_args",
]

logger = logging.getLogger(__name__)

DEFAULT_PAGE = Path("docs/performance.md")
DEFAULT_RESULTS = Path("benchmarks/results")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``spatialmem bench`` to ``parser``."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="full",
        action="store_false",
        help="(default) the published model at 224x224, batch 1, 3 rounds; a 300-frame stream "
        "of the small model; minutes on 2 cores",
    )
    mode.add_argument(
        "--full",
        dest="full",
        action="store_true",
        help="224x224 and 512x384, batch 1 and 8, 5 rounds; a 10,000-frame stream (an hour or "
        "more on 2 cores)",
    )
    parser.set_defaults(full=False)
    parser.add_argument("--model", default="spann3r_vitl_dpt512", help="timed Spann3R preset")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="also time the approximate int8 tier and measure its accuracy on synthetic rooms",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="also time bf16 (5x slower than fp32 on CPUs without bf16 instructions)",
    )
    parser.add_argument(
        "--checkpoint",
        help=(
            "weights of the small model for the accuracy of --int8/--bf16 (default: its "
            "shipped weights)"
        ),
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds (3 quick, 5 full)")
    parser.add_argument(
        "--steps-per-round",
        type=int,
        help="timed steps of each variant per round (2 on CPU, 20 on CUDA, where a step is short)",
    )
    parser.add_argument(
        "--frames", type=int, help="frames of the stream run (300 / 10000; 0 skips)"
    )
    parser.add_argument(
        "--no-components", action="store_true", help="skip the per-component breakdown"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    parser.add_argument(
        "--json", type=Path, help="results file (default benchmarks/results/bench_step_<mode>.json)"
    )
    parser.add_argument(
        "--page",
        type=Path,
        help=f"docs page to regenerate (default {DEFAULT_PAGE} when it exists in this folder)",
    )
    parser.add_argument(
        "--no-page", action="store_true", help="do not touch the docs page or its images"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="measure nothing: regenerate the page and plots from an earlier results file",
    )


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The [`BenchConfig`][spatialmem.bench.BenchConfig] of parsed ``spatialmem bench`` options.

    Raises:
        ValueError: a bad option value (named).
    """
    for name in ("rounds", "steps_per_round", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            option = name.replace("_", "-")
            raise ValueError(f"argument --{option}: must be a positive integer, got {value}")
    if args.frames is not None and args.frames < 0:
        raise ValueError(f"argument --frames: must be >= 0, got {args.frames}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("argument --device: CUDA is not available on this machine")
    variants = ["eager", "optimized"]
    if args.int8:
        variants.append("int8")
    if args.bf16:
        variants.append("bf16")
    full = bool(args.full)
    on_cuda = args.device == "cuda"
    return BenchConfig(
        mode="full" if full else "quick",
        model=args.model,
        sizes=[(224, 224), (384, 512)] if full else [(224, 224)],
        batches=[1, 8] if full else [1],
        variants=variants,
        rounds=args.rounds or (5 if full else 3),
        steps_per_round=args.steps_per_round or (20 if on_cuda else 2),
        warmup_steps=3 if on_cuda else 1,  # the graphs of every block recorded first
        components=not args.no_components,
        stream_frames=(10_000 if full else 300) if args.frames is None else args.frames,
        checkpoint=args.checkpoint,
        device=args.device,
    )


def run_from_args(args: argparse.Namespace, command: str = "spatialmem bench") -> str:
    """Run ``spatialmem bench``: measure, write the JSON, the plots and the docs page.

    Returns:
        A short Markdown report (the latency table and where the files went).
    """
    page = (
        None if args.no_page else (args.page or (DEFAULT_PAGE if DEFAULT_PAGE.exists() else None))
    )
    if page is not None and not page.exists():
        raise ValueError(f"argument --page: {page} does not exist")
    if args.from_json is not None:
        if not args.from_json.is_file():
            raise ValueError(f"argument --from-json: {args.from_json} is not a file")
        results = json.loads(args.from_json.read_text())
        return _publish(results, page, args.from_json, write=False)
    cfg = config_from_args(args)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise ValueError(f"argument --checkpoint: {args.checkpoint} is not a file")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads or default_threads())
    try:
        return _measure(args, cfg, page, command)
    finally:
        torch.set_num_threads(previous)


def _measure(args: argparse.Namespace, cfg: BenchConfig, page: Path | None, command: str) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load and load[0] >= 1.0:
        logger.warning(
            "load average %.1f at start: other processes compete for the cores and skew the "
            "timings (ratios of alternating rounds are less affected)",
            load[0],
        )
    json_path = args.json or DEFAULT_RESULTS / f"bench_step_{cfg.mode}.json"
    results = run_bench(cfg)
    from spatialmem.optimize import cpu_features

    cpu = cpu_features()
    results["cpu"] = {
        "name": cpu.name,
        "capability": cpu.capability,
        "avx512": cpu.avx512,
        "native_bf16": cpu.native_bf16,
        "onednn_bf16": cpu.onednn_bf16,
    }
    results["loadavg_start"] = load
    results["command"] = command
    results["env"] = environment([cfg.device])
    return _publish(results, page, json_path, write=True)


def _publish(results: dict[str, Any], page: Path | None, json_path: Path, write: bool) -> str:
    """Write the JSON (``write``), the plots and the page's sections; return the report."""
    if write:
        payload = {k: v for k, v in results.items() if k != "env"}
        write_json(json_path, payload, devices=[results["config"]["device"]])
    image_dir = page.parent / "images" if page is not None else json_path.parent
    images = {}
    if plot_components(results, image_dir / COMPONENTS_PNG):
        images["components"] = f"images/{COMPONENTS_PNG}"
    if plot_stream(results, image_dir / STREAM_PNG):
        images["stream"] = f"images/{STREAM_PNG}"
    sections = render_sections(results, images)
    if page is not None:
        update_page(page, sections)
    lines = [sections["latency"], ""]
    lines.append(f"results: {json_path}")
    lines.append(f"plots: {image_dir / COMPONENTS_PNG}, {image_dir / STREAM_PNG}")
    if page is not None:
        lines.append(f"page: {page}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python benchmarks/bench_step.py`` (the options of ``spatialmem bench``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    text = run_from_args(
        args, command="python benchmarks/bench_step.py " + " ".join(argv or sys.argv[1:])
    )
    sys.stdout.write(text + "\n")
    logger.info("done in %.0f s", time.perf_counter() - start)
    return 0
