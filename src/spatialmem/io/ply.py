"""Point clouds as PLY files: a binary little-endian writer and a reader.

The writer produces what MeshLab, Open3D, CloudCompare and Blender read: one ``vertex`` element
with ``float x, y, z``, optional ``uchar red, green, blue``, an optional ``float confidence`` and
any extra per-point scalars. The reader reads those files back, and any binary (little- or
big-endian) or ASCII PLY whose vertices have scalar properties.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spatialmem._checks import check_finite, check_tensor
from spatialmem._typing import Float, Shaped
from spatialmem.io._common import colors_to_uint8, to_numpy

__all__ = ["PointCloud", "read_ply", "write_ply"]

# PLY scalar type names (both spellings) -> numpy type codes without byte order
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_RESERVED = {"x", "y", "z", "red", "green", "blue", "confidence"}


@dataclass(eq=False)
class PointCloud:
    """A point cloud read by [`read_ply`][spatialmem.io.read_ply]."""

    points: Float[Tensor, "N 3"]
    """``x, y, z`` as float32."""
    colors: Shaped[Tensor, "N 3"] | None = None
    """``red, green, blue`` as uint8 (float colours in the file are read as [0, 1] and scaled),
    ``None`` when the file has none."""
    confidence: Float[Tensor, " N"] | None = None
    """The ``confidence`` property as float32, ``None`` when the file has none."""
    properties: dict[str, Tensor] = field(default_factory=dict)
    """Every other scalar vertex property (e.g. normals ``nx, ny, nz``), ``[N]`` each, in the
    file's numeric type."""

    def __len__(self) -> int:
        return int(self.points.shape[0])


def _ply_type(dtype: torch.dtype, name: str) -> tuple[str, str]:
    """``(PLY type, numpy type)`` for a property tensor of dtype ``dtype``."""
    if dtype == torch.float64:
        return "double", "<f8"
    if dtype.is_floating_point:
        return "float", "<f4"
    if dtype in (torch.uint8, torch.bool):
        return "uchar", "u1"
    if dtype in (torch.int8, torch.int16, torch.int32):
        return "int", "<i4"
    raise TypeError(
        f"`properties[{name!r}]` must be float, uint8, bool, int8, int16 or int32, got {dtype}"
    )


def write_ply(
    path: str | os.PathLike[str],
    points: Float[Tensor, "N 3"],
    colors: Shaped[Tensor, "N 3"] | None = None,
    confidence: Float[Tensor, " N"] | None = None,
    *,
    conf_threshold: float | None = None,
    properties: Mapping[str, Shaped[Tensor, " N"]] | None = None,
) -> Path:
    """Write a point cloud as a binary little-endian PLY (readable by MeshLab, Open3D, Blender).

    The file holds one ``vertex`` element with the properties ``float x, y, z``, then
    ``uchar red, green, blue`` (if ``colors``), ``float confidence`` (if ``confidence``), then
    the ``properties`` in the order given. [`read_ply`][spatialmem.io.read_ply] reads it back.

    Args:
        path: output file (parent folders are created).
        points: ``[N, 3]`` xyz coordinates.
        colors: ``[N, 3]`` RGB, float in [0, 1] (values outside are clamped) or uint8; ``None``
            writes no colour.
        confidence: ``[N]`` per-point confidence stored as a ``confidence`` property.
        conf_threshold: keep only the points with ``confidence >= conf_threshold`` (needs
            ``confidence``); ``None`` keeps every point.
        properties: extra ``[N]`` per-point scalars by property name (float, written as
            ``float``, float64 as ``double``; uint8 or bool as ``uchar``; int8/16/32 as
            ``int``), e.g. normals as ``{"nx": ..., "ny": ..., "nz": ...}``.

    Returns:
        The path written.

    Raises:
        ValueError: a tensor of the wrong shape, ``conf_threshold`` without ``confidence``, or a
            property name that is reserved or not a plain identifier.
        TypeError: a tensor of the wrong dtype.

    Example:
        ```python
        import tempfile, torch
        from spatialmem.io import read_ply, write_ply

        path = write_ply(
            tempfile.mkdtemp() + "/cloud.ply", torch.randn(100, 3), torch.rand(100, 3),
            confidence=torch.rand(100) * 3, conf_threshold=1.0,
        )
        cloud = read_ply(path)          # the points with confidence >= 1
        ```
    """
    points = check_tensor("points", points, ndim=2, floating=True, dims={1: 3}, expected="N 3")
    check_finite("points", points)
    n = points.shape[0]
    fields: list[tuple[str, str, str]] = [("x", "float", "<f4"), ("y", "float", "<f4"),
                                          ("z", "float", "<f4")]  # fmt: skip
    columns: dict[str, np.ndarray] = {}
    xyz = to_numpy(points.float())
    for i, name in enumerate("xyz"):
        columns[name] = xyz[:, i]
    if colors is not None:
        rgb8 = colors_to_uint8(colors, n)
        for i, name in enumerate(("red", "green", "blue")):
            fields.append((name, "uchar", "u1"))
            columns[name] = rgb8[:, i]
    if confidence is not None:
        check_tensor("confidence", confidence, ndim=1, floating=True, dims={0: n}, expected="N")
        fields.append(("confidence", "float", "<f4"))
        columns["confidence"] = to_numpy(confidence.float())
    for name, value in (properties or {}).items():
        if not isinstance(name, str) or not name.isidentifier() or name in _RESERVED:
            raise ValueError(
                f"`properties` names must be identifiers other than {sorted(_RESERVED)}, "
                f"got {name!r}"
            )
        check_tensor(f"properties[{name!r}]", value, ndim=1, dims={0: n}, expected="N")
        ply_type, np_type = _ply_type(value.dtype, name)
        fields.append((name, ply_type, np_type))
        columns[name] = to_numpy(value)
    keep: np.ndarray | None = None
    if conf_threshold is not None:
        if confidence is None:
            raise ValueError("`conf_threshold` needs `confidence`")
        keep = columns["confidence"] >= conf_threshold
    count = n if keep is None else int(keep.sum())
    record = np.empty(count, dtype=np.dtype([(name, kind) for name, _, kind in fields]))
    for name, _, _ in fields:
        record[name] = columns[name] if keep is None else columns[name][keep]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    header += [f"property {ply_type} {name}" for name, ply_type, _ in fields]
    header.append("end_header")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(record.tobytes())
    return path


@dataclass
class _Element:
    name: str
    count: int
    properties: list[tuple[str, str]]  # (name, numpy type code) of scalar properties
    has_list: bool = False


def _parse_header(raw: bytes, path: Path) -> tuple[str, list[_Element], int]:
    """``(format, elements, offset of the body)`` of the PLY file content ``raw``."""
    if not raw.startswith(b"ply"):
        raise ValueError(f"{path} is not a PLY file (no 'ply' magic line)")
    match = re.search(rb"^end_header[ \t]*\r?\n", raw, re.M)
    if match is None:
        raise ValueError(f"{path}: the PLY header has no 'end_header' line")
    fmt = None
    elements: list[_Element] = []
    for line in raw[: match.start()].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) >= 3:
            if words[1] == "list":
                elements[-1].has_list = True
            elif len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]]))
            else:
                raise ValueError(f"{path}: unsupported PLY property line {line!r}")
        else:
            raise ValueError(f"{path}: unexpected PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    return fmt, elements, match.end()


def read_ply(path: str | os.PathLike[str]) -> PointCloud:
    """Read the vertices of a PLY file (binary little/big-endian or ASCII).

    Reads what [`write_ply`][spatialmem.io.write_ply] writes and the point clouds of other tools:
    ``x, y, z`` are required; ``red, green, blue`` become
    [`PointCloud.colors`][spatialmem.io.PointCloud.colors], ``confidence`` becomes
    [`PointCloud.confidence`][spatialmem.io.PointCloud.confidence], and every other scalar
    vertex property goes to [`PointCloud.properties`][spatialmem.io.PointCloud.properties].
    Elements after the vertices (faces) are ignored.

    Args:
        path: the ``.ply`` file.

    Returns:
        The [`PointCloud`][spatialmem.io.PointCloud].

    Raises:
        ValueError: not a PLY file, no ``vertex`` element with ``x, y, z``, a truncated file, or a
            layout this reader does not handle (list properties in or before the vertices).
    """
    path = Path(path)
    raw = path.read_bytes()
    fmt, elements, start = _parse_header(raw, path)
    body = raw[start:]
    names = [e.name for e in elements]
    if "vertex" not in names:
        raise ValueError(f"{path}: the PLY file has no 'vertex' element")
    vertex = elements[names.index("vertex")]
    before = elements[: names.index("vertex")]
    if vertex.has_list or any(e.has_list for e in before):
        raise ValueError(f"{path}: list properties in or before the PLY vertices are not supported")
    if fmt == "ascii":
        lines = body.decode("ascii", errors="replace").splitlines()
        start = sum(e.count for e in before)
        rows = [line.split() for line in lines[start : start + vertex.count]]
        width = len(vertex.properties)
        if len(rows) != vertex.count or any(len(r) != width for r in rows):
            raise ValueError(f"{path}: expected {vertex.count} vertex lines of {width} values")
        table = np.array(rows, dtype=np.float64).reshape(vertex.count, width)
        data = {name: table[:, i].astype(kind) for i, (name, kind) in enumerate(vertex.properties)}
    else:
        order = "<" if fmt == "binary_little_endian" else ">"

        def dtype(e: _Element) -> np.dtype:
            return np.dtype([(name, order + kind) for name, kind in e.properties])

        offset = sum(dtype(e).itemsize * e.count for e in before)
        vdtype = dtype(vertex)
        if len(body) < offset + vdtype.itemsize * vertex.count:
            raise ValueError(f"{path}: the PLY file is truncated")
        record = np.frombuffer(body, dtype=vdtype, count=vertex.count, offset=offset)
        data = {name: record[name].astype(kind) for name, kind in vertex.properties}
    missing = [c for c in "xyz" if c not in data]
    if missing:
        raise ValueError(f"{path}: the PLY vertices have no {', '.join(missing)} property")
    points = torch.from_numpy(np.stack([data.pop(c) for c in "xyz"], axis=1).astype(np.float32))
    colors = None
    if all(c in data for c in ("red", "green", "blue")):
        rgb = np.stack([data.pop(c) for c in ("red", "green", "blue")], axis=1)
        if rgb.dtype.kind == "f":
            rgb = (np.clip(rgb, 0, 1) * 255).round()
        colors = torch.from_numpy(np.clip(rgb, 0, 255).astype(np.uint8))
    confidence = None
    if "confidence" in data:
        confidence = torch.from_numpy(data.pop("confidence").astype(np.float32))
    properties = {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in data.items()}
    return PointCloud(points, colors, confidence, properties)
