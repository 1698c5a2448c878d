"""benchmarks/registration_bound.py: fitting each frame to its ground truth undoes any per-frame
similarity, and the script scores a room before and after that fit."""

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from conftest import load_benchmark, random_similarity
from spatialmem.data.rooms import room_sequence
from spatialmem.geometry import transform_points


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("registration_bound")


def test_fitting_each_frame_undoes_a_different_similarity_per_frame(script: ModuleType) -> None:
    clip = room_sequence(3, 4, 16, 24, split="val")
    gen = torch.Generator().manual_seed(0)
    moved = torch.stack([
        transform_points(random_similarity(gen)[None], frame.reshape(1, -1, 3))[0]
        for frame in clip.pts3d
    ]).reshape(clip.pts3d.shape)  # fmt: skip
    fitted = script.fit_each_frame(moved, clip.pts3d, clip.valid)
    valid = clip.valid
    assert not torch.allclose(moved[valid], clip.pts3d[valid], atol=1e-2)
    torch.testing.assert_close(fitted[valid], clip.pts3d[valid], atol=2e-4, rtol=1e-4)


def test_pair_shapes_are_the_first_step_of_a_stream_at_each_frame(script: ModuleType) -> None:
    from spatialmem.models import create_model

    torch.manual_seed(0)
    model = create_model("spann3r_tiny").eval()
    images = room_sequence(1, 4, 32, 32, split="val").images
    shapes = script.pair_shapes(model, images)
    assert shapes.shape == (4, 32, 32, 3)
    with torch.no_grad():
        for t, partner in [(0, 1), (2, 3), (3, 2)]:
            first_step = model(images[None, [t, partner]]).pts3d[0, 0]
            torch.testing.assert_close(shapes[t], first_step, atol=1e-5, rtol=1e-5)


def test_the_script_scores_each_room_before_and_after_the_fit(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(script, "RESULTS", tmp_path / "registration_bound.json")
    png = tmp_path / "frames.png"
    assert script.main(["--rooms", "0:1", "--frames", "6", "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "Acc, frames fitted" in capsys.readouterr().out
    payload = json.loads((tmp_path / "registration_bound.json").read_text())
    (row,) = payload["rows"]
    assert row["room"] == 0 and payload["frames"] == 6
    # Every frame fitted onto its own ground truth: the points lie closer to the true surfaces.
    assert 0 < row["acc_fitted"] < row["acc"] and 0 < row["comp_fitted"] < 1
    assert 0 < row["acc_pairs_fitted"] < 1 and 0 < row["comp_pairs_fitted"] < 1
    assert len(row["frame_error"]) == len(row["frame_error_pairs"]) == 6


def test_frame_errors_are_each_frames_mean_distance_over_the_diameter(script: ModuleType) -> None:
    truth = torch.zeros(2, 2, 3, 3)
    valid = torch.ones(2, 2, 3, dtype=torch.bool)
    valid[1, 0] = False  # three of frame 1's six pixels
    fitted = truth.clone()
    fitted[0, ..., 0] = 0.5  # every pixel of frame 0 half a unit off
    fitted[1, 0] = 7.0  # only invalid pixels of frame 1 off
    truth[1, 0] = float("nan")  # invalid pixels may hold NaN
    assert script.frame_errors(fitted, truth, valid, diameter=2.0) == [0.25, 0.0]


@pytest.mark.parametrize(
    ("rooms", "message"),
    [("5", "expected FIRST:LAST"), ("a:b", "expected FIRST:LAST"), ("3:1", "0 <= FIRST < LAST")],
)
def test_a_bad_room_range_is_one_line_naming_it(
    script: ModuleType, capsys: pytest.CaptureFixture[str], rooms: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--rooms", rooms])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --rooms" in err and message in err and repr(rooms) in err
