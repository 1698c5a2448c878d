"""Small helpers shared by the benchmark scripts: timing with device sync, FLOP counting, matmul
peak, resident memory, Markdown tables and JSON results with the environment they were measured
in; and the options shared by the scripts that stream a model over synthetic rooms.

The measuring helpers live in [`spatialmem.bench.measure`][spatialmem.bench.measure]
(``spatialmem bench`` uses them too); this module re-exports them for the scripts, which
import it as ``from _common import ...`` (the script's folder is on ``sys.path`` when it is run as
``python benchmarks/<script>.py``).
"""

import argparse
import logging
from typing import Any

from spatialmem.bench.measure import (
    FlopCount,
    count_flops,
    cpu_name,
    current_rss,
    default_threads,
    device_name,
    environment,
    fmt_sig,
    markdown_table,
    matmul_peak,
    peak_rss,
    reset_peak_rss,
    summarize,
    sync,
    time_fn,
    write_json,
)
from spatialmem.interop import load_checkpoint
from spatialmem.models import Spann3R, create_model

__all__ = [
    "FlopCount",
    "add_room_model_arguments",
    "count_flops",
    "cpu_name",
    "current_rss",
    "default_threads",
    "device_name",
    "environment",
    "fmt_sig",
    "markdown_table",
    "matmul_peak",
    "model_from_args",
    "peak_rss",
    "pyplot_or_none",
    "reset_peak_rss",
    "rooms_from_args",
    "summarize",
    "sync",
    "time_fn",
    "write_json",
]


def add_room_model_arguments(parser: argparse.ArgumentParser, *, split: str, rooms: str) -> None:
    """``--weights``, ``--model``, ``--split`` and ``--rooms FIRST:LAST`` (defaults ``split``
    and ``rooms``): which model runs over which synthetic rooms."""
    parser.add_argument("--weights", help="a state dict (default: the shipped weights)")
    parser.add_argument("--model", default="spann3r_small_synthetic")
    parser.add_argument("--split", default=split, choices=("train", "val", "test"))
    parser.add_argument(
        "--rooms", default=rooms, type=_room_range, help="FIRST:LAST rooms of the split"
    )


def model_from_args(args: argparse.Namespace) -> Spann3R:
    """The model of ``--model`` in eval mode, with ``--weights`` or its shipped weights."""
    model = create_model(args.model, pretrained=args.weights is None).eval()
    if args.weights is not None:
        load_checkpoint(model, args.weights)
    return model


def _room_range(text: str) -> range:
    """``--rooms FIRST:LAST`` as the room numbers ``FIRST .. LAST - 1``."""
    try:
        first, last = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected FIRST:LAST (two integers, e.g. 0:20), got {text!r}"
        ) from None
    if not 0 <= first < last:
        raise argparse.ArgumentTypeError(f"expected 0 <= FIRST < LAST, got {text!r}")
    return range(first, last)


def rooms_from_args(args: argparse.Namespace) -> range:
    """The room numbers of ``--rooms FIRST:LAST`` (parsed by the option's type)."""
    return args.rooms


def pyplot_or_none() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or ``None`` (with a warning) when
    matplotlib, of the extra ``eval``, is not installed: the scripts' figures are optional."""
    try:
        import matplotlib
    except ImportError:
        logging.getLogger("benchmarks").warning(
            "matplotlib is not installed (extra `eval`): no plot"
        )
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
