"""The command line and the exports."""

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from spatialmem.cli import main
from spatialmem.data import synthetic_sequence, to_model_range
from spatialmem.io import write_ply


def _read_ply(path: Path) -> tuple[list[str], np.ndarray]:
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode().splitlines()
    kinds = {"float": "<f4", "uchar": "u1"}
    fields = [
        (line.split()[2], kinds[line.split()[1]]) for line in header if line.startswith("property")
    ]
    return header, np.frombuffer(raw[end:], dtype=np.dtype(fields))


def test_demo_default_room_is_the_first_that_does_not_orbit() -> None:
    """The rule behind the demo's default room (not a room picked by its score)."""
    from spatialmem.cli import _DEMO_SCENE
    from spatialmem.data.rooms import RoomScene, scene_seed

    paths = [RoomScene.random(scene_seed("test", i)).trajectory for i in range(_DEMO_SCENE + 1)]
    assert paths[-1] != "orbit" and set(paths[:-1]) == {"orbit"}


def test_demo_reconstructs_a_test_room_with_the_shipped_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "spann3r_small_synthetic" and summary["weights"] == "shipped"
    assert summary["scene"] == 2 and summary["frames"] == 4 and summary["frames_per_second"] > 0
    metrics = summary["metrics"]
    assert {"acc", "acc_med", "comp", "comp_med", "nc", "nc_med"} <= set(metrics)
    assert all(np.isfinite(metrics[k]) for k in ("acc", "comp", "nc"))
    header, data = _read_ply(out / "scene.ply")
    assert "element vertex 24576" in header  # 4 frames of 64x96
    assert "property uchar red" in header and "property float confidence" in header
    assert np.isfinite(data["x"]).all() and (data["confidence"] >= 1).all()
    assert (out / "ground_truth.ply").is_file()
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["files"]) == {"ply", "ground_truth", "preview"}
    assert summary["streaming"] == "segments of 6 + 3, loops closed"  # the demo's default


def test_demo_streams_in_segments_or_with_one_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    points = {}
    for seg in ("2:1", "off"):
        args = ["demo", "--out", str(tmp_path / seg.replace(":", "_")), "--frames", "6",
                "--segments", seg, "--no-preview", "--json"]  # fmt: skip
        assert main(args) == 0
        summary = json.loads(capsys.readouterr().out)
        want = "one memory" if seg == "off" else "segments of 2 + 1, loops closed"
        assert summary["streaming"] == want
        _, points[seg] = _read_ply(tmp_path / seg.replace(":", "_") / "scene.ply")
    # Segments of 3 frames: the first 3 frames are the same stream, later ones differ.
    first = 3 * 64 * 96
    assert np.array_equal(points["2:1"]["x"][: 2 * 64 * 96], points["off"]["x"][: 2 * 64 * 96])
    assert not np.allclose(points["2:1"]["x"][first:], points["off"]["x"][first:])
    args = ["demo", "--out", str(tmp_path / "chained"), "--frames", "6", "--segments", "2:1",
            "--no-loop-closure", "--no-preview", "--json"]  # fmt: skip
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["streaming"] == "segments of 2 + 1"


def test_demo_prints_the_metric_table_and_the_speed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["demo", "--out", str(tmp_path), "--frames", "3", "--scene", "2", "--no-preview"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "frames/s" in stdout and "Sim(3)" in stdout
    assert "| test room 2 |" in stdout and "acc_med" in stdout and "nc_med" in stdout
    assert not (tmp_path / "preview.png").exists() and (tmp_path / "scene.ply").is_file()


def test_demo_with_a_pair_model_warns_that_its_weights_are_random(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    args = ["demo", "--model", "dust3r_tiny_dpt", "--height", "32", "--width", "48", "--json"]
    assert main([*args, "--no-preview", "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weights"] == "random" and summary["frames"] == 2
    assert "random weights" in caplog.text and "noise" in caplog.text
    header, data = _read_ply(tmp_path / "scene.ply")
    assert "element vertex 3072" in header
    assert np.isfinite(data["x"]).all() and (data["confidence"] >= 1).all()


def _write_png(u8_chw: torch.Tensor, path: Path | str) -> None:
    from PIL import Image

    Image.fromarray(u8_chw.permute(1, 2, 0).numpy()).save(path)


def _write_pngs(tmp_path: Path, n: int, height: int = 40, width: int = 56) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, f in enumerate(synthetic_sequence(n, height, width)):
        u8 = ((f + 1) / 2 * 255).round().to(torch.uint8)
        paths.append(str(tmp_path / f"{i}.png"))
        _write_png(u8, paths[-1])
    return paths


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the command expecting a fault; its exit status and its one error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main(argv)
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.startswith("spatialmem: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return int(err.value.code), lines[0]


def test_reconstruct_command_streams_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _write_pngs(tmp_path, 5)
    out = tmp_path / "scene.ply"
    args = ["reconstruct", *paths, "--model", "spann3r_tiny", "--keyframe-every", "2"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_frames"] == 5 and summary["frames"] == 3  # images 0, 2, 4
    header, data = _read_ply(out)
    assert "element vertex 4608" in header  # three 32x48 crops (40x56 cropped to multiples of 16)
    assert np.isfinite(data["x"]).all() and (data["confidence"] >= 1).all()


def test_reconstruct_runs_the_shipped_small_model_as_it_was_trained_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --checkpoint, --size or --segments: the shipped weights, frames resized to the long
    side they were trained at, and the model's recommended segments (loops closed)."""
    from spatialmem.data.image_inputs import load_frames
    from spatialmem.inference import SegmentedReconstructor, Segments
    from spatialmem.models import create_model

    paths = _write_pngs(tmp_path / "frames", 8, 96, 128)  # 3:4, larger than the model's frames
    out = tmp_path / "scene.ply"
    args = ["reconstruct", *paths, "--model", "spann3r_small_synthetic", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weights"] == "shipped" and summary["frames"] == 8
    assert summary["streaming"] == "segments of 6 + 3, loops closed"
    _, data = _read_ply(out)
    assert len(data["x"]) == 8 * 72 * 96  # long side 96, aspect kept, multiples of 8
    frames = load_frames([Path(x) for x in paths], size=96, patch_size=8)
    model = create_model("spann3r_small_synthetic", pretrained=True).eval()
    expected = SegmentedReconstructor(model, Segments(), optimize=False).run(frames)
    want = torch.cat([r.pts3d.reshape(-1, 3) for r in expected])
    np.testing.assert_allclose(data["x"], want[:, 0].numpy(), rtol=1e-4, atol=1e-4)
    # --segments off streams with one memory.
    assert main([*args, "--out", str(tmp_path / "one.ply"), "--segments", "off"]) == 0
    assert json.loads(capsys.readouterr().out)["streaming"] == "one memory"


def test_segments_auto_is_what_suits_the_model() -> None:
    from spatialmem.cli import _resolve_segments, build_parser
    from spatialmem.inference import Segments

    def resolved(*argv: str) -> Segments | None:
        args = build_parser().parse_args(list(argv))
        _resolve_segments(args)
        return args.segments

    small = ["reconstruct", "x.png", "--model", "spann3r_small_synthetic"]
    assert resolved(*small) == Segments()
    assert resolved("reconstruct", "x.png") is None  # the published model: one memory
    assert resolved("evaluate", "--model", "spann3r_tiny") is None
    assert resolved("demo") == Segments()  # the demo's model is the small one
    assert resolved(*small, "--segments", "off") is None
    assert resolved(*small, "--segments", "4:2") == Segments(4, 2)
    assert resolved(*small, "--no-loop-closure") == Segments(loop_closure=None)


def test_reconstruct_command_rejects_bad_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _write_pngs(tmp_path, 2)
    other = _write_pngs(tmp_path / "big", 1, 72, 56)
    cases = [
        (["reconstruct", *paths, *other, "--model", "spann3r_tiny", "--no-progress"], 1, "--size"),
        (["reconstruct", *paths, "--model", "dust3r_tiny_linear"], 2, "not a Spann3R model"),
        (["reconstruct", paths[0], "--model", "spann3r_tiny"], 2, "at least 2"),
        (["reconstruct", *paths, "--model", "spann3r_tiny", "--keyframe-every", "2"], 2, "fewer"),
        (["pair", *paths, "--model", "spann3r_tiny"], 2, "not a pair model"),
    ]
    for argv, code, message in cases:
        assert _fails(argv, capsys)[0] == code
        assert message in _fails(argv, capsys)[1]


def test_pair_command_reads_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = synthetic_sequence(2, 40, 56)
    paths = []
    for i, f in enumerate(frames):
        u8 = ((f + 1) / 2 * 255).round().to(torch.uint8)
        paths.append(tmp_path / f"{i}.png")
        _write_png(u8, paths[-1])
    out = tmp_path / "pair.ply"
    args = ["pair", str(paths[0]), str(paths[1]), "--model", "dust3r_tiny_linear"]
    assert main([*args, "--out", str(out)]) == 0
    header, _ = _read_ply(out)
    assert "element vertex 3072" in header  # two 32x48 crops (40x56 cropped to multiples of 16)


def test_models_command_lists(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "dust3r_vitl*"]) == 0
    assert capsys.readouterr().out.split() == ["dust3r_vitl_224_linear", "dust3r_vitl_512_dpt"]


@pytest.mark.usefixtures("without_typecheck")
def test_write_ply_round_trip_and_checks(tmp_path: Path) -> None:
    pts = torch.randn(5, 3)
    header, data = _read_ply(write_ply(tmp_path / "a.ply", pts, torch.rand(5, 3), torch.ones(5)))
    np.testing.assert_allclose(data["y"], pts[:, 1].numpy())
    assert "property uchar red" in header
    with pytest.raises(ValueError, match="colors"):
        write_ply(tmp_path / "b.ply", pts, torch.rand(4, 3))


def test_synthetic_frames_overlap_and_normalise() -> None:
    frames = synthetic_sequence(3, 16, 24, seed=1, step=(0, 2))
    assert frames.shape == (3, 3, 16, 24) and frames.min() >= -1 and frames.max() <= 1
    torch.testing.assert_close(frames[1, :, :, :-2], frames[0, :, :, 2:])
    with pytest.raises(ValueError, match="uint8"):
        to_model_range(torch.zeros(2, 2, 3))


def test_reconstruct_folder_writes_every_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spatialmem import create_model, save_checkpoint
    from spatialmem.io import load_frames_npz, read_colmap_text, read_nerfstudio, read_ply

    # Random weights put points anywhere; these point every pixel forwards, so that the
    # cameras are defined and every export is written.
    model = create_model("spann3r_tiny")
    with torch.no_grad():
        for head in (model.dust3r.head1, model.dust3r.head2):
            head.head[4].weight.mul_(0.01)
            head.head[4].bias.copy_(torch.tensor([0.0, 0.0, 2.0, 1.0]))
    ckpt = tmp_path / "forward.pth"
    save_checkpoint(model, ckpt)
    _write_pngs(tmp_path / "frames", 4)
    out = tmp_path / "out"
    args = ["reconstruct", str(tmp_path / "frames"), "--model", "spann3r_tiny", "--no-progress"]
    assert main([*args, "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 4 and len(summary["focal"]) == 4
    cloud = read_ply(out / "scene.ply")
    assert cloud.points.shape[1] == 3 and cloud.points.shape[0] > 0
    frames = load_frames_npz(out / "frames")
    assert tuple(frames["pts3d"].shape) == (4, 32, 48, 3)
    scene = read_nerfstudio(out)
    assert tuple(scene.cam_to_world.shape) == (4, 4, 4)
    torch.testing.assert_close(scene.cam_to_world[0], torch.eye(4), atol=1e-5, rtol=0)
    colmap = read_colmap_text(out / "colmap")
    assert len(colmap.image_names) == 4
    if (out / "preview.png").exists():  # matplotlib installed (eval extra)
        assert (out / "preview.png").read_bytes()[:4] == b"\x89PNG"
    # The reconstruction scored against itself: zero error after any alignment.
    assert main(["evaluate", str(out), str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["acc"] < 1e-4 and metrics["comp"] < 1e-4
    # Untrained weights: no cameras, but the point cloud is still written.
    args = ["reconstruct", str(tmp_path / "frames"), "--model", "spann3r_tiny", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "raw"), "--no-preview"]) == 0
    assert (tmp_path / "raw" / "scene.ply").exists()


def test_evaluate_dataset_path_runs_the_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    from spatialmem.data.scenes import synthetic_clip

    clip = synthetic_clip(num_frames=3, height=32, width=32, seed=2)
    scene = tmp_path / "room"
    (scene / "images").mkdir(parents=True)
    (scene / "depth").mkdir()
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    for i in range(3):
        rgb = ((clip.images[i].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        Image.fromarray(rgb).save(scene / "images" / f"img{i}.png")
        mm = (clip.depth()[i] * 1000).round().numpy().astype(np.uint16)
        Image.fromarray(mm).save(scene / "depth" / f"depth{i}.png")
    poses = torch.cat([clip.camera_pose[i] @ flip for i in range(3)]).numpy()
    np.savetxt(scene / "poses.txt", poses)
    np.savetxt(scene / "focal.txt", [float(clip.intrinsics[0, 0])])
    args = ["evaluate", "--dataset", "nrgbd", "--root", str(tmp_path), "--scene", "room"]
    args += ["--model", "spann3r_tiny", "--stride", "1", "--size-eval", "32", "--json"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["sequence"] == "nrgbd/room"
    assert np.isfinite(metrics["acc"]) and np.isfinite(metrics["comp"])
    # In segments of 1 + 1 the third frame comes from a second segment.
    assert main([*args, "--segments", "1:1"]) == 0
    chained = json.loads(capsys.readouterr().out)
    assert np.isfinite(chained["acc"]) and chained["acc"] != metrics["acc"]


def _bad_inputs(tmp: Path) -> dict[str, Path]:
    """Files for the bad-input cases: good images, a text file and a truncated PNG named .png,
    an empty folder, checkpoints that are empty, text, truncated or of another architecture,
    and a file where a folder is needed (unwritable even for root)."""
    from spatialmem import create_model, save_checkpoint

    good = [Path(p) for p in _write_pngs(tmp / "good", 2)]
    (tmp / "text.png").write_text("not an image\n")
    raw = good[0].read_bytes()
    (tmp / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (tmp / "empty").mkdir()
    (tmp / "empty.pth").write_bytes(b"")
    (tmp / "text.pth").write_text("hello, I am not a checkpoint\n")
    save_checkpoint(create_model("dust3r_tiny_linear"), tmp / "pair.pth")
    raw = (tmp / "pair.pth").read_bytes()
    (tmp / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    (tmp / "locked").write_text("a file, so nothing can be written below it\n")
    return {"good1": good[0], "good2": good[1]}


_TINY = ["--model", "spann3r_tiny", "--no-progress"]
_PAIR = ["--model", "dust3r_tiny_linear"]


@pytest.mark.parametrize(
    ("argv", "code", "names"),
    [
        # unreadable or missing inputs: failures, the message names the file
        (["reconstruct", "{good1}", "{tmp}/text.png", *_TINY], 1, "text.png"),
        (["reconstruct", "{good1}", "{tmp}/truncated.png", *_TINY], 1, "truncated.png"),
        (["reconstruct", "{good1}", "{tmp}/missing.png", *_TINY], 1, "missing.png"),
        (["reconstruct", "{tmp}/missing", *_TINY], 1, "does not exist"),
        (["reconstruct", "{tmp}/empty", *_TINY], 1, "holds no image"),
        (["pair", "{good1}", "{tmp}/text.png", *_PAIR], 1, "text.png"),
        (["pair", "{good1}", "{tmp}/truncated.png", *_PAIR], 1, "truncated.png"),
        (["pair", "{good1}", "{tmp}/missing.png", *_PAIR], 1, "missing.png"),
        (["evaluate", "{tmp}/missing", "{tmp}/missing"], 1, "does not exist"),
        # wrong checkpoints: failures naming the file
        (["pair", "{good1}", "{good2}", *_PAIR, "--checkpoint", "{tmp}/no.pth"], 1, "no.pth"),
        (["pair", "{good1}", "{good2}", *_PAIR, "--checkpoint", "{tmp}/empty.pth"], 1, "empty"),
        (["pair", "{good1}", "{good2}", *_PAIR, "--checkpoint", "{tmp}/text.pth"], 1, "text.pth"),
        (
            ["pair", "{good1}", "{good2}", *_PAIR, "--checkpoint", "{tmp}/truncated.pth"],
            1,
            "truncated.pth",
        ),
        (
            ["reconstruct", "{good1}", "{good2}", *_TINY, "--checkpoint", "{tmp}/pair.pth"],
            1,
            "pair.pth",
        ),
        # an output that cannot be written: found before any compute
        (["reconstruct", "{good1}", "{good2}", *_TINY, "--out", "{tmp}/locked/x"], 1, "--out"),
        (["pair", "{good1}", "{good2}", *_PAIR, "--out", "{tmp}/locked/x.ply"], 1, "--out"),
        (["demo", "--out", "{tmp}/locked/x"], 1, "--out"),
        (["demo", "--out", "{tmp}/text.png"], 1, "--out"),
        (["models", "no_such_*"], 1, "no_such_*"),
        # a wrong command line: usage errors naming the argument
        (["demo", "--model", "spann3r_tny"], 2, "spann3r_tiny"),
        (["pair", "{good1}", "{good2}", "--model", "dust3r_tiny"], 2, "--model"),
        (["reconstruct", "{good1}", "{good2}", *_TINY, "--size", "8", "8"], 2, "--size"),
        (["reconstruct", "{good1}", "{good2}", *_TINY, "--size", "1", "2", "3"], 2, "--size"),
        (
            ["reconstruct", "{good1}", "{good2}", *_TINY, "--keyframe-every", "0"],
            2,
            "--keyframe-every",
        ),
        (["demo", "--height", "60"], 2, "--height"),
        (["demo", "--frames", "1"], 2, "--frames"),
        (["demo", "--widht", "64"], 2, "--widht"),
        (["demo", "--out", "{tmp}/demo.ply"], 2, "--out"),
        (["demo", "--scene", "-1"], 2, "--scene"),
        (["demo", "--segments", "6"], 2, "--segments"),
        (["demo", "--segments", "0:3"], 2, "--segments"),
        (["demo", "--model", "spann3r_tiny", "--checkpoint", "{tmp}/pair.pth"], 1, "pair.pth"),
        (["evaluate", "--dataset", "dtu"], 2, "--root"),
        ([], 2, "command"),
    ],
)
def test_bad_inputs_end_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    names: str,
) -> None:
    files = {"tmp": tmp_path, **_bad_inputs(tmp_path)}
    argv = [a.format(**files) for a in argv]
    status, line = _fails(argv, capsys)
    assert status == code, line
    assert names in line, line


def test_unwritable_output_is_found_before_the_model_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import spatialmem.cli as cli

    def no_build(*args: object) -> None:
        raise AssertionError("the model was built")

    monkeypatch.setattr(cli, "_build", no_build)
    paths = _write_pngs(tmp_path, 2)
    (tmp_path / "file").write_text("")
    argv = ["reconstruct", *paths, *_TINY, "--out", str(tmp_path / "file")]
    assert _fails(argv, capsys)[0] == 1
    assert _fails(["pair", *paths, *_PAIR, "--out", str(tmp_path)], capsys)[0] == 1
    assert _fails(["reconstruct", paths[0], str(tmp_path / "x.txt"), *_TINY], capsys)[0] == 1


def test_verbose_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main(["-v", "reconstruct", str(tmp_path / "missing"), *_TINY])
    assert err.value.code == 1
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and stderr.rstrip().splitlines()[-1].startswith("spatialmem:")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import spatialmem

    with pytest.raises(SystemExit) as err:
        main(["--version"])
    assert err.value.code == 0
    assert capsys.readouterr().out.strip() == f"spatialmem {spatialmem.__version__}"


def test_warnings_become_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A library warning (here: the orbit room's segments shrinking) is one log line, without
    Python's source location."""
    args = ["demo", "--scene", "0", "--frames", "24", "--no-preview", "--out", str(tmp_path)]
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="spatialmem"):
        warnings.simplefilter("always")  # the suite ignores this warning elsewhere
        assert main(args) == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(line.startswith("SegmentScaleWarning: the scale of this stream's") for line in lines)
