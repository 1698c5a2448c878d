"""Seconds per image pair, FLOPs and fraction of the measured matmul peak of the DUSt3R pair models.

Times the published architectures (random weights) in eval mode under ``torch.inference_mode()``:
``dust3r_vitl_224_linear`` at 224x224 and ``dust3r_vitl_512_dpt`` at 512x384 (W x H, landscape),
on CPU and CUDA (when available), in fp32 and under ``torch.autocast(..., dtype=torch.bfloat16)``.
FLOPs of one forward come from ``torch.utils.flop_counter.FlopCounterMode``; the peak is a timed
large square ``torch.mm`` on the same device and dtype.

Examples::

    python benchmarks/bench_pair.py                                   # everything available
    python benchmarks/bench_pair.py --tiny                            # smoke run (seconds)
    python benchmarks/bench_pair.py --devices cpu --warmup 1 --repeats 3
    python benchmarks/bench_pair.py --models dust3r_vitl_512_dpt --dtypes bf16 --batch 4
"""

import argparse
import gc
import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import spatialmem
from _common import (
    FlopCount,
    count_flops,
    default_threads,
    device_name,
    fmt_sig,
    markdown_table,
    matmul_peak,
    summarize,
    time_fn,
    write_json,
)
from spatialmem.models import create_model

logger = logging.getLogger("bench_pair")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Spec:
    """A benchmarked model: registry preset, input size and the tiny stand-in for smoke runs."""

    preset: str
    height: int
    width: int
    tiny: str


SPECS = {
    "dust3r_vitl_224_linear": Spec("dust3r_vitl_224_linear", 224, 224, "dust3r_tiny_linear"),
    "dust3r_vitl_512_dpt": Spec("dust3r_vitl_512_dpt", 384, 512, "dust3r_tiny_dpt"),
}
TINY_SIZE = 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

COLUMNS = [
    ("model", "model"),
    ("resolution", "W x H"),
    ("batch", "batch"),
    ("device", "device"),
    ("dtype", "dtype"),
    ("s_per_pair", "s/pair (median)", fmt_sig),
    ("s_per_pair_min", "s/pair (min)", fmt_sig),
    ("gflop_per_pair", "GFLOP/pair", fmt_sig),
    ("achieved_gflops", "achieved GFLOP/s", fmt_sig),
    ("peak_gflops", "matmul peak GFLOP/s", fmt_sig),
    ("fraction_of_peak", "fraction of peak", ".2f"),
]


def build(preset: str, device: torch.device) -> torch.nn.Module:
    """Build ``preset`` with its parameters allocated on ``device`` directly (one copy in RAM)."""
    torch.manual_seed(0)
    try:
        with device:
            model = create_model(preset)
    except Exception as err:  # a module that cannot be built under a device context
        logger.warning("building on %s failed (%s); building on CPU and moving", device, err)
        model = create_model(preset).to(device)
    return model.eval()


def forward_fn(
    model: torch.nn.Module, img1: torch.Tensor, img2: torch.Tensor, dtype: torch.dtype
) -> Callable[[], Any]:
    """One pair forward, under bf16 autocast when ``dtype`` asks for it (entered on every call, as
    an application would, so the per-call weight casts are part of the time)."""
    device_type = img1.device.type

    def run() -> Any:
        ctx = torch.autocast(device_type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        with ctx:
            return model(img1, img2)

    return run


def bench_model(
    spec: Spec,
    args: argparse.Namespace,
    devices: list[torch.device],
    peaks: dict[tuple[str, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    preset = spec.tiny if args.tiny else spec.preset
    h, w = (TINY_SIZE, TINY_SIZE) if args.tiny else (spec.height, spec.width)
    rows = []
    count: FlopCount | None = None
    for device in devices:
        t0 = time.perf_counter()
        model = build(preset, device)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info(
            "%s on %s: %.1f M parameters, built in %.1f s",
            preset,
            device,
            n_params / 1e6,
            time.perf_counter() - t0,
        )
        g = torch.Generator().manual_seed(0)
        img1 = (torch.rand(args.batch, 3, h, w, generator=g) * 2 - 1).to(device)
        img2 = (torch.rand(args.batch, 3, h, w, generator=g) * 2 - 1).to(device)
        with torch.inference_mode():
            if count is None:  # depends on shapes only: the same for every device and dtype
                t0 = time.perf_counter()
                count = count_flops(forward_fn(model, img1, img2, torch.float32))
                shape = tuple(count.result.view2.pts3d.shape)
                count = count._replace(result=None)
                if shape != (args.batch, h, w, 3):
                    raise RuntimeError(f"{preset}: unexpected view2.pts3d shape {shape}")
                logger.info(
                    "  %.1f GFLOP per forward of batch %d (counted on %s in %.1f s)",
                    count.total / 1e9,
                    args.batch,
                    device,
                    time.perf_counter() - t0,
                )
            flops = count.total
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                fn = forward_fn(model, img1, img2, dtype)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                t0 = time.perf_counter()
                times = time_fn(fn, device, args.warmup, args.repeats)
                stats = summarize(times)
                peak = peaks[(device.type, dtype_name)]["gflops_best"]
                achieved = flops / stats["median"] / 1e9
                rows.append(
                    {
                        "model": preset,
                        "resolution": f"{w}x{h}",
                        "height": h,
                        "width": w,
                        "batch": args.batch,
                        "device": device.type,
                        "device_name": device_name(device),
                        "dtype": dtype_name,
                        "params": n_params,
                        "warmup": args.warmup,
                        "repeats": len(times),
                        "times_s": times,
                        "s_per_call": stats,
                        "s_per_pair": stats["median"] / args.batch,
                        "s_per_pair_min": stats["min"] / args.batch,
                        "gflop_per_pair": flops / args.batch / 1e9,
                        "gflop_per_pair_by_op": {
                            k: v / args.batch / 1e9 for k, v in count.by_op.items()
                        },
                        "achieved_gflops": achieved,
                        "peak_gflops": peak,
                        "fraction_of_peak": achieved / peak,
                        "peak_cuda_bytes": torch.cuda.max_memory_allocated(device)
                        if device.type == "cuda"
                        else None,
                    }
                )
                logger.info(
                    "  %s %s: %.3f s/pair median (min %.3f) over %d repeats, %.1f s in all",
                    device.type,
                    dtype_name,
                    rows[-1]["s_per_pair"],
                    rows[-1]["s_per_pair_min"],
                    len(times),
                    time.perf_counter() - t0,
                )
        del model, img1, img2, fn
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(SPECS), default=list(SPECS))
    ap.add_argument(
        "--devices",
        nargs="+",
        choices=["cpu", "cuda"],
        default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"],
    )
    ap.add_argument(
        "--dtypes", nargs="+", choices=list(DTYPES), default=None, help="default: fp32 (quick), all"
    )
    ap.add_argument("--batch", type=int, default=1, help="pairs per forward")
    ap.add_argument("--warmup", type=int, default=None, help="untimed forwards (1 quick, 2 full)")
    ap.add_argument("--repeats", type=int, default=None, help="timed forwards (3 quick, 5 full)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: all cores)"
    )
    ap.add_argument(
        "--full",
        action="store_true",
        help="the published architectures at their sizes, every dtype (a long run); the default "
        f"is the quick run: tiny presets at {TINY_SIZE}x{TINY_SIZE}, fp32",
    )
    ap.add_argument("--tiny", action="store_true", help="the quick run (the default)")
    ap.add_argument(
        "--peak-n", type=int, default=None, help="matmul side (default 2048 CPU, 8192 CUDA)"
    )
    ap.add_argument(
        "--peak-seconds",
        type=float,
        default=None,
        help="seconds per matmul peak measurement (default 3 CPU, 1 CUDA; 0.5 with --tiny)",
    )
    ap.add_argument(
        "--no-value-checks",
        action="store_true",
        help="skip spatialmem's NaN/Inf input checks (a host sync per call on CUDA)",
    )
    ap.add_argument("--json", type=Path, default=None, help="output JSON")
    args = ap.parse_args(argv)
    args.tiny = not args.full
    if args.dtypes is None:
        args.dtypes = list(DTYPES) if args.full else ["fp32"]
    if args.warmup is None:
        args.warmup = 2 if args.full else 1
    if args.repeats is None:
        args.repeats = 5 if args.full else 3
    if args.json is None:
        args.json = RESULTS / ("bench_pair.json" if args.full else "bench_pair_quick.json")
    if "cuda" in args.devices and not torch.cuda.is_available():
        ap.error("--devices cuda: CUDA is not available")
    if args.batch < 1 or args.warmup < 0 or args.repeats < 1:
        ap.error("--batch and --repeats must be >= 1, --warmup >= 0")
    if args.peak_seconds is None and args.tiny:
        args.peak_seconds = 0.5
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    start = time.perf_counter()
    torch.set_num_threads(args.threads or default_threads())
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if busy >= 1.0:
        logger.warning("load average %.1f at start: other processes may skew CPU timings", busy)
    if args.no_value_checks:
        spatialmem.set_value_checks(False)
    devices = [torch.device("cuda" if d == "cuda" else "cpu") for d in args.devices]

    peaks: dict[tuple[str, str], dict[str, Any]] = {}
    for device in devices:
        for dtype_name in args.dtypes:
            peak = matmul_peak(device, DTYPES[dtype_name], args.peak_n, args.peak_seconds)
            peaks[(device.type, dtype_name)] = peak
            logger.info(
                "matmul peak %s %s (n=%d): %.1f GFLOP/s (median %.1f)",
                device.type,
                dtype_name,
                peak["n"],
                peak["gflops_best"],
                peak["gflops_median"],
            )

    rows = []
    for name in args.models:
        rows.extend(bench_model(SPECS[name], args, devices, peaks))

    total = time.perf_counter() - start
    print(markdown_table(rows, COLUMNS))
    settings = {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "value_checks": not args.no_value_checks,
    }
    path = write_json(
        args.json,
        {
            "benchmark": "bench_pair",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "settings": settings,
            "total_seconds": total,
            "peaks": list(peaks.values()),
            "rows": rows,
        },
        devices=devices,
    )
    logger.info("wrote %s (%.1f s in all)", path, total)


if __name__ == "__main__":
    main()
