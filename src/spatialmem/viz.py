"""Headless previews of point clouds (matplotlib, ``eval`` extra): a PNG a person can look at.

The reconstruction is drawn from a few viewpoints; with a ground truth, a second row shows it from
the same viewpoints with the same axis limits, so the two can be compared panel by panel.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float

__all__ = ["DEFAULT_VIEWS", "render_preview"]

DEFAULT_VIEWS: tuple[tuple[float, float], ...] = ((15.0, -90.0), (35.0, -55.0), (35.0, -125.0))
"""``(elevation, azimuth)`` in degrees of the default panels: from behind the reference camera,
then from above on either side. Points are given in OpenCV camera axes (x right, y down,
z forward) and drawn with z forward and -y up."""


def _subsample(points: np.ndarray, colors: np.ndarray | None, n: int) -> tuple[np.ndarray, ...]:
    if points.shape[0] <= n:
        return points, colors
    idx = np.linspace(0, points.shape[0] - 1, n).astype(np.int64)  # deterministic
    return points[idx], None if colors is None else colors[idx]


def _as_numpy(name: str, x: Tensor | np.ndarray | None, cols: int) -> np.ndarray | None:
    if x is None:
        return None
    t = torch.as_tensor(x)
    check_tensor(name, t, ndim=2, dims={1: cols}, expected=f"N {cols}")
    return t.detach().float().cpu().numpy()


def render_preview(
    points: Float[Tensor, "N 3"],
    out_path: str | Path,
    *,
    colors: Float[Tensor, "N 3"] | None = None,
    gt_points: Float[Tensor, "M 3"] | None = None,
    gt_colors: Float[Tensor, "M 3"] | None = None,
    views: Sequence[tuple[float, float]] = DEFAULT_VIEWS,
    max_points: int = 30000,
    title: str | None = None,
    point_size: float = 0.6,
) -> Path:
    """Render a point cloud (and optionally its ground truth) to a PNG.

    Args:
        points: the reconstruction (e.g. in frame 0's camera axes).
        out_path: the PNG to write (parent folders are created).
        colors: RGB in [0, 1] per point; default a depth colour map.
        gt_points: ground truth in the same coordinates (align it first); adds a second row.
        gt_colors: RGB in [0, 1] per ground-truth point.
        views: ``(elevation, azimuth)`` in degrees of each panel.
        max_points: points drawn per cloud (an evenly spaced, deterministic subsample).
        title: figure title.
        point_size: marker size.

    Returns:
        The written path.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'spatialmem[eval]'``).
        ValueError: empty clouds or wrong shapes.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("the preview needs matplotlib: pip install 'spatialmem[eval]'") from err
    pts = _as_numpy("points", points, 3)
    assert pts is not None
    cols = _as_numpy("colors", colors, 3)
    gt = _as_numpy("gt_points", gt_points, 3)
    gt_cols = _as_numpy("gt_colors", gt_colors, 3)
    clouds = [("reconstruction", pts, cols)]
    if gt is not None:
        clouds.append(("ground truth", gt, gt_cols))
    for name, cloud, _ in clouds:
        finite = np.isfinite(cloud).all(axis=1)
        if not finite.any():
            raise ValueError(f"the {name} has no finite point to draw")
    # OpenCV camera axes -> matplotlib's (x right, y forward, z up).
    clouds = [(n, c[:, [0, 2, 1]] * np.array([1.0, 1.0, -1.0]), cc) for n, c, cc in clouds]
    every = np.concatenate([c[np.isfinite(c).all(axis=1)] for _, c, _ in clouds])
    lo, hi = np.percentile(every, 1, axis=0), np.percentile(every, 99, axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6)

    fig = plt.figure(figsize=(4 * len(views), 4 * len(clouds)), dpi=100)
    for row, (name, cloud, ccols) in enumerate(clouds):
        keep = np.isfinite(cloud).all(axis=1)
        cloud_k, ccols_k = _subsample(
            cloud[keep], None if ccols is None else ccols[keep], max_points
        )
        if ccols_k is None:
            depth = cloud_k[:, 1]
            ccols_k = plt.get_cmap("viridis")((depth - depth.min()) / (np.ptp(depth) + 1e-9))
        for col, (elev, azim) in enumerate(views):
            ax = fig.add_subplot(
                len(clouds), len(views), row * len(views) + col + 1, projection="3d"
            )
            ax.scatter(cloud_k[:, 0], cloud_k[:, 1], cloud_k[:, 2], c=np.clip(ccols_k, 0, 1),
                       s=point_size, linewidths=0, depthshade=False)  # fmt: skip
            for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
                setter(c - half, c + half)
            ax.view_init(elev=elev, azim=azim)
            ax.set_axis_off()
            ax.set_title(f"{name} ({elev:.0f}, {azim:.0f})", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
