"""Turning folders, globs and image files into model frames, and the resize/crop policy."""

from pathlib import Path

import numpy as np
import pytest
import torch

from spatialmem.data.image_inputs import (
    collect_inputs,
    load_frames,
    prepare_image,
    read_image,
    read_video,
)

Image = pytest.importorskip("PIL.Image")


def _write(folder: Path, names: list[str], h: int = 40, w: int = 56) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        arr = np.full((h, w, 3), 10 * i, dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)
        paths.append(folder / name)
    return paths


def test_folders_and_globs_in_natural_order(tmp_path: Path) -> None:
    _write(tmp_path / "seq", ["img10.png", "img2.png", "img1.jpg"])
    (tmp_path / "seq" / "notes.txt").write_text("not an image")
    got = collect_inputs([tmp_path / "seq"])
    assert [p.name for p in got] == ["img1.jpg", "img2.png", "img10.png"]
    got = collect_inputs([str(tmp_path / "seq" / "img*.png")])
    assert [p.name for p in got] == ["img2.png", "img10.png"]


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.png does not exist"):
        collect_inputs([tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="matches no file"):
        collect_inputs([str(tmp_path / "*.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image"):
        collect_inputs([tmp_path / "empty"])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="neither an image"):
        collect_inputs([tmp_path / "a.txt"])
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*fake\.png"):
        read_image(tmp_path / "fake.png")
    (tmp_path / "v.mp4").write_bytes(b"\0")
    with pytest.raises(ValueError, match="video alone"):
        collect_inputs([tmp_path / "v.mp4", tmp_path / "fake.png"])
    with pytest.raises((ImportError, ValueError), match=r"v\.mp4"):
        read_video(tmp_path / "v.mp4")


@pytest.mark.parametrize(
    ("size", "hw", "want"),
    [
        (None, (40, 56), (32, 48)),  # crop to multiples of the patch only
        (224, (480, 640), (224, 224)),  # short side -> 224, centre crop
        (512, (480, 640), (384, 512)),  # long side -> 512, crop to patch multiples
        ((64, 64), (40, 56), (64, 64)),  # explicit size
    ],
)
def test_resize_policy(size, hw: tuple[int, int], want: tuple[int, int]) -> None:
    img = torch.randint(0, 256, (*hw, 3), dtype=torch.uint8)
    out = prepare_image(img, size, 16)
    assert tuple(out.shape) == (3, *want)
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0


def test_centre_crop_keeps_the_middle() -> None:
    img = torch.zeros(40, 56, 3, dtype=torch.uint8)
    img[20, 28] = 255  # the centre pixel
    out = prepare_image(img, None, 16)  # 32x48 from 40x56: 4 rows, 4 columns off each side
    assert float(out[0, 16, 24]) == 1.0


def test_mixed_sizes_are_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path / "a", ["0.png"]) + _write(tmp_path / "b", ["1.png"], 72, 56)
    with pytest.raises(ValueError, match="--size"):
        load_frames(paths, size=None, patch_size=16)
    frames = load_frames(paths, size=(32, 48), patch_size=16)
    assert frames.shape == (2, 3, 32, 48)
    assert load_frames(paths * 2, size=(32, 48), patch_size=16, stride=3).shape[0] == 2
