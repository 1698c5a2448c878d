"""Turn what a user points the command line at (folders, globs, image files, a video) into frames.

Resize/crop policy (as DUSt3R and Spann3R prepare their inputs):

- ``size=224`` (the published Spann3R and the 224 DUSt3R): resize the short side to 224, then
  crop the centre ``224 x 224``;
- any other ``size`` (e.g. 512 for the 512 DUSt3R models): resize the long side to ``size``
  keeping the aspect ratio, then crop the centre to multiples of the patch size;
- ``size=None``: no resize, only the centre crop to multiples of the patch size.

All frames of a sequence must come out the same size; images of different sizes are refused with
a message naming two of them (pass a ``size`` to bring them all to one).
"""

import glob as globlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spatialmem._typing import Float
from spatialmem.data.synthetic import to_model_range

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "collect_inputs",
    "load_frames",
    "prepare_image",
    "read_image",
    "read_video",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
"""File endings read as images."""
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
"""File endings read as videos."""


def _natural_key(path: Path) -> list[object]:
    """``img2`` before ``img10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _images_in(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def collect_inputs(sources: Sequence[str | Path]) -> list[Path]:
    """Expand folders and glob patterns into an ordered list of image (or video) files.

    A folder contributes its image files in natural order (``2.png`` before ``10.png``); a
    pattern with ``*``, ``?`` or ``[`` its matches in natural order; a file itself.

    Raises:
        FileNotFoundError: a path does not exist or a pattern matches nothing.
        ValueError: a folder holds no image, a file is neither an image nor a video, or a video
            is mixed with other inputs.
    """
    out: list[Path] = []
    for source in sources:
        text = str(source)
        if any(c in text for c in "*?["):
            matches = [Path(m) for m in globlib.glob(text)]
            files = [m for m in matches if m.is_file()]
            if not files:
                raise FileNotFoundError(f"the pattern {text!r} matches no file")
            out.extend(sorted(files, key=_natural_key))
            continue
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_dir():
            images = _images_in(path)
            if not images:
                raise ValueError(
                    f"the folder {path} holds no image (looked for {sorted(IMAGE_SUFFIXES)})"
                )
            out.extend(images)
            continue
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise ValueError(
                f"{path} is neither an image ({sorted(IMAGE_SUFFIXES)}) nor a video "
                f"({sorted(VIDEO_SUFFIXES)})"
            )
        out.append(path)
    videos = [p for p in out if p.suffix.lower() in VIDEO_SUFFIXES]
    if videos and len(out) > 1:
        raise ValueError(f"give a video alone, not with other inputs (got {videos[0]} and more)")
    return out


def read_image(path: str | Path) -> Tensor:
    """Read an image file as ``uint8 [H, W, 3]`` (RGB).

    Raises:
        ValueError: the file is not a readable image (named in the message).
    """
    path = Path(path)
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow comes with the eval extra (matplotlib)
        return _read_image_torchvision(path)
    try:
        with Image.open(path) as img:
            arr = np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(arr)


def _read_image_torchvision(path: Path) -> Tensor:  # pragma: no cover - without Pillow
    from torchvision.io import ImageReadMode, decode_image

    try:
        img = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return img.permute(1, 2, 0).contiguous()


def prepare_image(
    image_u8: Tensor, size: int | tuple[int, int] | None, patch_size: int
) -> Float[Tensor, "3 H W"]:
    """Resize and crop one ``uint8 [H, W, 3]`` image by the module's policy; ``[3, H, W]`` in
    [-1, 1]. A ``(H, W)`` tuple resizes to exactly that size before the crop to patch multiples.

    Raises:
        ValueError: the result would be empty (an image smaller than one patch).
    """
    img = image_u8.permute(2, 0, 1)[None].float()
    h, w = img.shape[-2:]
    if isinstance(size, tuple):  # an explicit (H, W)
        nh, nw = size
    elif size is not None:
        scale = size / min(h, w) if size == 224 else size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if size is not None:
        img = F.interpolate(img, size=(nh, nw), mode="bilinear", antialias=True)
        img = img.round().clamp(0, 255)
    h, w = img.shape[-2:]
    th, tw = (224, 224) if size == 224 else (h - h % patch_size, w - w % patch_size)
    if th <= 0 or tw <= 0:
        raise ValueError(
            f"an image of {h}x{w} pixels is smaller than one {patch_size}x{patch_size} patch"
        )
    top, left = (h - th) // 2, (w - tw) // 2
    img = img[0, :, top : top + th, left : left + tw]
    return to_model_range(img.permute(1, 2, 0).to(torch.uint8))


def read_video(path: str | Path, *, stride: int = 1, max_frames: int | None = None) -> Tensor:
    """Decode a video into ``uint8 [T, H, W, 3]`` frames (every ``stride``-th).

    Uses torchvision's video reader (needs PyAV: ``pip install av``).

    Raises:
        ImportError: no video backend is installed (the message says what to install).
        ValueError: the file cannot be decoded or holds no frame.
    """
    try:
        import av  # noqa: F401
        from torchvision.io import read_video as tv_read_video
    except ImportError as err:
        raise ImportError(
            f"reading the video {path} needs PyAV and torchvision: pip install av torchvision "
            "(or extract the frames to a folder of images)"
        ) from err
    try:
        frames, _, _ = tv_read_video(str(path), pts_unit="sec", output_format="THWC")
    except (RuntimeError, ValueError, OSError) as err:
        raise ValueError(f"cannot decode the video {path}: {err}") from err
    frames = frames[::stride][:max_frames]
    if frames.shape[0] == 0:
        raise ValueError(f"the video {path} holds no frame")
    return frames


def load_frames(
    paths: Sequence[Path],
    *,
    size: int | tuple[int, int] | None,
    patch_size: int,
    stride: int = 1,
    max_frames: int | None = None,
) -> Float[Tensor, "T 3 H W"]:
    """Read, resize and crop an ordered list of images (or one video) into model frames.

    Args:
        paths: from [collect_inputs][spatialmem.data.image_inputs.collect_inputs].
        size: the resize policy's target (see the module docs); ``None`` keeps the size.
        patch_size: the model's patch size.
        stride: keep every ``stride``-th frame.
        max_frames: keep at most this many frames (after the stride).

    Raises:
        ValueError: unreadable files, or frames of different sizes after the policy.
    """
    if len(paths) == 1 and paths[0].suffix.lower() in VIDEO_SUFFIXES:
        raw = list(read_video(paths[0], stride=stride, max_frames=max_frames))
        names = [f"{paths[0]}[{i}]" for i in range(len(raw))]
    else:
        chosen = list(paths)[::stride][:max_frames]
        raw = [read_image(p) for p in chosen]
        names = [str(p) for p in chosen]
    frames = [prepare_image(r, size, patch_size) for r in raw]
    shapes = {tuple(f.shape): n for f, n in zip(frames, names, strict=True)}
    if len(shapes) > 1:
        (s1, n1), (s2, n2) = list(shapes.items())[:2]
        raise ValueError(
            f"frames differ in size after resizing/cropping: {n1} is {s1[1]}x{s1[2]}, {n2} is "
            f"{s2[1]}x{s2[2]}; pass --size (e.g. 224 or 512) to bring them all to one size"
        )
    return torch.stack(frames)
