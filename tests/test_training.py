"""Training: synthetic scenes with ground truth, the train step, DDP under torchrun, overfitting.

Run as a script (``python -m torch.distributed.run ... tests/test_training.py --ddp-worker DIR``)
this file is the worker of the two-process test: each rank writes its gradients after DDP's
all-reduce, then runs the entry point for two steps.
"""

import dataclasses
import itertools
import math
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spatialmem import value_checks
from spatialmem.data.curriculum import CurriculumConfig
from spatialmem.data.scenes import (
    SceneBatch,
    SceneClip,
    SyntheticScene,
    SyntheticScenes,
    collate_clips,
    synthetic_clip,
)
from spatialmem.interop import load_checkpoint
from spatialmem.losses import PointRegression, Spann3RLoss, gt_in_camera0
from spatialmem.memory import MemoryConfig, SpatialMemory
from spatialmem.models import create_model
from spatialmem.training import (
    TrainStep,
    amp_settings,
    build_optimizer,
    cleanup,
    init_distributed,
    make_loader,
    param_groups,
    runner,
    train_step,
    unwrap_model,
    warmup_cosine,
    wrap_ddp,
)
from spatialmem.training.cli import build_parser, config_from_args, main
from spatialmem.training.config import TrainConfig
from spatialmem.types import SequenceTarget

H = W = 32
T = 3

# Parameters of Spann3R that legitimately get no gradient: the decoder's mask token (CroCo
# masked pre-training only) and, in both DPT heads, the first residual unit of the coarsest
# fusion block (it would refine a skip input that the coarsest level does not have).
NO_GRAD = {"dust3r.decoder.mask_token"} | {
    f"dust3r.head{h}.refinenet.3.res_unit1.conv{c}.{kind}"
    for h in (1, 2)
    for c in (1, 2)
    for kind in ("weight", "bias")
}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the tensors here are tiny, so a second thread only adds barrier
    waits, which become very slow when the cores are shared with other processes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _no_dropout(config: MemoryConfig) -> SpatialMemory:
    return SpatialMemory(dataclasses.replace(config, attn_dropout=0.0))


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """The tiny Spann3R with a deterministic initialisation and no memory dropout."""
    torch.manual_seed(seed)
    return create_model("spann3r_tiny", memory=_no_dropout)


class GradRecorder(torch.optim.Optimizer):
    """An 'optimiser' whose step only records the gradients it is given."""

    def __init__(self, params) -> None:
        super().__init__(params, {"lr": 0.0})
        self.grads: list[torch.Tensor | None] = []

    def step(self, closure=None) -> None:
        self.grads = [
            None if p.grad is None else p.grad.detach().clone()
            for group in self.param_groups
            for p in group["params"]
        ]


def recorded(model: torch.nn.Module, recorder: GradRecorder) -> dict[str, torch.Tensor | None]:
    names = [n for n, _ in unwrap_model(model).named_parameters()]
    assert len(names) == len(recorder.grads)
    return dict(zip(names, recorder.grads, strict=True))


def ddp_dataset() -> SyntheticScenes:
    return SyntheticScenes(4, num_frames=T, height=H, width=W, seed=7)


# --------------------------------------------------------------------------- synthetic scenes
def test_clip_ground_truth_is_consistent() -> None:
    clip = synthetic_clip(num_frames=4, height=24, width=40, seed=3, stride=2)
    assert clip.images.shape == (4, 3, 24, 40)
    assert clip.pts3d.shape == (4, 24, 40, 3) and clip.valid.dtype == torch.bool
    assert clip.images.min() >= -1 and clip.images.max() <= 1
    assert torch.equal(clip.frame_indices, torch.tensor([0, 2, 4, 6]))
    # Every point projects back onto its own pixel centre, in front of the camera.
    world_to_cam = torch.linalg.inv(clip.camera_pose)
    cam = torch.einsum("tij,thwj->thwi", world_to_cam[:, :3, :3], clip.pts3d)
    cam = cam + world_to_cam[:, None, None, :3, 3]
    assert (cam[..., 2] > 0.1).all()
    torch.testing.assert_close(cam[..., 2], clip.depth(), atol=1e-4, rtol=1e-4)
    uv = torch.einsum("ij,thwj->thwi", clip.intrinsics, cam)
    uv = uv[..., :2] / uv[..., 2:]
    v, u = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(40) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([u, v], -1).expand_as(uv), atol=1e-3, rtol=0)
    # Poses are rigid and the camera moves.
    rot = clip.camera_pose[:, :3, :3]
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(4, 3, 3))
    assert (clip.camera_pose[1:, :3, 3] - clip.camera_pose[:-1, :3, 3]).norm(dim=-1).min() > 0.01


def test_clips_are_deterministic_and_differ_by_seed() -> None:
    a, b = synthetic_clip(3, 32, 32, seed=5), synthetic_clip(3, 32, 32, seed=5)
    c = synthetic_clip(3, 32, 32, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.pts3d, b.pts3d)
    assert not torch.equal(a.images, c.images)


def test_window_is_invalid() -> None:
    scene = SyntheticScene.random(0)
    # Look straight at the window's centre from the room's middle.
    centre = torch.cat([(scene.window_lo + scene.window_hi) / 2, scene.room_hi[2:]])
    looking = dataclasses.replace(scene, look_at=centre, velocity=torch.zeros(3))
    clip = looking.render(torch.tensor([0]), 32, 32)
    assert not clip.valid.all() and clip.valid.any()
    far = clip.pts3d[..., 2] > scene.room_hi[2] - 1e-3
    assert (far | clip.valid).all()  # only far-wall pixels are invalid


def test_collate_builds_model_input_and_target() -> None:
    ds = SyntheticScenes(3, num_frames=T, height=H, width=W)
    batch = collate_clips([ds[0], ds[1], ds[2]])
    assert batch.frames.shape == (3, T, 3, H, W)
    assert batch.target.pts3d.shape == (3, T, H, W, 3)
    assert torch.equal(batch.target.camera_pose0, batch.camera_pose[:, 0])
    # In frame 0's camera frame the ground truth of frame 0 has the frame's own depth.
    cam0 = gt_in_camera0(batch.target.pts3d, batch.target.camera_pose0)
    torch.testing.assert_close(cam0[1, 0, ..., 2], ds[1].depth()[0], atol=1e-4, rtol=1e-4)
    assert len({float(c.images.sum()) for c in (ds[0], ds[1], ds[2])}) == 3


def test_batches_and_clips_move_as_a_whole() -> None:
    ds = SyntheticScenes(2, num_frames=T, height=H, width=W)
    batch = collate_clips([ds[0], ds[1]])
    moved = batch.to("cpu", non_blocking=True)
    assert isinstance(moved, SceneBatch) and isinstance(moved.target, SequenceTarget)
    assert torch.equal(moved.target.pts3d, batch.target.pts3d)
    half = batch.to(torch.float64)
    assert half.frames.dtype == half.target.pts3d.dtype == torch.float64
    one = batch[1:2]
    assert one.batch_size == 1 and torch.equal(one.target.valid[0], ds[1].valid)
    clip = ds[0].clone()
    assert clip.images.data_ptr() != ds[0].images.data_ptr()
    assert torch.equal(SceneClip.stack([clip, ds[1]]).intrinsics[1], ds[1].intrinsics)


def test_curriculum_dataset_follows_the_schedule() -> None:
    cfg = CurriculumConfig(max_interval=5, num_frames=T)
    ds = SyntheticScenes(2, num_frames=T, height=H, width=W, curriculum=cfg, num_epochs=4)
    gaps0 = ds.frame_indices(0).diff()
    ds.set_epoch(2)  # progress 0.5: the largest interval
    assert torch.equal(gaps0, torch.ones(T - 1, dtype=torch.int64))
    assert torch.equal(ds.frame_indices(0).diff(), torch.full((T - 1,), 5))
    assert torch.equal(ds[1].frame_indices, ds.frame_indices(1))


@pytest.mark.usefixtures("without_typecheck")
def test_scene_errors() -> None:
    with pytest.raises(ValueError, match="at least one SceneClip"):
        collate_clips([])
    with pytest.raises(ValueError, match="same"):
        collate_clips([synthetic_clip(2, 32, 32), synthetic_clip(2, 16, 32)])
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticScenes(2, num_frames=3, curriculum=CurriculumConfig(max_interval=2, num_frames=4))
    with pytest.raises(IndexError):
        SyntheticScenes(2, num_frames=2)[2]


# --------------------------------------------------------------------------- the step
def test_gradients_reach_every_trainable_parameter() -> None:
    model = tiny_model()
    batch = collate_clips([synthetic_clip(T, H, W, seed=s) for s in (0, 1)])
    recorder = GradRecorder(model.parameters())
    stats = train_step(model, batch, Spann3RLoss(alpha=0.4), recorder, max_grad_norm=None)
    grads = recorded(model, recorder)
    missing = {n for n, g in grads.items() if g is None}
    assert missing == NO_GRAD
    for name, grad in grads.items():
        if grad is not None:
            assert torch.isfinite(grad).all(), name
            assert grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    # The parameters used only through the memory read (T >= 3 so that step 1 reads).
    for part in ("memory.norm_q", "memory.norm_k", "memory.norm_v", "key_head", "query_head"):
        assert any(n.startswith(part) and grads[n] is not None for n in grads), part
    assert math.isfinite(stats.loss) and stats.grad_norm is not None and stats.grad_norm > 0
    assert stats.conf_loss is not None and stats.scale_loss is not None
    assert stats.loss == pytest.approx(stats.conf_loss + stats.scale_loss, rel=1e-6)


def test_accumulation_equals_the_full_batch() -> None:
    clips = [synthetic_clip(T, H, W, seed=s) for s in (0, 1)]
    full_model = tiny_model()
    full = GradRecorder(full_model.parameters())
    train_step(full_model, collate_clips(clips), Spann3RLoss(), full, max_grad_norm=None)

    model = tiny_model()
    recorder = GradRecorder(model.parameters())
    step = TrainStep(model, Spann3RLoss(), recorder, accum_iter=2, max_grad_norm=None)
    first = step(collate_clips(clips[:1]))
    assert not first.stepped and first.grad_norm is None and step.optimizer_steps == 0
    second = step(collate_clips(clips[1:]))
    assert second.stepped and step.optimizer_steps == 1
    for (name, want), got in zip(recorded(full_model, full).items(), recorder.grads, strict=True):
        if want is None:
            assert got is None, name
        else:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=name)


def test_step_clips_and_updates() -> None:
    model = tiny_model()
    batch = collate_clips([synthetic_clip(T, H, W)])
    optimizer = build_optimizer(model, 1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_step(model, batch, Spann3RLoss(), optimizer, max_grad_norm=0.5)
    assert stats.stepped and stats.grad_norm > 0.5  # the norm reported is before clipping
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) == len(before) - len(NO_GRAD)
    assert all(p.grad is None for p in model.parameters())


def test_non_finite_gradients_skip_the_update() -> None:
    model = tiny_model()
    optimizer = build_optimizer(model, 1e-3)
    with torch.no_grad():
        model.key_head.mlp.fc1.weight[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    batch = collate_clips([synthetic_clip(T, H, W)])
    with value_checks(False):  # the NaN reaches the heads' inputs, which would reject it
        stats = train_step(model, batch, Spann3RLoss(), optimizer)
    assert not stats.stepped and not math.isfinite(stats.grad_norm)
    for b, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(b.nan_to_num(), p.detach().nan_to_num())


@pytest.mark.usefixtures("without_typecheck")
def test_step_argument_errors() -> None:
    model = tiny_model()
    opt = build_optimizer(model)
    batch = collate_clips([synthetic_clip(T, H, W)])
    with pytest.raises(TypeError, match="SceneBatch"):
        train_step(model, batch.frames, Spann3RLoss(), opt)
    with pytest.raises(ValueError, match="GradScaler"):
        train_step(model, batch, Spann3RLoss(), opt, amp_dtype=torch.float16)
    with pytest.raises(ValueError, match="accum_iter"):
        train_step(model, batch, Spann3RLoss(), opt, accum_iter=0)
    with pytest.raises(ValueError, match="mode"):
        amp_settings("fp8", "cpu")  # type: ignore[arg-type]


def test_amp_is_cuda_only_and_optimiser_defaults() -> None:
    assert amp_settings("auto", "cpu") == (None, None)
    assert amp_settings("off", "cpu") == (None, None)
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.05)
    assert all(p.ndim >= 2 for p in decay["params"])  # type: ignore[union-attr]
    assert no_decay["weight_decay"] == 0.0
    n_params = len(decay["params"]) + len(no_decay["params"])  # type: ignore[arg-type]
    assert n_params == len(list(model.parameters()))
    opt = build_optimizer(model)
    assert opt.defaults["lr"] == 5e-5 and opt.defaults["betas"] == (0.9, 0.95)
    sched = warmup_cosine(opt, 10, warmup_steps=2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2.5e-5) and lrs[2] == pytest.approx(5e-5)
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-6)


def test_single_process_context_and_loader() -> None:
    ctx = init_distributed(device="cpu")
    assert not ctx.distributed and ctx.is_main and ctx.world_size == 1
    assert wrap_ddp(torch.nn.Linear(2, 2), ctx).__class__ is torch.nn.Linear
    loader = make_loader(ddp_dataset(), 2, ctx, shuffle=False, collate_fn=collate_clips)
    assert [b.frames.shape[0] for b in loader] == [2, 2]
    cleanup(ctx)


def test_more_processes_than_gpus_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two NCCL processes on one GPU fail inside NCCL with "invalid usage" (seen on a 1-GPU
    machine); the check before it names the cause."""
    from spatialmem.training import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"2 processes .* 1 CUDA device"):
        distributed._check_one_device_per_process(2)
    distributed._check_one_device_per_process(1)


# --------------------------------------------------------------------------- overfitting
def test_overfits_one_sequence() -> None:
    """The tiny model cuts its normalised point error on one clip by more than 5x."""
    model = tiny_model()
    batch = collate_clips([synthetic_clip(T, H, W, seed=0)])
    steps = 60
    optimizer = build_optimizer(model, 5e-3, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, steps, warmup_steps=5, min_lr_ratio=0.05)
    step = TrainStep(model, Spann3RLoss(alpha=0.4), optimizer, scheduler=schedule)
    error = PointRegression()  # unweighted distance between normalised points

    def point_error() -> float:
        with torch.no_grad():
            return float(error(model.train()(batch.frames).steps, batch.target).loss)

    start = point_error()
    losses = [step(batch).loss for _ in range(steps)]
    end = point_error()
    assert losses[-1] < losses[0]
    assert start / end > 5, f"point error {start:.3f} -> {end:.3f} ({start / end:.1f}x)"


# --------------------------------------------------------------------------- entry point
def test_entry_point_single_process(tmp_path: Path) -> None:
    out = tmp_path / "tiny.pt"
    args = ["--model", "spann3r_tiny", "--steps", "2", "--batch-size", "2"]
    args += ["--num-scenes", "4", "--frames", "3", "--height", "32", "--width", "32"]
    assert main([*args, "--log-every", "1", "--out", str(out)]) == 0
    payload = torch.load(out, weights_only=True)
    assert payload["step"] == 2 and payload["train_config"]["num_frames"] == 3
    report = load_checkpoint(create_model("spann3r_tiny"), out)
    assert report.config_mismatch == [] and report.metadata["step"] == 2
    assert report.metadata["train_config"] == payload["train_config"]
    with pytest.raises(SystemExit):
        main(["--synthetic", "--steps", "2"])  # the option that selected nothing is gone
    with pytest.raises(SystemExit):
        main(["--steps", "0"])  # TrainConfig's checks become command-line errors


def test_command_line_options_are_the_config_fields() -> None:
    parser = build_parser()
    defaults = config_from_args(parser.parse_args([]))
    assert defaults == TrainConfig()
    args = ["--num-frames", "4", "--no-curriculum", "--amp", "off", "--max-grad-norm", "0"]
    args += ["--mem-dropout", "0.1", "--device", "cpu", "--lr", "1e-4"]
    config = config_from_args(parser.parse_args(args))
    assert config == TrainConfig(
        num_frames=4, curriculum=False, amp="off", max_grad_norm=None, mem_dropout=0.1,
        device="cpu", lr=1e-4,
    )  # fmt: skip
    assert config_from_args(parser.parse_args(["--frames", "3"])).num_frames == 3
    options = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(options) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert options["amp"].choices == ("auto", "bf16", "fp16", "off")
    assert "Frames per clip T" in options["num_frames"].help
    with pytest.raises(SystemExit):
        parser.parse_args(["--amp", "fp8"])
    mix = ["--scenes", "rooms", "--path-weights", "orbit=2,walk=1"]
    assert config_from_args(parser.parse_args(mix)).path_weights == "orbit=2,walk=1"


def test_path_weights_and_min_interval_reach_the_dataset() -> None:
    config = TrainConfig(scenes="rooms", path_weights="forward=1", num_scenes=3, batch_size=1)
    assert {runner._dataset(config, 1).scene(i).trajectory for i in range(3)} == {"forward"}
    with pytest.raises(ValueError, match="min_interval"):
        TrainConfig(min_interval=3, max_interval=2)
    fixed = TrainConfig(scenes="rooms", min_interval=2, max_interval=2, num_frames=3)
    data = runner._dataset(fixed, 4)
    for epoch in range(4):  # the whole curriculum, start to end
        data.set_epoch(epoch)
        assert torch.diff(data[0].frame_indices).eq(2).all()
    assert runner._val_dataset(fixed)[0].frame_indices.tolist() == [0, 1, 2]
    assert runner._val_dataset(dataclasses.replace(fixed, val_stride=2))[
        0
    ].frame_indices.tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="val_stride"):
        TrainConfig(val_stride=0)
    with pytest.raises(ValueError, match="scenes='rooms'"):
        TrainConfig(scenes="box", path_weights="orbit=1")
    with pytest.raises(ValueError, match=r"TrainConfig\.path_weights.*unknown camera paths"):
        TrainConfig(scenes="rooms", path_weights="spiral=1")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gradients_equal_the_full_batch(tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo), 2 clips each == one process on the 4 clips."""
    port = _free_port()
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env["OMP_NUM_THREADS"] = "1"
    env.pop("SPATIALMEM_TYPECHECK", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1"]
    cmd += ["--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port)]
    cmd += [__file__, "--ddp-worker", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert sorted(ranks[0]["indices"] + ranks[1]["indices"]) == [0, 1, 2, 3]

    model = tiny_model()
    ds = ddp_dataset()
    full = collate_clips([ds[i] for i in range(4)])
    recorder = GradRecorder(model.parameters())
    stats = train_step(model, full, Spann3RLoss(alpha=0.4), recorder, max_grad_norm=None)
    want = recorded(model, recorder)
    # The loss is a mean of per-sample losses, so the mean of the ranks' losses is the full one.
    mean_loss = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
    assert mean_loss == pytest.approx(stats.loss, rel=1e-5)
    for rank in ranks:
        got = rank["grads"]
        assert {n for n, g in got.items() if g is None} == NO_GRAD
        assert got.keys() == want.keys()
        for name, grad in want.items():
            if grad is not None:
                torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-4, msg=name)
        assert rank["grad_norm"] == pytest.approx(stats.grad_norm, rel=1e-4)
    # The entry point ran under the same torchrun for two steps and rank 0 saved.
    payload = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert payload["step"] == 2
    # 2-frame clips (a pair stage): the memory parts get no gradient and DDP must not wait for one.
    assert torch.load(tmp_path / "pairs.pt", weights_only=True)["step"] == 1


def _ddp_worker(out_dir: Path) -> None:
    ctx = init_distributed(device="cpu")  # a CPU test, also on a machine with one GPU
    assert ctx.distributed and ctx.backend == "gloo"
    model = wrap_ddp(tiny_model(), ctx)
    loader = make_loader(ddp_dataset(), 2, ctx, shuffle=False, collate_fn=collate_clips)
    batch = next(iter(loader))
    recorder = GradRecorder(model.parameters())
    stats = train_step(model, batch, Spann3RLoss(alpha=0.4), recorder, max_grad_norm=None)
    torch.save(
        {
            "grads": recorded(model, recorder),
            "loss": stats.loss,
            "grad_norm": stats.grad_norm,
            "world_size": ctx.world_size,
            "indices": list(loader.sampler),
        },
        out_dir / f"rank{ctx.rank}.pt",
    )
    # The real entry point, as `torchrun -m spatialmem.training` runs it; then on 2-frame clips
    # (a pair stage), where the memory parts get no gradient.
    common = ["spatialmem.training", "--model", "spann3r_tiny", "--batch-size", "1", "--device"]
    common += ["cpu"]
    common += ["--num-scenes", "4", "--height", "32", "--width", "32", "--log-every", "1"]
    for frames, steps, name in ((3, 2, "ddp.pt"), (2, 1, "pairs.pt")):
        sys.argv = [*common, "--frames", str(frames), "--steps", str(steps)]
        sys.argv += ["--out", str(out_dir / name)]
        try:
            runpy.run_module("spatialmem.training", run_name="__main__")
        except SystemExit as exit_:
            assert exit_.code == 0, exit_.code
    cleanup(ctx)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--ddp-worker":
    _ddp_worker(Path(sys.argv[2]))
