"""The Spann3R assembly: modes, skipped work, memory subclasses, batching and bad input."""

import pytest
import torch

import spatialmem as sm
from conftest import tiny_spann3r
from spatialmem.memory import MemoryConfig, SpatialMemory
from spatialmem.models import Spann3R, Spann3RConfig, replace_memory


def _frames(b: int, t: int, h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, h, w, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def model() -> Spann3R:
    return tiny_spann3r()


class NewestFirst(SpatialMemory):
    """The design note's example policy: keep the newest long-term tokens."""

    def consolidation_scores(self, state):
        return -state.age.float()


def test_shapes_and_the_reference_frame(model: Spann3R) -> None:
    frames = _frames(2, 4)
    with torch.no_grad():
        out = model(frames)
        pair = model.dust3r(frames[:, 0], frames[:, 1])
    assert out.pts3d.shape == (2, 4, 32, 48, 3) and out.conf.shape == (2, 4, 32, 48)
    # Frame 0 is the reference: step 0 reads no memory, so its points are the pair model's
    # view-1 prediction of (frame 0, frame 1), in frame 0's own camera frame.
    torch.testing.assert_close(out.pts3d[:, 0], pair.view1.pts3d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.conf[:, 0], pair.view1.conf, atol=1e-5, rtol=1e-5)
    assert out.steps is None and bool((out.conf >= 1).all())
    assert out.memory.count.tolist() == [6 * 4 - 6, 6 * 4 - 6]  # 3 insertions of P = 6


def test_skipping_the_second_head_changes_nothing(model: Spann3R) -> None:
    frames = _frames(1, 5, seed=1)
    with torch.no_grad():
        lean = model(frames)
        full = model(frames, return_steps=True)
    assert torch.equal(lean.pts3d, full.pts3d) and torch.equal(lean.conf, full.conf)
    assert full.steps is not None
    assert torch.equal(full.steps.pts_view1, full.pts3d[:, :-1])
    assert torch.equal(full.steps.pts_view2[:, -1], full.pts3d[:, -1])


def test_dropping_the_final_memory_changes_no_prediction(model: Spann3R) -> None:
    frames = _frames(1, 4, seed=3)
    with torch.no_grad():
        kept = model(frames, return_steps=True)
        dropped = model(frames, return_steps=True, return_memory=False)
    assert dropped.memory is None and kept.memory is not None
    assert torch.equal(kept.pts3d, dropped.pts3d) and torch.equal(kept.conf, dropped.conf)
    assert kept.steps is not None and dropped.steps is not None
    assert torch.equal(kept.steps.pts_view2, dropped.steps.pts_view2)


def test_a_pair_clip_without_final_memory_leaves_the_memory_parts_out() -> None:
    """On 2 frames nothing reads the memory: without the final write the memory encoder is not
    run at all, so it gets no gradient (what a 2-frame training stage relies on)."""
    torch.manual_seed(0)
    model = sm.create_model("spann3r_tiny").train()
    out = model(_frames(1, 2), return_memory=False)
    assert out.steps is not None
    (out.steps.pts_view2.sum() + out.steps.pts_view1.sum()).backward()
    assert all(p.grad is None for p in model.memory_encoder.parameters())
    assert any(p.grad is not None for p in model.dust3r.parameters())


def test_batch_equals_per_sample_with_different_gate_decisions(model: Spann3R) -> None:
    frames = _frames(2, 5, seed=2)
    # Sample 0: a static camera from frame 1 on, so its gate skips the insertions of frames 2
    # and 3 (similarity ~0.998 > 0.95); sample 1 moves and inserts every frame (max ~0.69).
    frames[0, 2:] = frames[0, 1]
    with torch.no_grad():
        both = model(frames)
        alone = [model(frames[b : b + 1]) for b in range(2)]
    p = (32 // 16) * (48 // 16)
    assert both.memory.count.tolist() == [2 * p, 4 * p], "the per-sample gates must differ"
    for b in range(2):
        torch.testing.assert_close(both.pts3d[b], alone[b].pts3d[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both.conf[b], alone[b].conf[0], atol=1e-5, rtol=1e-5)
        assert int(both.memory.count[b]) == int(alone[b].memory.count[0])


def test_training_mode_returns_every_step_and_inserts_every_frame() -> None:
    torch.manual_seed(0)
    model = sm.create_model("spann3r_tiny").train()
    out = model(_frames(1, 4))
    assert out.steps is not None and out.steps.num_steps == 3
    assert out.memory.count.tolist() == [3 * 6]
    assert out.steps.pts_view2.requires_grad


def test_memory_subclass_from_the_registry() -> None:
    torch.manual_seed(0)
    model = sm.create_model("spann3r_tiny", memory=NewestFirst)
    assert type(model.memory) is NewestFirst
    assert model.memory.config.dim == model.config.mem_dim


def test_memory_options_through_the_config() -> None:
    config = replace_memory(Spann3RConfig(), work_mem_frames=2, long_mem_tokens=12)
    assert config.memory_config.work_mem_frames == 2
    torch.manual_seed(0)
    model = sm.create_model("spann3r_tiny", memory=None, mem_enc_depth=1)
    small = sm.create_model(
        "spann3r_tiny",
        memory=SpatialMemory(MemoryConfig(dim=64, long_mem_tokens=12, sim_thresh=1.0)),
    )
    assert len(model.memory_encoder.blocks) == 1
    with torch.no_grad():
        out = small.eval()(_frames(1, 10, seed=3))
    # 9 insertions of P = 6 tokens (no gate with sim_thresh=1.0) overflow 5 working frames plus
    # 12 long-term tokens: the small memory consolidated.
    assert int(out.memory.count[0]) < 9 * 6
    assert int(out.memory.long_tokens[0]) <= 12 and int(out.memory.work_frames[0]) == 5
    with pytest.raises(ValueError, match="width"):
        sm.create_model("spann3r_tiny", memory=SpatialMemory(MemoryConfig(dim=32)))
    with pytest.raises(ValueError, match=r"memory\.dim"):
        Spann3RConfig(memory=MemoryConfig(dim=32))


def test_portrait_frames_keep_their_shape(model: Spann3R) -> None:
    with torch.no_grad():
        out = model(_frames(1, 3, h=48, w=32))
    assert out.pts3d.shape == (1, 3, 48, 32, 3)


@pytest.mark.usefixtures("without_typecheck")
def test_bad_input_is_refused(model: Spann3R) -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        model(_frames(1, 1))
    with pytest.raises(ValueError, match="B T 3 H W"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model(_frames(1, 3, h=30))
    bad = _frames(1, 3)
    bad[0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad)
    with pytest.raises(TypeError, match="SpatialMemory"):
        Spann3R(memory=42)  # type: ignore[arg-type]
