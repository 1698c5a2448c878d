"""Small helpers shared by the benchmark scripts: timing with device sync, FLOP counting, matmul
peak, resident memory, Markdown tables and JSON results with the environment they were measured
in.

They live in [`spatialmem.bench.measure`][spatialmem.bench.measure] (``spatialmem bench`` uses
them too); this module re-exports them for the scripts, which import it as
``from _common import ...`` (the script's folder is on ``sys.path`` when it is run as
``python benchmarks/<script>.py``).
"""

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
