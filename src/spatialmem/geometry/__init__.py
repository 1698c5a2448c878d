"""Pure, batched tensor geometry: transforms, camera maths, alignment, normals, cameras.

No model imports: every function takes tensors and returns tensors, batch-first.
"""

from spatialmem.geometry.alignment import (
    apply_scale_shift,
    masked_median,
    median_scale,
    median_scale_shift,
    trimmed_umeyama,
    umeyama,
)
from spatialmem.geometry.camera import (
    depth_to_points,
    intrinsics_from_focal,
    pixel_grid,
    points_in_camera,
    points_to_depth,
    project,
)
from spatialmem.geometry.cameras import Cameras, estimate_cameras, estimate_focal, solve_pnp
from spatialmem.geometry.normals import normals_from_pointmap
from spatialmem.geometry.pose_graph import PointEdges, edge_residuals, optimize_similarities
from spatialmem.geometry.transforms import (
    compose,
    invert_rigid,
    invert_sim3,
    rigid,
    rotation_angle_deg,
    sim3,
    sim3_scale,
    skew,
    transform_points,
)

__all__ = [
    "Cameras",
    "PointEdges",
    "apply_scale_shift",
    "compose",
    "depth_to_points",
    "edge_residuals",
    "estimate_cameras",
    "estimate_focal",
    "intrinsics_from_focal",
    "invert_rigid",
    "invert_sim3",
    "masked_median",
    "median_scale",
    "median_scale_shift",
    "normals_from_pointmap",
    "optimize_similarities",
    "pixel_grid",
    "points_in_camera",
    "points_to_depth",
    "project",
    "rigid",
    "rotation_angle_deg",
    "sim3",
    "sim3_scale",
    "skew",
    "solve_pnp",
    "transform_points",
    "trimmed_umeyama",
    "umeyama",
]
