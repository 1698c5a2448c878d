"""Argument handling shared by the exporters: cameras, images and colours to numpy."""

import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from spatialmem._checks import check_finite, check_tensor

__all__: list[str] = []


def to_numpy(x: Tensor) -> np.ndarray:
    """A CPU numpy copy of ``x`` (detached)."""
    return x.detach().cpu().numpy()


def check_image_size(image_size: object, name: str = "image_size") -> tuple[int, int]:
    """``(H, W)`` as two positive Python ints."""
    if isinstance(image_size, Tensor):
        image_size = image_size.tolist()
    if (
        not isinstance(image_size, Sequence)
        or len(image_size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in image_size)
        or min(image_size) <= 0
    ):
        raise ValueError(f"`{name}` must be (H, W), two positive ints, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def resolve_cameras(
    k: Tensor | None,
    cam_to_world: Tensor | None,
    image_size: object,
    cameras: object,
    camera_index: int,
    num_frames: int | None = None,
) -> tuple[Tensor, Tensor, tuple[int, int] | None]:
    """The cameras of one sequence as ``K [T, 3, 3]``, ``cam_to_world [T, 4, 4]`` (float64, CPU)
    and ``(H, W)`` (``None`` if not given), from plain tensors or a cameras object.

    ``K`` may be one ``[3, 3]`` matrix shared by every frame. A cameras object is anything with
    ``K``, ``cam_to_world`` and ``image_size`` attributes (such as
    ``spatialmem.geometry.cameras.Cameras``); a batched one (``K [B, T, 3, 3]``) gives its batch
    element ``camera_index``.
    """
    if cameras is not None:
        if k is not None or cam_to_world is not None:
            raise ValueError("give either `cameras` or `K` and `cam_to_world`, not both")
        missing = [a for a in ("K", "cam_to_world", "image_size") if not hasattr(cameras, a)]
        if missing:
            raise TypeError(
                "`cameras` must have `K`, `cam_to_world` and `image_size` attributes, got an "
                f"object of type {type(cameras).__name__} without {', '.join(missing)}"
            )
        k = cameras.K  # type: ignore[attr-defined]
        cam_to_world = cameras.cam_to_world  # type: ignore[attr-defined]
        if image_size is None:
            image_size = cameras.image_size  # type: ignore[attr-defined]
        if isinstance(k, Tensor) and k.ndim == 4:
            if not -k.shape[0] <= camera_index < k.shape[0]:
                raise ValueError(
                    f"`camera_index` {camera_index} is out of range for a batch of {k.shape[0]}"
                )
            k = k[camera_index]
            if isinstance(cam_to_world, Tensor) and cam_to_world.ndim == 4:
                cam_to_world = cam_to_world[camera_index]
    if k is None or cam_to_world is None:
        raise ValueError("`K` and `cam_to_world` are required (or a `cameras` object)")
    check_tensor("cam_to_world", cam_to_world, ndim=3, floating=True, dims={1: 4, 2: 4},
                 expected="T 4 4")  # fmt: skip
    t = cam_to_world.shape[0]
    if num_frames is not None and t != num_frames:
        raise ValueError(
            f"`cam_to_world` must have {num_frames} frames (expected T 4 4 with T = "
            f"{num_frames}), got shape {tuple(cam_to_world.shape)}"
        )
    check_tensor("K", k, floating=True, dims={-1: 3, -2: 3}, expected="T 3 3 or 3 3")
    if k.ndim == 2:
        k = k.expand(t, 3, 3)
    check_tensor("K", k, ndim=3, dims={0: t}, expected=f"T 3 3 with T = {t}, or 3 3")
    check_finite("K", k)
    check_finite("cam_to_world", cam_to_world)
    size = None if image_size is None else check_image_size(image_size)
    return k.detach().cpu().double(), cam_to_world.detach().cpu().double(), size


def images_to_uint8(images: object, name: str = "images") -> np.ndarray:
    """``[T, 3, H, W]`` images (float in [-1, 1], or uint8) as ``[T, H, W, 3]`` uint8 RGB."""
    x = check_tensor(name, images, ndim=4, dims={1: 3}, expected="T 3 H W")
    if x.dtype == torch.uint8:
        u8 = x
    elif x.is_floating_point():
        check_finite(name, x)
        u8 = ((x.detach().float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
    else:
        raise TypeError(
            f"`{name}` must be float in [-1, 1] or uint8 (expected T 3 H W), got dtype {x.dtype}"
        )
    return np.ascontiguousarray(to_numpy(u8.permute(0, 2, 3, 1)))


def colors_to_uint8(colors: object, n: int, name: str = "colors") -> np.ndarray:
    """``[N, 3]`` colours (float in [0, 1], clamped, or uint8) as uint8."""
    x = check_tensor(name, colors, ndim=2, dims={0: n, 1: 3}, expected="N 3")
    if x.dtype == torch.uint8:
        return to_numpy(x)
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}` must be float in [0, 1] or uint8 (expected N 3), got dtype {x.dtype}"
        )
    return to_numpy((x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8))


def png_bytes(rgb: np.ndarray) -> bytes:
    """A minimal PNG encoder: ``[H, W, 3]`` uint8 RGB, 8-bit, no filtering, zlib-compressed."""
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # filter byte 0 (None) before every row
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", header),
        chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)),
        chunk(b"IEND", b""),
    ])  # fmt: skip


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """Write ``[H, W, 3]`` uint8 RGB as PNG: torchvision's encoder when installed (its
    deprecation notice, about torchvision's image codecs, is not the caller's to act on), else
    ``png_bytes``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chw = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).contiguous()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import write_png as tv_write_png

            tv_write_png(chw, str(path))
    except (ImportError, AttributeError, RuntimeError):  # no torchvision, or no codec in it
        path.write_bytes(png_bytes(np.ascontiguousarray(rgb)))
    return path
