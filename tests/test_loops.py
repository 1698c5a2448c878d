"""Loop closure of segmented streams: revisit detection, the pose graph's corrections, what
stays untouched without loops, batched streams and the settings' errors."""

import pytest
import torch
from torch import Tensor

from conftest import random_similarity, tiny_spann3r
from spatialmem.geometry import invert_sim3, transform_points
from spatialmem.inference import FrameResult, LoopClosure, SegmentedReconstructor, Segments
from spatialmem.inference.loops import LoopGraph
from spatialmem.models import Spann3R

H, W = 32, 48
# Segments of 3 new frames on an overlap of 2: frame 12 is three segments after frame 0.
CUT = {"frames": 3, "overlap": 2}
ALWAYS_KEEP = {"max_residual_ratio": 1e9, "max_overlap_growth": 1e9}


@pytest.fixture(scope="module")
def model() -> Spann3R:
    return tiny_spann3r()


def _frames(count: int, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, H, W, generator=gen) * 2 - 1


def _revisit(count: int = 12) -> Tensor:
    """``count`` different frames, then the first three again."""
    frames = _frames(count)
    return torch.cat([frames, frames[:3]])


def _pts(results: list) -> Tensor:
    return torch.stack([r.pts3d for r in results])


def _run(model: Spann3R, frames: Tensor, loops: LoopClosure | None) -> SegmentedReconstructor:
    recon = SegmentedReconstructor(model, Segments(**CUT, loop_closure=loops), optimize=False)
    recon.results = recon.run(frames)  # type: ignore[attr-defined]
    return recon


def test_without_a_revisit_nothing_changes(model: Spann3R) -> None:
    frames = _frames(15)
    closed = _run(model, frames, LoopClosure())
    chained = _run(model, frames, None)
    assert closed.loops == [] and chained.loops is None
    assert torch.equal(_pts(closed.results), _pts(chained.results))


def test_a_revisit_is_found_paired_and_moves_the_later_segments(model: Spann3R) -> None:
    frames = _revisit()
    recon = _run(model, frames, LoopClosure(**ALWAYS_KEEP))
    # Frame 12 repeats frame 0; frames 13 and 14 come within `spacing` of it.
    assert recon.loops == [(0, 12)]
    chained = _run(model, frames, None).results
    assert torch.equal(_pts(recon.results)[0], _pts(chained)[0])  # the fixed node's frame
    assert not torch.equal(_pts(recon.results)[12:], _pts(chained)[12:])
    assert bool(torch.isfinite(_pts(recon.results)).all())


def test_the_pose_graph_undoes_a_drifting_chain_when_the_loop_closes() -> None:
    """Exact predictions in every segment's and the pair's own coordinates, and chained poses
    that drift a little more at every segment: closing the loop puts every frame back."""
    gen = torch.Generator().manual_seed(0)
    num_frames, length, new = 14, 5, 3  # segments: frames 0-4, 3-7, 6-10, 9-13
    world = torch.randn(num_frames, H, W, 3, generator=gen) * 2
    images = torch.rand(num_frames, 3, H, W, generator=gen) * 2 - 1
    images[12] = images[0]  # frame 12 sees what frame 0 saw
    world[12] = world[0]
    pair_frame = random_similarity(gen, 0.5)  # the pair's own coordinates

    def result(index: int, points: Tensor) -> FrameResult:
        conf = torch.ones(H, W)
        return FrameResult(index, index, points, conf, images[index])

    def run_pair(early: Tensor, late: Tensor) -> tuple[FrameResult, FrameResult]:
        assert torch.equal(early, images[0]) and torch.equal(late, images[12])
        local = [
            transform_points(invert_sim3(pair_frame)[None], world[i][None])[0] for i in (0, 12)
        ]
        return result(0, local[0]), result(12, local[1])

    graph = LoopGraph(LoopClosure(min_similarity=0.9), run_pair)
    starts = list(range(0, num_frames - length + 1, new))
    drift = random_similarity(gen, 0.05)
    chained = []
    for k, start in enumerate(starts):
        truth = random_similarity(gen, 1.0) if k else torch.eye(4)
        chained.append(truth @ torch.linalg.matrix_power(drift, k))
        graph.start_segment(chained[-1][None])
        for frame in range(start, start + length):
            local = transform_points(invert_sim3(truth)[None], world[frame][None])[0]
            # Frames first seen by this segment are returned by it; the others are its overlap.
            returned = k == 0 or frame >= start + length - new
            graph.add_points(result(frame, local), frame, returned=returned)
            if returned:
                graph.add_frame(frame, images[frame][None])
    graph.solve()
    assert graph.closed == [[(0, 12)]]
    for frame in range(num_frames):
        segment = graph._returned_by[frame]
        local = graph._segments[segment].frames[frame][0][0]  # sampled points, [M, 3]
        pose = graph.correction_of(frame)[0] @ chained[segment]
        drawn = transform_points(pose[None], local[None])[0]
        sampled = world[frame].reshape(-1, 3)[graph._grid]
        torch.testing.assert_close(drawn, sampled, atol=1e-3, rtol=1e-3)


def test_run_is_the_stream_passed_through_close_loops(model: Spann3R) -> None:
    frames = _revisit()
    recon = SegmentedReconstructor(
        model, Segments(**CUT, loop_closure=LoopClosure(**ALWAYS_KEEP)), optimize=False
    )
    streamed = list(recon.stream(frames))
    closed = recon.close_loops(streamed)
    assert [r.index for r in closed] == list(range(15))
    assert torch.equal(_pts(closed), _pts(recon.run(frames)))
    assert recon.segment_scales is not None and recon.segment_scales.shape == (recon.num_segments,)


def test_close_loops_needs_a_finished_stream(model: Spann3R) -> None:
    recon = SegmentedReconstructor(model, Segments(**CUT), optimize=False)
    results = [recon.step(f) for f in _frames(4)]
    with pytest.raises(RuntimeError, match="finish"):
        recon.close_loops([r for r in results if r is not None])


def test_batched_streams_close_their_own_loops(model: Spann3R) -> None:
    frames = torch.stack([_revisit(), _frames(15, seed=7)])  # [B, T, 3, H, W]
    recon = _run(model, frames, LoopClosure(**ALWAYS_KEEP))
    assert recon.loops == [[(0, 12)], []]
    chained = _run(model, frames, None).results
    # The stream without a revisit keeps its chained points bit for bit.
    assert torch.equal(_pts(recon.results)[:, 1], _pts(chained)[:, 1])
    assert not torch.equal(_pts(recon.results)[12:, 0], _pts(chained)[12:, 0])


class SameEverywhere(LoopClosure):
    """Every frame looks alike: every eligible frame is a revisit."""

    def describe(self, images: Tensor) -> Tensor:
        return torch.ones(images.shape[0], 4) / 2


def test_describe_can_be_overridden(model: Spann3R) -> None:
    recon = _run(model, _frames(17), SameEverywhere(spacing=3, **ALWAYS_KEEP))
    # Frames are first fed to segments 0 (frames 0-4), 1 (5-7), 2 (8-10), 3 (11-13), ...: the
    # first frame two segments after segment 0 is 8, and then one every `spacing` frames.
    assert recon.loops is not None
    assert [late for _, late in recon.loops] == [8, 11, 14]
    assert all(early <= late - 5 for early, late in recon.loops)


class Flat(LoopClosure):
    """A descriptor of the wrong shape."""

    def describe(self, images: Tensor) -> Tensor:
        return torch.ones(images.shape[0] * 4)


@pytest.mark.usefixtures("without_typecheck")
def test_a_descriptor_of_the_wrong_shape_is_named(model: Spann3R) -> None:
    recon = SegmentedReconstructor(model, Segments(**CUT, loop_closure=Flat()), optimize=False)
    with pytest.raises(ValueError, match=r"Flat.describe.*\[B, D\]"):
        recon.run(_frames(4))


def test_descriptors_are_unit_length_and_ignore_brightness() -> None:
    images = _frames(3)
    loops = LoopClosure(thumbnail=(4, 6))
    got = loops.describe(images)
    assert got.shape == (3, 3 * 4 * 6)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(loops.describe(images * 0.5 + 0.2), got, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_similarity": 1.5}, "min_similarity"),
        ({"spacing": 0}, "spacing"),
        ({"points_per_frame": True}, "points_per_frame"),
        ({"thumbnail": (0, 4)}, "thumbnail"),
        ({"thumbnail": 8}, "thumbnail"),
        ({"trim": 1.0}, "trim"),
        ({"max_residual_ratio": 0.5}, "max_residual_ratio"),
        ({"max_overlap_growth": "2"}, "max_overlap_growth"),
    ],
)
@pytest.mark.usefixtures("without_typecheck")
def test_bad_settings_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoopClosure(**kwargs)


def test_segments_take_a_loop_closure_or_none() -> None:
    with pytest.raises(TypeError, match="loop_closure"):
        Segments(loop_closure=True)  # type: ignore[arg-type]
    assert Segments(loop_closure=None).loop_closure is None
    assert isinstance(Segments().loop_closure, LoopClosure)
