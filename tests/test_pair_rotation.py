"""benchmarks/pair_rotation.py: the missed turn is zero for a prediction that follows the
cameras, the true turn for one drawn in each frame's own camera, and the script writes its rows."""

import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

from conftest import load_benchmark
from spatialmem.data.rooms import room_sequence
from spatialmem.geometry import invert_rigid, transform_points
from spatialmem.inference import FrameResult


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_benchmark("pair_rotation")


def _oracle(clip: Any, own_camera: bool) -> type:
    """A stand-in for OnlineReconstructor whose 2-frame "predictions" are the ground truth,
    in the first frame's camera (``own_camera=False``) or each in its own camera."""

    class Oracle:
        def __init__(self, model: object, optimize: bool) -> None:
            pass

        def run(self, images: torch.Tensor) -> list[FrameResult]:
            frames = [
                next(i for i in range(clip.num_frames) if torch.equal(clip.images[i], image))
                for image in images
            ]
            out = []
            for k, frame in enumerate(frames):
                camera = frame if own_camera else frames[0]
                to_camera = invert_rigid(clip.camera_pose[camera])[None]
                pts = transform_points(to_camera, clip.pts3d[frame].reshape(1, -1, 3))
                conf = torch.ones(clip.pts3d.shape[1:3])
                out.append(FrameResult(k, k, pts.reshape(clip.pts3d.shape[1:]), conf, images[k]))
            return out

    return Oracle


def test_the_missed_turn_is_zero_for_registered_frames_and_the_turn_for_unregistered(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = room_sequence(4, 12, split="val")  # an orbit: the camera turns
    monkeypatch.setattr(script, "OnlineReconstructor", _oracle(clip, own_camera=False))
    turn, missed = script.missed_turn(SimpleNamespace(), clip, 2, 8)
    assert turn > 20 and missed < 0.5
    monkeypatch.setattr(script, "OnlineReconstructor", _oracle(clip, own_camera=True))
    turn_again, missed = script.missed_turn(SimpleNamespace(), clip, 2, 8)
    assert turn_again == turn and missed == pytest.approx(turn, abs=0.5)


def test_the_script_prints_and_writes_a_row_per_room_and_gap(
    script: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(script, "RESULTS", tmp_path / "pair_rotation.json")
    assert script.main(["--rooms", "0:1", "--gaps", "2,4", "--pairs", "2"]) == 0
    assert "missed turn (deg)" in capsys.readouterr().out
    rows = json.loads((tmp_path / "pair_rotation.json").read_text())["rows"]
    assert [(r["room"], r["gap"]) for r in rows] == [(0, 2), (0, 4)]
    assert all(0 <= r["missed_turn"] <= 180 and r["true_turn"] > 0 for r in rows)
    assert all(r["true_move"] > 0 and r["predicted_move"] >= 0 for r in rows)


def _fake_pair_model(clip: Any, registers: bool) -> SimpleNamespace:
    """A pair model whose view 2 is the ground truth in view 1's camera (``registers``) or in
    its own camera whatever view 1 is."""

    def encode(images: torch.Tensor) -> int:
        return next(i for i in range(clip.num_frames) if torch.equal(clip.images[i], images[0]))

    def predict_pair(view1: int, view2: int) -> SimpleNamespace:
        camera = view1 if registers else view2
        to_camera = invert_rigid(clip.camera_pose[camera])[None]
        pts = transform_points(to_camera, clip.pts3d[view2][None])
        return SimpleNamespace(view2=SimpleNamespace(pts3d=pts))

    return SimpleNamespace(dust3r=SimpleNamespace(encode=encode, predict_pair=predict_pair))


def test_view_2_moves_with_view_1_as_far_as_the_truth_only_when_the_model_registers(
    script: ModuleType,
) -> None:
    clip = room_sequence(4, 12, split="val")  # an orbit
    registers, ignores = (_fake_pair_model(clip, registers=r) for r in (True, False))
    truth, predicted = script.view1_effect(registers, clip, 2, 8)
    assert truth > 0.2 and predicted == pytest.approx(truth, rel=1e-5)
    truth_again, predicted = script.view1_effect(ignores, clip, 2, 8)
    assert truth_again == truth and predicted == 0.0
    assert script.view1_effect(registers, clip, 8, 8) == (0.0, 0.0)
