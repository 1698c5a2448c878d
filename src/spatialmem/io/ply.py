"""Export of coloured point clouds as binary PLY files."""

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float

__all__ = ["write_ply"]


def write_ply(
    path: str | os.PathLike[str],
    points: Float[Tensor, "N 3"],
    colors: Float[Tensor, "N 3"] | None = None,
    confidence: Float[Tensor, " N"] | None = None,
) -> Path:
    """Write a point cloud as a binary little-endian PLY (readable by MeshLab, Open3D, Blender).

    Args:
        path: output file.
        points: xyz coordinates.
        colors: RGB in [0, 1] (values outside are clamped); ``None`` writes no colour.
        confidence: per-point confidence stored as a ``confidence`` property.

    Returns:
        The path written.
    """
    points = check_tensor("points", points, ndim=2, floating=True, dims={1: 3}, expected="N 3")
    n = points.shape[0]
    fields: list[tuple[str, str]] = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    columns = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
    if colors is not None:
        check_tensor("colors", colors, ndim=2, floating=True, dims={0: n, 1: 3}, expected="N 3")
        rgb8 = (colors.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        for i, name in enumerate(("red", "green", "blue")):
            fields.append((name, "u1"))
            columns[name] = rgb8[:, i]
    if confidence is not None:
        check_tensor("confidence", confidence, ndim=1, floating=True, dims={0: n}, expected="N")
        fields.append(("confidence", "<f4"))
        columns["confidence"] = confidence
    record = np.empty(n, dtype=np.dtype(fields))
    for name, _ in fields:
        record[name] = columns[name].detach().cpu().numpy()
    kinds = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {kinds[kind]} {name}" for name, kind in fields]
    header.append("end_header")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(record.tobytes())
    return path
