"""Evaluation of reconstructions: accuracy, completion, normal consistency, Chamfer distance.

The protocol of the Spann3R paper (Sec. 4.1) and its official evaluation script: nearest
neighbours between the predicted and ground-truth clouds in both directions, normals estimated
on each cloud, normal consistency averaged over both directions, after a median scale-shift
alignment and ICP. See [`evaluate_pointmaps`][spatialmem.metrics.evaluate_pointmaps] (pointmaps
with pixel correspondences) and
[`evaluate_pointclouds`][spatialmem.metrics.evaluate_pointclouds] (two clouds).

Nearest-neighbour search uses ``scipy.spatial.cKDTree`` when SciPy is installed (the ``eval``
extra: ``pip install "spatialmem[eval]"``) and a chunked torch brute force otherwise; the two
give the same numbers.

```python
import torch
from spatialmem.metrics import evaluate_pointclouds, format_table

gt = torch.rand(1000, 3)
metrics = evaluate_pointclouds(gt + 0.01 * torch.randn(1000, 3), gt)
table = format_table({"noisy copy": metrics})
```
"""

from spatialmem.metrics.extent import bounding_box_diagonal
from spatialmem.metrics.icp import ICPResult, icp
from spatialmem.metrics.neighbors import Backend, NeighborIndex, has_scipy, knn, nearest_neighbors
from spatialmem.metrics.normals import estimate_normals
from spatialmem.metrics.reconstruction import (
    TABLE_COLUMNS,
    Align,
    NormalSource,
    ReconstructionMetrics,
    accuracy,
    chamfer_distance,
    completion,
    completion_ratio,
    evaluate_pointclouds,
    evaluate_pointmaps,
    format_table,
    mean_metrics,
    normal_consistency,
)
from spatialmem.metrics.registration import aligned_point_error
from spatialmem.metrics.sampling import random_subset_indices, voxel_downsample_indices

__all__ = [
    "TABLE_COLUMNS",
    "Align",
    "Backend",
    "ICPResult",
    "NeighborIndex",
    "NormalSource",
    "ReconstructionMetrics",
    "accuracy",
    "aligned_point_error",
    "bounding_box_diagonal",
    "chamfer_distance",
    "completion",
    "completion_ratio",
    "estimate_normals",
    "evaluate_pointclouds",
    "evaluate_pointmaps",
    "format_table",
    "has_scipy",
    "icp",
    "knn",
    "mean_metrics",
    "nearest_neighbors",
    "normal_consistency",
    "random_subset_indices",
    "voxel_downsample_indices",
]
