"""Files of a training run: the per-step metrics CSV and its loss plot.

[`MetricsCSV`][spatialmem.training.logs.MetricsCSV] appends one row per optimiser step to
``metrics.csv`` (columns [`METRIC_COLUMNS`][spatialmem.training.logs.METRIC_COLUMNS]; ``val_loss``
is empty on the rows where no validation ran);
[`plot_loss_curves`][spatialmem.training.logs.plot_loss_curves] draws such a file as a PNG
(matplotlib, the ``eval`` extra, imported only when a plot is drawn):

```python
from pathlib import Path
from tempfile import TemporaryDirectory

from spatialmem.training.logs import MetricsCSV, plot_loss_curves

with TemporaryDirectory() as tmp:
    csv_path = Path(tmp) / "metrics.csv"
    with MetricsCSV(csv_path) as log:
        for step in range(1, 21):
            val = 0.9 / step if step % 5 == 0 else None
            log.write(step=step, epoch=0, loss=1.0 / step, val_loss=val)
    plot_loss_curves(csv_path, Path(tmp) / "loss.png", title="demo")
```
"""

import csv
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["METRIC_COLUMNS", "MetricsCSV", "plot_loss_curves", "read_metrics"]

METRIC_COLUMNS: tuple[str, ...] = (
    "step",
    "epoch",
    "lr",
    "alpha",
    "loss",
    "conf_loss",
    "scale_loss",
    "grad_norm",
    "seconds",
    "data_seconds",
    "val_loss",
    "val_error",
)
"""Columns of ``metrics.csv``: optimiser step (1-based), epoch (0-based), learning rate and
confidence weight of the step, training loss and its confidence and scale parts, gradient norm
before clipping, seconds since the run started (resumed runs continue the count), seconds the
step waited for its batches from the data loader (the step is data-bound when this is most of
the time between two rows), and where
validation ran the validation loss and the validation error (per-pixel error after one Sim(3) per
clip, as a fraction of the scene's diameter:
[`aligned_point_error`][spatialmem.metrics.aligned_point_error]; it measures registration, which
the loss does not show on its own)."""


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.8g}"
    return str(value)


def read_metrics(csv_path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a metrics CSV as dictionaries of strings (empty string: no value).

    Args:
        csv_path: a file written by [`MetricsCSV`][spatialmem.training.logs.MetricsCSV].

    Returns:
        One dictionary per row, keyed by the header's column names.
    """
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


class MetricsCSV:
    """Append-only CSV of per-step training metrics, flushed after every row.

    Args:
        path: the CSV file (parent folders are created).
        columns: column names, in order (default
            [`METRIC_COLUMNS`][spatialmem.training.logs.METRIC_COLUMNS]).
        keep_until: continue an existing file: keep its rows whose ``step`` is at most this and
            drop the later ones (rows written after the last saved state of an interrupted run),
            then append. ``None`` starts a new file, replacing any old one. A file with a
            different header is replaced too.

    Example:
        ```python
        with MetricsCSV("run/metrics.csv") as log:
            log.write(step=1, epoch=0, loss=0.5)
        ```
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str] = METRIC_COLUMNS,
        *,
        keep_until: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        if "step" not in self.columns and keep_until is not None:
            raise ValueError("`keep_until` needs a 'step' column")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if keep_until is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) == self.columns:
                    kept = [r for r in reader if r["step"] and int(r["step"]) <= keep_until]
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 - closed by close()
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()

    def write(self, **values: Any) -> None:
        """Append one row; missing columns stay empty, ``None`` is written as empty.

        Args:
            **values: column name to value (floats keep 8 significant digits).

        Raises:
            ValueError: a name that is not a column.
        """
        unknown = sorted(set(values) - set(self.columns))
        if unknown:
            raise ValueError(f"unknown metric column(s) {unknown}; the columns are {self.columns}")
        self._writer.writerow({c: _format(values.get(c)) for c in self.columns})
        self._file.flush()

    def close(self) -> None:
        """Close the file (further writes fail)."""
        self._file.close()

    def __enter__(self) -> "MetricsCSV":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _floats(rows: list[dict[str, str]], column: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of the rows where ``column`` has a finite value."""
    steps, values = [], []
    for row in rows:
        text = row.get(column, "")
        if not text or not row.get("step"):
            continue
        value = float(text)
        if math.isfinite(value):
            steps.append(float(row["step"]))
            values.append(value)
    return steps, values


def _smooth(values: list[float]) -> list[float]:
    """Bias-corrected exponential moving average over about a twentieth of the points."""
    window = max(1, min(100, len(values) // 20))
    beta = 1.0 - 1.0 / window
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1.0 - beta) * v
        out.append(avg / (1.0 - beta**i) if beta > 0 else v)
    return out


def plot_loss_curves(
    csv_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    title: str | None = None,
) -> Path:
    """Draw the loss curves of a metrics CSV as a PNG (headless, matplotlib's Agg backend).

    The training loss is drawn raw (faint) and smoothed (an exponential moving average), the
    validation loss as markers, against the optimiser step. The y axis is logarithmic, or
    symmetric-logarithmic (linear within a tenth of the median magnitude) when a loss is not
    positive: the confidence-weighted loss can be negative. Where the CSV has a validation error
    (``val_error``), it is drawn on a second, linear axis on the right, in percent of the
    scene's diameter.

    Args:
        csv_path: a file written by [`MetricsCSV`][spatialmem.training.logs.MetricsCSV] (columns
            ``step``, ``loss`` and optionally ``val_loss`` and ``val_error``).
        png_path: the PNG to write (parent folders are created, an old file is replaced).
        title: figure title (default: the CSV's folder name).

    Returns:
        The written path.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'spatialmem[eval]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("the loss plot needs matplotlib: pip install 'spatialmem[eval]'") from err
    csv_path, png_path = Path(csv_path), Path(png_path)
    rows = read_metrics(csv_path)
    steps, loss = _floats(rows, "loss")
    val_steps, val_loss = _floats(rows, "val_loss")
    err_steps, val_error = _floats(rows, "val_error")

    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=100)
    if steps:
        ax.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (raw)")
        ax.plot(steps, _smooth(loss), color="tab:blue", linewidth=1.6, label="train (smoothed)")
    if val_steps:
        ax.plot(val_steps, val_loss, "o", color="tab:orange", markersize=4, label="validation")
    every = loss + val_loss
    if every and min(every) > 0:
        ax.set_yscale("log")
    elif every:
        # linear within a tenth of the typical magnitude, logarithmic beyond
        typical = statistics.median(abs(v) for v in every)
        ax.set_yscale("symlog", linthresh=max(0.1 * typical, 1e-6))
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title if title is not None else csv_path.resolve().parent.name)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if err_steps:
        right = ax.twinx()
        right.plot(
            err_steps, [100 * e for e in val_error], "s--", color="tab:green", markersize=4,
            linewidth=0.8, label="validation error after Sim(3)",
        )  # fmt: skip
        right.set_ylabel("validation error (% of scene diameter)", color="tab:green")
        right.set_ylim(bottom=0)
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:  # below the axes: nothing to hide on either axis
        ax.legend(
            handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(handles),
            fontsize=8, frameon=False,
        )  # fmt: skip
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
