"""Streaming reconstruction: OnlineReconstructor against Spann3R.forward."""

import dataclasses
import io
import logging
import sys

import pytest
import torch
from torch import Tensor

import spatialmem as sm
from spatialmem.inference import FrameResult, OnlineReconstructor
from spatialmem.memory import MemoryConfig, MemoryState, SpatialMemory
from spatialmem.models import Spann3R

TOL = 1e-5
H, W = 32, 48


def _model(**memory: object) -> Spann3R:
    torch.manual_seed(0)
    mem = SpatialMemory(MemoryConfig(dim=64, **memory)) if memory else None  # type: ignore[arg-type]
    model = sm.create_model("spann3r_tiny", memory=mem)
    assert isinstance(model, Spann3R)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> Spann3R:
    return _model()


@pytest.fixture(scope="module")
def small_memory_model() -> Spann3R:
    """Consolidates within a few frames at 32x48 (6 patches per frame)."""
    return _model(work_mem_frames=2, long_mem_tokens=12, sim_thresh=1.0)


def _frames(*shape: int, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, 3, H, W, generator=gen) * 2 - 1


def _stack(results: list[FrameResult], dim: int = 0) -> tuple[Tensor, Tensor]:
    return (
        torch.stack([r.pts3d for r in results], dim=dim),
        torch.stack([r.conf for r in results], dim=dim),
    )


def _assert_same_memory(got: MemoryState | None, want: MemoryState) -> None:
    assert got is not None
    for name in ("count", "work_frames", "long_tokens", "valid", "age"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    mask = want.valid[..., None]
    torch.testing.assert_close(got.keys * mask, want.keys * mask, atol=TOL, rtol=TOL)
    torch.testing.assert_close(got.values * mask, want.values * mask, atol=TOL, rtol=TOL)
    torch.testing.assert_close(got.attn, want.attn, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("which", ["default", "small_memory"])
def test_step_by_step_equals_forward(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue("model" if which == "default" else "small_memory_model")
    frames = _frames(7)
    recon = OnlineReconstructor(model)
    results = []
    for t, frame in enumerate(frames):
        out = recon.step(frame)
        if t == 0:
            assert out is None and recon.state is None
        else:
            assert out is not None and out.index == out.input_index == t - 1 and out.final
            results.append(out)
    last = recon.finish()
    assert last is not None and last.index == 6 and recon.finished
    results.append(last)

    with torch.inference_mode():
        ref = model(frames[None])
    pts, conf = _stack(results)
    assert pts.shape == (7, H, W, 3) and conf.shape == (7, H, W)
    torch.testing.assert_close(pts, ref.pts3d[0], atol=TOL, rtol=TOL)
    torch.testing.assert_close(conf, ref.conf[0], atol=TOL, rtol=TOL)
    torch.testing.assert_close(torch.stack([r.image for r in results]), frames)
    _assert_same_memory(recon.state, ref.memory)
    if which == "small_memory":  # the consolidation path was exercised
        assert int(ref.memory.long_tokens[0]) <= 12 and int(ref.memory.count[0]) < 6 * 6


def test_batch_of_streams_equals_each_stream(model: Spann3R) -> None:
    frames = torch.stack([_frames(5, seed=2), _frames(5, seed=3)])  # [B=2, T=5, 3, H, W]
    batched = OnlineReconstructor(model).run(frames)  # the forward layout
    assert len(batched) == 5 and batched[0].pts3d.shape == (2, H, W, 3)
    pts, conf = _stack(batched, dim=1)
    single = OnlineReconstructor(model)
    for b in range(2):
        one = single.run(frames[b])
        assert one[0].pts3d.shape == (H, W, 3) and one[0].image.shape == (3, H, W)
        pts_b, conf_b = _stack(one)
        torch.testing.assert_close(pts[b], pts_b, atol=TOL, rtol=TOL)
        torch.testing.assert_close(conf[b], conf_b, atol=TOL, rtol=TOL)
    with torch.inference_mode():
        ref = model(frames)
    torch.testing.assert_close(pts, ref.pts3d, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("n_inputs", [7, 6])
def test_keyframes_equal_forward_on_the_subsampled_sequence(model: Spann3R, n_inputs: int) -> None:
    frames = _frames(n_inputs)
    recon = OnlineReconstructor(model, keyframe_every=2)
    returned = [recon.step(f) for f in frames]
    assert all(r is None for r in returned[1::2])  # skipped frames
    results = [r for r in returned if r is not None]
    last = recon.finish()
    assert last is not None
    results.append(last)
    kept = frames[::2]  # 0, 2, 4, (6): a last odd input frame is not reconstructed
    assert recon.num_inputs == n_inputs and recon.num_processed == len(kept) == len(results)
    assert [r.index for r in results] == list(range(len(kept)))
    assert [r.input_index for r in results] == list(range(0, n_inputs, 2))
    with torch.inference_mode():
        ref = model(kept[None])
    pts, conf = _stack(results)
    torch.testing.assert_close(pts, ref.pts3d[0], atol=TOL, rtol=TOL)
    torch.testing.assert_close(conf, ref.conf[0], atol=TOL, rtol=TOL)
    _assert_same_memory(recon.state, ref.memory)


def test_reset_then_rerun_is_identical(small_memory_model: Spann3R) -> None:
    frames = _frames(6)
    recon = OnlineReconstructor(small_memory_model)
    first = recon.run(frames)
    state = recon.state
    assert state is not None
    snapshot = state.clone()
    recon.reset()
    for f in _frames(3, seed=9):  # an unfinished stream of another content in between
        recon.step(f)
    recon.reset()
    assert recon.state is None and recon.num_inputs == 0 and not recon.finished
    again = [r for r in (recon.step(f) for f in frames) if r is not None]
    last = recon.finish()
    assert last is not None
    again.append(last)
    for a, b in zip(first, again, strict=True):
        assert a.index == b.index
        assert torch.equal(a.pts3d, b.pts3d) and torch.equal(a.conf, b.conf)
    assert recon.state is not None and torch.equal(recon.state.keys, snapshot.keys)
    assert torch.equal(recon.state.count, snapshot.count)


def _held_bytes(recon: OnlineReconstructor) -> int:
    """Bytes of every tensor the reconstructor holds (the model's weights excluded)."""
    seen: set[int] = set()

    def visit(v: object) -> int:
        if isinstance(v, Tensor):
            if id(v) in seen:
                return 0
            seen.add(id(v))
            return v.numel() * v.element_size()
        if isinstance(v, (list, tuple)):
            return sum(visit(x) for x in v)
        if isinstance(v, dict):
            return sum(visit(x) for x in v.values())
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return sum(visit(getattr(v, f.name)) for f in dataclasses.fields(v))
        return 0

    return sum(visit(v) for k, v in vars(recon).items() if k != "model")


def test_long_stream_keeps_constant_memory() -> None:
    model = _model(work_mem_frames=2, long_mem_tokens=8, sim_thresh=1.0)
    frames = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    recon = OnlineReconstructor(model)
    sizes, shapes, counts = [], set(), []
    for t, result in enumerate(recon.stream(frames)):
        state = recon.state
        if t >= 2 and state is not None and not recon.finished:
            sizes.append(_held_bytes(recon))
            shapes.add(tuple(tuple(getattr(state, n).shape) for n in ("keys", "values", "age")))
            counts.append(int(state.count[0]))
        assert result.pts3d.shape == (32, 32, 3)
    assert len(sizes) > 30 and len(set(sizes)) == 1, "the reconstructor's tensors grew"
    assert len(shapes) == 1  # fixed capacity: long-term budget + working memory + one frame
    state = recon.state
    assert state is not None and state.capacity == model.memory.config.capacity(4)
    assert max(counts) <= 8 + 2 * 4 and int(state.long_tokens[0]) <= 8  # consolidated


def test_deferred_second_head_changes_nothing(model: Spann3R) -> None:
    frames = _frames(5)
    with torch.inference_mode():
        ref = model(frames[None], return_steps=True)
    assert ref.steps is not None
    lazy = OnlineReconstructor(model).run(frames)
    eager = OnlineReconstructor(model, preview=True)
    results = []
    for t, frame in enumerate(frames):
        out = eager.step(frame)
        if out is not None:
            results.append(out)
        preview = eager.preview
        if t == 0:
            assert preview is None
        else:  # the newest frame as view 2 of the latest step
            assert preview is not None and not preview.final and preview.index == t
            torch.testing.assert_close(
                preview.pts3d, ref.steps.pts_view2[0, t - 1], atol=TOL, rtol=TOL
            )
            torch.testing.assert_close(
                preview.conf, ref.steps.conf_view2[0, t - 1], atol=TOL, rtol=TOL
            )
    last = eager.finish()
    assert last is not None and last.final
    results.append(last)
    torch.testing.assert_close(lazy[-1].pts3d, ref.steps.pts_view2[0, -1], atol=TOL, rtol=TOL)
    torch.testing.assert_close(lazy[-1].conf, ref.steps.conf_view2[0, -1], atol=TOL, rtol=TOL)
    for a, b in zip(lazy, results, strict=True):
        torch.testing.assert_close(a.pts3d, b.pts3d, atol=TOL, rtol=TOL)
        torch.testing.assert_close(a.conf, b.conf, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("pause_after", [1, 3])
def test_pause_save_resume(small_memory_model: Spann3R, pause_after: int) -> None:
    frames = _frames(6)
    whole = OnlineReconstructor(small_memory_model).run(frames)
    first = OnlineReconstructor(small_memory_model)
    before = [r for r in (first.step(f) for f in frames[:pause_after]) if r is not None]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = OnlineReconstructor(small_memory_model)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    after = resumed.run(frames[pause_after:], reset=False)
    got = before + after
    assert [r.index for r in got] == list(range(6))
    for a, b in zip(whole, got, strict=True):
        torch.testing.assert_close(a.pts3d, b.pts3d, atol=TOL, rtol=TOL)


def test_caller_may_reuse_its_frame_buffer(model: Spann3R) -> None:
    frames = _frames(4)
    buffer = torch.empty(3, H, W)
    recon = OnlineReconstructor(model)
    results = []
    for f in frames:
        buffer.copy_(f)  # e.g. a camera writing into one buffer
        out = recon.step(buffer)
        if out is not None:
            results.append(out)
    results.append(recon.finish())  # type: ignore[arg-type]
    with torch.inference_mode():
        ref = model(frames[None])
    torch.testing.assert_close(_stack(results)[0], ref.pts3d[0], atol=TOL, rtol=TOL)
    torch.testing.assert_close(results[0].image, frames[0])


def test_progress_bar_is_optional(
    model: Spann3R, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    frames = _frames(3)
    with_bar = OnlineReconstructor(model).run(frames, progress=True)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with caplog.at_level(logging.DEBUG, logger="spatialmem.inference.online"):
        without = OnlineReconstructor(model).run(iter(list(frames)), progress=True)
    assert "tqdm is not installed" in caplog.text
    assert len(with_bar) == len(without) == 3
    assert torch.equal(with_bar[-1].pts3d, without[-1].pts3d)


def test_empty_stream_finishes_with_nothing(model: Spann3R) -> None:
    recon = OnlineReconstructor(model)
    assert recon.finish() is None  # finish() without frames is allowed (nothing to return)
    with pytest.raises(ValueError, match="`frames` is empty"):
        recon.run([])
    with pytest.raises(ValueError, match="`frames` is empty"):
        list(recon.stream(iter([])))


@pytest.mark.usefixtures("without_typecheck")
def test_bad_inputs_raise_clear_errors(model: Spann3R) -> None:
    with pytest.raises(TypeError, match="Spann3R"):
        OnlineReconstructor(sm.create_model("dust3r_tiny_linear"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keyframe_every"):
        OnlineReconstructor(model, keyframe_every=0)
    model.train()
    try:
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            OnlineReconstructor(model)
    finally:
        model.eval()

    recon = OnlineReconstructor(model)
    with pytest.raises(TypeError, match="frame"):
        recon.step(torch.zeros(3, H, W).numpy())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        recon.step(torch.zeros(3, H, W, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[3, H, W\].*\(32, 48\)"):
        recon.step(torch.zeros(H, W))
    with pytest.raises(ValueError, match=r"\(4, 32, 48\)"):
        recon.step(torch.zeros(4, H, W))
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        recon.step(torch.zeros(3, 30, W))
    with pytest.raises(ValueError, match="NaN"):
        recon.step(torch.full((3, H, W), float("nan")))
    assert recon.num_inputs == 0  # rejected frames are not counted

    recon.step(torch.zeros(3, H, W))
    with pytest.raises(ValueError, match=r"shape \(3, 32, 32\).*\(3, 32, 48\)"):
        recon.step(torch.zeros(3, H, H))
    with pytest.raises(ValueError, match="size and batch"):
        recon.step(torch.zeros(1, 3, H, W))
    with pytest.raises(ValueError, match="at least 2 processed frames"):
        recon.finish()
    recon.step(torch.zeros(3, H, W))
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            recon.step(torch.zeros(3, H, W))
    finally:
        model.eval()
    assert recon.finish() is not None
    with pytest.raises(RuntimeError, match="reset"):
        recon.step(torch.zeros(3, H, W))
    with pytest.raises(RuntimeError, match="reset"):
        recon.finish()

    other = OnlineReconstructor(model, keyframe_every=3)
    with pytest.raises(ValueError, match="keyframe_every"):
        other.load_state_dict(recon.state_dict())
