"""Streaming in overlapping segments: SegmentedReconstructor against plain streams of each
segment and the similarity fit that chains them."""

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError
from torch import Tensor

from conftest import tiny_spann3r
from spatialmem.geometry import sim3, transform_points, umeyama
from spatialmem.geometry.alignment import trimmed_umeyama
from spatialmem.inference import (
    OnlineReconstructor,
    SegmentedReconstructor,
    Segments,
    SegmentScaleWarning,
)
from spatialmem.models import Spann3R
from spatialmem.pipeline import reconstruct_frames

H, W = 32, 48


@pytest.fixture(scope="module")
def model() -> Spann3R:
    return tiny_spann3r()


def _frames(*shape: int, seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, 3, H, W, generator=gen) * 2 - 1


def _pts(results: list) -> Tensor:
    return torch.stack([r.pts3d for r in results])


def _rotation(angles: Tensor) -> Tensor:
    skew = torch.zeros(3, 3)
    skew[0, 1], skew[0, 2], skew[1, 2] = angles[0], angles[1], angles[2]
    return torch.linalg.matrix_exp(skew - skew.T)


def test_each_segment_is_a_plain_stream_mapped_by_the_fit_on_its_overlap(model: Spann3R) -> None:
    frames = _frames(13)
    seg = Segments(frames=4, overlap=2, trim=0.0)
    got = SegmentedReconstructor(model, seg, optimize=False).run(frames)
    assert [r.index for r in got] == [r.input_index for r in got] == list(range(13))
    plain = OnlineReconstructor(model, optimize=False)
    # First segment (frames 0-5): the plain stream itself, untouched.
    first = plain.run(frames[:6])
    assert torch.equal(_pts(got[:6]), _pts(first))
    # Second segment (frames 4-9): a fresh memory from frame 4, mapped onto frames 4-5.
    second = plain.run(frames[4:10])
    weights = (_pts_conf(second[:2]) * _pts_conf(got[4:6])).reshape(1, -1)
    fit = umeyama(
        _pts(second[:2]).reshape(1, -1, 3), _pts(got[4:6]).reshape(1, -1, 3), weights=weights
    )
    want = transform_points(fit, _pts(second[2:]).reshape(1, -1, 3)).reshape(4, H, W, 3)
    torch.testing.assert_close(_pts(got[6:10]), want, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.stack([r.conf for r in got[6:10]]), _pts_conf(second[2:]))


def _pts_conf(results: list) -> Tensor:
    return torch.stack([r.conf for r in results])


def test_a_stream_within_one_segment_equals_plain_streaming(model: Spann3R) -> None:
    frames = _frames(7)
    got = reconstruct_frames(model, frames, segments=Segments(frames=5, overlap=2))
    want = reconstruct_frames(model, frames)
    assert torch.equal(got.pts3d, want.pts3d) and torch.equal(got.conf, want.conf)


def test_batched_streams_equal_each_stream(model: Spann3R) -> None:
    frames = _frames(2, 11)
    # Without trimming: which pixels a trim keeps is a discrete choice that rounding-level
    # differences between batched and single kernels can flip on random weights. Random
    # weights also make each fit poorly conditioned, so rounding grows ~10x per segment: the
    # comparison is relative to the points' extent (a batching mistake would be of order 1).
    seg = Segments(frames=3, overlap=2, trim=0.0)
    batched = SegmentedReconstructor(model, seg, optimize=False).run(frames)
    assert batched[0].pts3d.shape == (2, H, W, 3)
    for b in range(2):
        single = _pts(SegmentedReconstructor(model, seg, optimize=False).run(frames[b]))
        got = torch.stack([r.pts3d[b] for r in batched])
        assert float((got - single).abs().max() / single.abs().max()) < 1e-3
        torch.testing.assert_close(got[:5], single[:5], atol=1e-5, rtol=1e-5)  # first segment


def test_keyframes_and_counters(model: Spann3R) -> None:
    frames = _frames(17)
    recon = SegmentedReconstructor(model, Segments(frames=2, overlap=1), keyframe_every=2)
    results = recon.run(frames)
    assert [r.input_index for r in results] == list(range(0, 17, 2))
    assert [r.index for r in results] == list(range(9))
    assert recon.num_inputs == 17 and recon.num_processed == 9
    assert recon.num_segments == 1 + math.ceil((9 - 3) / 2)
    assert recon.state is not None
    # The first segment is a stream of its own 3 keyframes (its last from the second head).
    plain = OnlineReconstructor(model, keyframe_every=2).run(frames[:5])
    assert torch.equal(_pts(results[:3]), _pts(plain))


def test_a_refused_frame_leaves_the_stream_intact(model: Spann3R) -> None:
    frames = _frames(9)
    recon = SegmentedReconstructor(model, Segments(frames=2, overlap=2), optimize=False)
    got = [recon.step(f) for f in frames[:2]]
    bad = frames[2].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="frame"):
        recon.step(bad)  # within a segment: the inner stream refuses it, nothing changes
    got += [recon.step(f) for f in frames[2:4]]
    bad = frames[4].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="frame"):
        recon.step(bad)  # at a segment boundary: nothing may have changed
    with pytest.raises(ValueError, match="shape"):
        recon.step(_frames(1)[0][:, :16])
    got += [recon.step(f) for f in frames[4:]] + [recon.finish()]
    want = SegmentedReconstructor(model, Segments(frames=2, overlap=2), optimize=False).run(frames)
    assert torch.equal(_pts([r for r in got if r is not None]), _pts(want))
    with pytest.raises(RuntimeError, match="finished"):
        recon.step(frames[0])


class _ScaledFits(SegmentedReconstructor):
    """Every later segment's fit scaled by ``factor`` more than the previous one's: the
    compounding of a model that draws each segment's last frames smaller."""

    factor = 1.0

    def _fit(self, local: list, anchors: list) -> Tensor:
        sim = torch.eye(4).expand(self._batch, 4, 4).clone()
        sim[:, :3, :3] *= self.factor ** (len(self._scales) + 1)
        return sim


def test_segment_scales_record_each_fit(model: Spann3R) -> None:
    recon = SegmentedReconstructor(model, Segments(frames=3, overlap=2), optimize=False)
    assert recon.segment_scales is None
    recon.run(_frames(5))  # one segment
    assert torch.equal(recon.segment_scales, torch.ones(1))
    scales = []
    recon.reset()
    for frame in _frames(11):
        recon.step(frame)
        if recon._sim is not None and len(scales) < recon.num_segments - 1:
            scales.append(float(torch.linalg.det(recon._sim[0, :3, :3]).abs() ** (1 / 3)))
    recon.finish()
    got = recon.segment_scales
    assert got.shape == (recon.num_segments,) == (3,)
    torch.testing.assert_close(got, torch.tensor([1.0, *scales]))
    batched = SegmentedReconstructor(model, Segments(frames=3, overlap=2), optimize=False)
    batched.run(_frames(2, 11))
    assert batched.segment_scales.shape == (3, 2)
    assert torch.equal(batched.segment_scales[0], torch.ones(2))


def test_a_runaway_segment_scale_warns_once_at_the_end(model: Spann3R) -> None:
    frames = _frames(10)  # segments of 2 + 2: 4 segments
    recon = _ScaledFits(model, Segments(frames=2, overlap=2), optimize=False)
    recon.factor = 0.5  # 0.5 ** 3 = 1 / 8 by the last segment
    with pytest.warns(SegmentScaleWarning, match=r"from 0\.125 to 0\.5") as caught:
        recon.run(frames)
    assert len(caught) == 1, [(w.filename, str(w.message)[:80]) for w in caught]
    assert caught[0].filename == __file__  # names the user's call, not the library's
    torch.testing.assert_close(recon.segment_scales, 0.5 ** torch.arange(4.0))
    recon.factor = 1.5  # 1.5 ** 3 = 3.4: within the default bound of 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", SegmentScaleWarning)
        recon.run(frames)
        off = _ScaledFits(model, Segments(frames=2, overlap=2, warn_scale=0.0), optimize=False)
        off.factor = 0.1
        off.run(frames)
    recon.factor = 1.8  # 1.8 ** 3 = 5.8
    with pytest.warns(SegmentScaleWarning, match=r"5\.83"):
        recon.run(frames)


def test_bad_settings_are_refused(model: Spann3R) -> None:
    for bad in ({"warn_scale": 1.0}, {"warn_scale": -2.0}, {"warn_scale": True}):
        with pytest.raises((ValueError, TypeCheckError), match=r"warn_scale|parameters"):
            Segments(**bad)  # type: ignore[arg-type]
    for bad in ({"frames": 0}, {"overlap": 0}, {"frames": 2.5}, {"trim": 1.0}, {"trim": -0.1}):
        with pytest.raises((ValueError, TypeCheckError), match=rf"{next(iter(bad))}|parameters"):
            Segments(**bad)  # type: ignore[arg-type]
    with pytest.raises((TypeError, TypeCheckError), match=r"Segments|parameters"):
        SegmentedReconstructor(model, (6, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keyframe_every"):
        SegmentedReconstructor(model, keyframe_every=0)
    with pytest.raises(ValueError, match="at least 2"):
        SegmentedReconstructor(model).run(_frames(1))


@given(
    angles=st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3),
    log_scale=st.floats(-1.0, 1.0),
    shift=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
)
def test_the_fit_recovers_a_similarity_despite_outliers(
    angles: list[float], log_scale: float, shift: list[float]
) -> None:
    gen = torch.Generator().manual_seed(0)
    local = torch.randn(1, 400, 3, generator=gen)
    truth = sim3(torch.tensor(math.exp(log_scale)), _rotation(torch.tensor(angles)),
                 torch.tensor(shift))[None]  # fmt: skip
    world = transform_points(truth, local)
    world[:, :60] += 5.0 * torch.randn(1, 60, 3, generator=gen)  # 15 % gross outliers
    weights = torch.ones(1, 400)
    fit = trimmed_umeyama(local, world, weights, trim=0.3)
    clean = transform_points(truth, local[:, 60:])
    torch.testing.assert_close(transform_points(fit, local[:, 60:]), clean, atol=1e-3, rtol=1e-3)
    untrimmed = trimmed_umeyama(local, world, weights, trim=0.0)
    assert (transform_points(untrimmed, local[:, 60:]) - clean).norm(dim=-1).mean() > 1e-2


def test_recommended_segments_cut_only_the_short_horizon_preset() -> None:
    from spatialmem.inference import recommended_segments

    assert recommended_segments("spann3r_small_synthetic") == Segments()
    for name in ("spann3r_vitl_dpt512", "spann3r_tiny", "no_such_model"):
        assert recommended_segments(name) is None
    with pytest.raises(TypeError, match="model_name"):
        recommended_segments(None)  # type: ignore[arg-type]
