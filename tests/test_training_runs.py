"""Training runs: run directory (metrics CSV, loss plot, resumable state), exact resumption,
validation, colour jitter and TOML config files.

Everything runs the tiny model on 32x32 clips of 3 frames on the CPU, for a few steps.
"""

import dataclasses
import logging
import shutil
from pathlib import Path

import pytest
import torch

from spatialmem.interop import CheckpointError, load_checkpoint, save_checkpoint
from spatialmem.models import create_model, list_models
from spatialmem.training import TrainConfig, train
from spatialmem.training.augment import jitter_colors
from spatialmem.training.cli import build_parser, main, parse_config
from spatialmem.training.config import RESUME_FREE_FIELDS, read_config_file
from spatialmem.training.distributed import ResumableSampler
from spatialmem.training.init_weights import load_initial_weights
from spatialmem.training.logs import METRIC_COLUMNS, MetricsCSV, plot_loss_curves, read_metrics
from spatialmem.training.runner import TrainResult
from spatialmem.training.state import STATE_FORMAT, load_train_state

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# 6 scenes in batches of 2: 3 batches per epoch, so 4 steps cross an epoch boundary and a run
# stopped after 2 steps resumes in the middle of epoch 0. Memory dropout stays on (0.15), so
# the random state must be restored too.
TINY = TrainConfig(
    model="spann3r_tiny",
    steps=4,
    batch_size=2,
    num_scenes=6,
    num_frames=3,
    height=32,
    width=32,
    video_frames=8,
    max_interval=2,
    lr=1e-3,
    warmup_steps=1,
    color_jitter=0.3,
    val_every=2,
    val_scenes=3,
    save_every=3,
    log_every=1,
    device="cpu",
    amp="off",
    seed=3,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the tensors are tiny, a second thread only adds barrier waits."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path]:
    """The uninterrupted 4-step run with a run directory."""
    run_dir = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    result = train(dataclasses.replace(TINY, run_dir=str(run_dir)))
    return result, run_dir


def _rows_without_time(csv_path: Path) -> list[dict[str, str]]:
    timings = ("seconds", "data_seconds")
    return [{k: v for k, v in row.items() if k not in timings} for row in read_metrics(csv_path)]


# --------------------------------------------------------------------------- run directory
def test_run_directory_files(reference: tuple[TrainResult, Path]) -> None:
    result, run_dir = reference
    assert {p.name for p in run_dir.iterdir()} == {"last.pt", "best.pt", "metrics.csv", "loss.png"}
    rows = read_metrics(run_dir / "metrics.csv")
    assert tuple(rows[0]) == METRIC_COLUMNS
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [int(r["epoch"]) for r in rows] == [0, 0, 0, 1]
    for row, stats in zip(rows, result.history, strict=True):
        assert float(row["loss"]) == pytest.approx(stats.loss, rel=1e-6)
        assert float(row["grad_norm"]) == pytest.approx(stats.grad_norm, rel=1e-6)
        assert float(row["lr"]) == pytest.approx(stats.lr, rel=1e-6)
        assert float(row["alpha"]) == pytest.approx(0.4)
        assert float(row["seconds"]) >= 0
        assert 0 <= float(row["data_seconds"]) <= float(row["seconds"])
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)
    png = (run_dir / "loss.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    state = load_train_state(run_dir / "last.pt")
    assert state["format"] == STATE_FORMAT
    assert state["step"] == 4 and state["micro_step"] == 4 and state["epoch"] == 1
    assert state["config"] == dataclasses.asdict(dataclasses.replace(TINY, run_dir=str(run_dir)))
    assert state["scaler"] is None and state["scheduler"]["last_epoch"] == 4
    assert len(state["rng"]) == 1 and state["rng"][0]["cpu"].dtype == torch.uint8
    for name, value in result.model.state_dict().items():
        assert torch.equal(state["model"][name], value), name


def test_validation_loss_is_logged(
    reference: tuple[TrainResult, Path], caplog: pytest.LogCaptureFixture
) -> None:
    result, run_dir = reference
    assert set(result.val_losses) == {2, 4}
    assert set(result.val_errors) == {2, 4}
    table = {int(r["step"]): r for r in read_metrics(run_dir / "metrics.csv")}
    assert table[1]["val_loss"] == table[3]["val_error"] == ""
    for step, loss in result.val_losses.items():
        assert float(table[step]["val_loss"]) == pytest.approx(loss, rel=1e-6)
        assert loss > 0 and loss == loss  # finite, not NaN
        error = result.val_errors[step]
        assert float(table[step]["val_error"]) == pytest.approx(error, rel=1e-6)
        assert 0 < error < 1  # an untrained model: far from exact, but a fraction of the size
    # best.pt holds the model of the validation with the lowest error.
    best = torch.load(run_dir / "best.pt", weights_only=True)
    best_step = min(result.val_errors, key=result.val_errors.__getitem__)
    assert best["step"] == best_step and best["val_error"] == result.val_errors[best_step]
    load_checkpoint(create_model("spann3r_tiny"), run_dir / "best.pt")
    # Validation happens in eval mode on fixed clips, and logs a line.
    caplog.set_level(logging.INFO, logger="spatialmem.training")
    config = dataclasses.replace(TINY, steps=1, val_every=1, color_jitter=0.0)
    again = train(config)
    assert set(again.val_losses) == {1}
    assert again.model.training  # back in training mode
    assert any("validation loss" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- resumption
def test_resume_continues_exactly(reference: tuple[TrainResult, Path], tmp_path: Path) -> None:
    """2 steps, stop, resume to 4 == 4 steps in one go: same parameters, same CSV rows."""
    want, ref_dir = reference
    run = dataclasses.replace(TINY, run_dir=str(tmp_path))
    first = train(dataclasses.replace(run, stop_after=2, out=str(tmp_path / "final.pt")))
    assert first.start_step == 0 and len(first.history) == 2
    assert not (tmp_path / "final.pt").exists()  # only written at the real end
    # A row written after the last save (a crash before the next one) is dropped on resume.
    with MetricsCSV(tmp_path / "metrics.csv", keep_until=2) as log:
        log.write(step=3, epoch=0, loss=123.0)
    # Logging, saving and validation options may change; the data order does not depend on them.
    second = train(dataclasses.replace(run, resume=True, log_every=3, save_every=1))
    assert second.start_step == 2 and len(second.history) == 2 and second.epochs == 2
    got = second.model.state_dict()
    for name, value in want.model.state_dict().items():
        assert torch.equal(got[name], value), name
    assert _rows_without_time(tmp_path / "metrics.csv") == _rows_without_time(
        ref_dir / "metrics.csv"
    )
    assert second.history == want.history[2:]


def test_resume_refuses_other_settings(reference: tuple[TrainResult, Path]) -> None:
    _, run_dir = reference
    changed = dataclasses.replace(
        TINY, run_dir=str(run_dir), resume=True, lr=2e-3, num_frames=4, log_every=2
    )
    with pytest.raises(ValueError, match="cannot resume") as err:
        train(changed)
    differing = str(err.value).split(" (only")[0]
    assert "lr: saved 0.001, now 0.002" in differing and "num_frames: saved 3, now 4" in differing
    assert "resume:" not in differing and "log_every" not in differing  # free to change
    assert {"resume", "log_every", "save_every", "num_workers", "device"} <= RESUME_FREE_FIELDS
    with pytest.raises(ValueError, match="resume needs a run_dir"):
        TrainConfig(resume=True)


def test_resume_at_the_end_and_without_state(
    reference: tuple[TrainResult, Path], tmp_path: Path
) -> None:
    result, ref_dir = reference
    # Nothing saved yet: resume starts a new run.
    fresh = train(
        dataclasses.replace(TINY, steps=1, val_every=0, run_dir=str(tmp_path / "new"), resume=True)
    )
    assert fresh.start_step == 0 and len(fresh.history) == 1
    # A finished run resumes to its end without training (and writes the final checkpoint).
    run_dir = shutil.copytree(ref_dir, tmp_path / "copy")  # the reference stays untouched
    out = tmp_path / "again.pt"
    done = train(dataclasses.replace(TINY, run_dir=str(run_dir), resume=True, out=str(out)))
    assert done.start_step == 4 and done.history == [] and out.exists()
    for name, value in result.model.state_dict().items():
        assert torch.equal(done.model.state_dict()[name], value), name


def test_sampler_skips_the_consumed_items() -> None:
    sampler = ResumableSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=4)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(3)
    assert len(sampler) == 10 and sorted(sampler) == list(range(10))
    with pytest.raises(ValueError, match="start"):
        sampler.set_epoch(0, start=11)


# --------------------------------------------------------------------------- colour jitter
def test_jitter_is_deterministic_and_in_range() -> None:
    frames = torch.rand(3, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    before = frames.clone()
    a = jitter_colors(frames, 0.5, torch.Generator().manual_seed(1))
    b = jitter_colors(frames, 0.5, torch.Generator().manual_seed(1))
    c = jitter_colors(frames, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == frames.shape and a.dtype == frames.dtype
    assert a.min() >= -1 and a.max() <= 1 and not torch.equal(a, frames)
    assert jitter_colors(frames, 0.0, torch.Generator()) is frames
    # The input is not modified.
    assert torch.equal(frames, before)
    with pytest.raises(ValueError, match="strength"):
        jitter_colors(frames, 1.5)


def test_jitter_is_one_draw_per_clip() -> None:
    frame = torch.rand(1, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    clips = frame.expand(2, 3, 3, 8, 8).contiguous()  # 2 clips of 3 identical frames
    out = jitter_colors(clips, 0.4, torch.Generator().manual_seed(5))
    for b in range(2):  # same factors for every frame of a clip
        assert torch.equal(out[b, 0], out[b, 1]) and torch.equal(out[b, 0], out[b, 2])
    assert not torch.equal(out[0], out[1])  # another draw for another clip
    # A grey image keeps zero saturation: the channels stay equal.
    grey = torch.full((1, 2, 3, 4, 4), 0.2)
    jittered = jitter_colors(grey, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(jittered[:, :, 0], jittered[:, :, 1])


# --------------------------------------------------------------------------- config files
def test_config_file_and_overrides(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        'model = "spann3r_tiny"\nsteps = 3\nbatch-size = 4\nlr = 1\ncurriculum = false\n'
        'color_jitter = 0.25\nmax_grad_norm = 0\nscenes = "box"\n'
    )
    config = TrainConfig.from_toml(recipe)
    assert config == TrainConfig(
        steps=3, batch_size=4, lr=1.0, curriculum=False, color_jitter=0.25, max_grad_norm=None
    )
    assert isinstance(config.lr, float)
    assert TrainConfig.from_toml(recipe, steps=9).steps == 9
    # Explicit command-line options win over the file; the others come from it.
    parsed = parse_config(["--config", str(recipe), "--steps", "7", "--curriculum"])
    assert parsed == dataclasses.replace(config, steps=7, curriculum=True)
    assert parse_config(["--steps", "7"]) == TrainConfig(steps=7)
    # The plain parser stays one option per field.
    assert "config" not in {a.dest for a in build_parser()._actions}


def test_config_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = 3\nlearning_rate = 1e-4\n")
    with pytest.raises(ValueError, match=r"unknown key 'learning_rate'.*valid keys.*\blr\b"):
        TrainConfig.from_toml(bad)
    with pytest.raises(SystemExit):
        parse_config(["--config", str(bad)])
    assert "learning_rate" in capsys.readouterr().err
    cases = {
        "steps = '3'\n": "`steps` must be a int",
        "amp = 'fp8'\n": "`amp` must be one of",
        "batch_size = 2\nbatch-size = 3\n": "given twice",
        "steps = [\n": "not valid TOML",
        "steps = 0\n": "steps must be >= 1",
    }
    for text, message in cases.items():
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_toml(bad)
    with pytest.raises(SystemExit):
        parse_config(["--config", str(tmp_path / "missing.toml")])
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing set\n")
    assert read_config_file(empty) == {}


def test_entry_point_with_config_file(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        "steps = 5\nbatch-size = 2\nnum-scenes = 2\nnum-frames = 3\nheight = 32\nwidth = 32\n"
        f"device = 'cpu'\nrun-dir = '{tmp_path / 'run'}'\ntorch-threads = 1\n"
    )
    assert main(["--config", str(recipe), "--steps", "1", "--save-every", "1"]) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == ["1"]
    assert load_train_state(tmp_path / "run" / "last.pt")["config"]["steps"] == 1


def test_plot_handles_negative_losses_and_no_validation(tmp_path: Path) -> None:
    with MetricsCSV(tmp_path / "m.csv") as log:
        for step in range(1, 30):
            log.write(step=step, epoch=0, loss=1.0 - step / 10)
    out = plot_loss_curves(tmp_path / "m.csv", tmp_path / "plots" / "loss.png", title="t")
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="unknown metric"):
        MetricsCSV(tmp_path / "n.csv").write(stepp=1)


# --------------------------------------------------------------------------- scene kinds
def test_room_scenes() -> None:
    config = dataclasses.replace(
        TINY, scenes="rooms", steps=1, num_scenes=2, batch_size=1, val_every=1, val_scenes=1
    )
    result = train(config)
    assert len(result.history) == 1 and set(result.val_losses) == {1}


# --------------------------------------------------------------------------- initial weights
def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _close_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=1e-8) for k in sa)


def test_init_from_a_checkpoint_starts_there(tmp_path: Path) -> None:
    torch.manual_seed(11)
    start = create_model("spann3r_tiny")
    path = tmp_path / "start.pt"
    save_checkpoint(start, path)
    # A negligible learning rate: the model stays at its initial weights, the checkpoint's.
    config = dataclasses.replace(TINY, steps=1, lr=1e-12, val_every=0, init_from=str(path))
    assert _close_weights(train(config).model, start)
    assert not _close_weights(train(dataclasses.replace(config, init_from=None)).model, start)


def test_init_from_shipped_weights_and_from_a_pair_model(tmp_path: Path) -> None:
    model = create_model("spann3r_small_synthetic")
    assert "shipped" in load_initial_weights(model, "pretrained", "spann3r_small_synthetic")
    assert _same_weights(model, create_model("spann3r_small_synthetic", pretrained=True))

    # A DUSt3R checkpoint fills the pair model only, as the paper starts from DUSt3R.
    torch.manual_seed(12)
    pair = create_model("spann3r_tiny").dust3r
    save_checkpoint(pair, tmp_path / "dust3r.pt")
    torch.manual_seed(13)
    model = create_model("spann3r_tiny")
    memory_before = {k: v.clone() for k, v in model.memory_encoder.state_dict().items()}
    assert "pair model" in load_initial_weights(model, str(tmp_path / "dust3r.pt"), "spann3r_tiny")
    assert _same_weights(model.dust3r, pair)
    assert all(
        torch.equal(v, model.memory_encoder.state_dict()[k]) for k, v in memory_before.items()
    )


def test_init_from_errors(tmp_path: Path) -> None:
    save_checkpoint(create_model("spann3r_small_synthetic"), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="shape"):
        load_initial_weights(create_model("spann3r_tiny"), str(tmp_path / "other.pt"), "x")
    with pytest.raises(FileNotFoundError):
        load_initial_weights(create_model("spann3r_tiny"), str(tmp_path / "none.pt"), "x")
    with pytest.raises(ValueError, match="no pretrained weights are shipped"):
        load_initial_weights(create_model("spann3r_tiny"), "pretrained", "spann3r_tiny")


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[1] / "configs").rglob("*.toml")),
    ids=lambda p: p.name,
)
def test_shipped_recipes_are_valid_configs(path: Path) -> None:
    """Every recipe in configs/ reads as a TrainConfig, for a model that exists."""
    config = TrainConfig.from_toml(path)
    assert config.model in list_models()
    assert config.run_dir is not None and config.steps >= 1


# --------------------------------------------------------------------------- pairs mixed in
# 4 scenes in batches of 2: 2 clip batches per epoch; with pair_every=2 micro-batches 1, 3, 5,
# ... are pairs, and 9 or 10 of them span 3 epochs, whose confidence weights differ.
PAIRS = dataclasses.replace(
    TINY, pair_every=2, pair_max_interval=3, num_scenes=4, val_every=0, steps=9
)


def _frames_per_micro_batch(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the clip length of every micro-batch the training step sees."""
    import spatialmem.training.step as step_module

    seen: list[int] = []
    original = step_module.train_step

    def recording(model, batch, *args, **kwargs):
        seen.append(batch.frames.shape[1])
        return original(model, batch, *args, **kwargs)

    monkeypatch.setattr(step_module, "train_step", recording)
    return seen


def test_pairs_take_every_nth_micro_batch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="spatialmem.training")
    seen = _frames_per_micro_batch(monkeypatch)
    result = train(dataclasses.replace(PAIRS, steps=3, accum_iter=2))
    assert seen == [3, 2, 3, 2, 3, 2]  # every optimiser step: one clip batch, one pair batch
    assert len(result.history) == 3
    start = next(r.getMessage() for r in caplog.records if "parameters) on" in r.getMessage())
    assert start.endswith("; 1 micro-batch in 2 of frame pairs up to 3 frames apart")


@pytest.mark.parametrize(
    ("steps", "stop_after"),
    [(9, 7), (10, 9), (9, 2)],
    ids=["pair-between-epochs", "pair-after-last-clip", "mid-epoch"],
)
def test_resume_with_pairs_continues_exactly(
    tmp_path: Path, steps: int, stop_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop after 7 micro-batches leaves the next one a pair between epoch 1's last clip batch
    and epoch 2's first (whose confidence weight is lower); after 9 of 10, a pair after the
    run's last clip batch."""
    config = dataclasses.replace(PAIRS, steps=steps)
    seen = _frames_per_micro_batch(monkeypatch)
    want = train(dataclasses.replace(config, run_dir=str(tmp_path / "reference")))
    assert seen == [3, 2] * (steps // 2) + [3] * (steps % 2)
    run = dataclasses.replace(config, run_dir=str(tmp_path / "resumed"))
    first = train(dataclasses.replace(run, stop_after=stop_after))
    second = train(dataclasses.replace(run, resume=True))
    assert len(first.history) + len(second.history) == steps
    got = second.model.state_dict()
    for name, value in want.model.state_dict().items():
        assert torch.equal(got[name], value), name
    assert first.history + second.history == want.history
    assert _rows_without_time(tmp_path / "resumed" / "metrics.csv") == _rows_without_time(
        tmp_path / "reference" / "metrics.csv"
    )


def test_pair_batches_draw_pairs_by_micro_batch_and_rank() -> None:
    from spatialmem.training.distributed import DistributedContext
    from spatialmem.training.pairs import PairBatches
    from spatialmem.training.runner import _dataset

    def ctx(rank: int) -> DistributedContext:
        cpu = torch.device("cpu")
        return DistributedContext(
            rank=rank, world_size=2, local_rank=rank, device=cpu, backend=None
        )

    config = dataclasses.replace(PAIRS, pair_every=3, pair_max_interval=4, video_frames=12)
    ranks = [PairBatches(config, ctx(r), 1, 4, _dataset) for r in (0, 1)]
    pairs = ranks[0]
    assert [pairs.is_pair(m) for m in range(7)] == [False, False, True, False, False, True, False]
    assert [pairs.clip_batches_before(m) for m in (0, 2, 3, 5, 6)] == [0, 2, 2, 4, 4]
    assert pairs.epoch(2) == 2 and pairs.epoch(11) == 3  # clamped to the last epoch
    batch = pairs.batch(2)
    assert batch.frames.shape == (2, 2, 3, 32, 32)
    assert torch.equal(batch.frames, pairs.batch(2).frames)  # a function of the micro-batch
    assert not torch.equal(batch.frames, ranks[1].batch(2).frames)  # ranks draw other pairs
    assert not torch.equal(batch.frames, pairs.batch(5).frames)
    gaps = set()
    for m in (2, 5, 8, 11):
        pairs.batch(m)  # selects the pairs' epoch of micro-batch m
        for i in range(len(pairs.dataset)):
            frames = pairs.dataset.frame_indices(i)
            assert frames.shape == (2,)
            gaps.add(abs(int(frames[1] - frames[0])))
    assert gaps <= set(range(1, 5)) and max(gaps) > 1  # up to pair_max_interval, not only 1
    with pytest.raises(ValueError, match="clip batch"):
        pairs.batch(0)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"pair_every": 1}, "pair_every must be 0"),
        ({"pair_every": -2}, "pair_every must be 0"),
        ({"pair_every": 2, "min_interval": 2, "max_interval": 3, "pair_max_interval": 1},
         "pair_max_interval must be >= min_interval=2"),
    ],
)  # fmt: skip
def test_pair_settings_are_checked(changes: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **changes)


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.toml")),
    ids=lambda p: p.name,
)
def test_committed_recipes_are_valid_settings(path: Path) -> None:
    """Every recipe under configs/ reads into a TrainConfig of a registered model."""
    config = TrainConfig.from_toml(path)
    assert config.model in list_models()
    assert config.run_dir is not None  # a recipe writes its curves and resumable state
