"""Curriculum clip sampler (Spann3R supplementary Eq. 14-15)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from spatialmem.data import (
    CurriculumClips,
    CurriculumConfig,
    active_ratio,
    sample_clip_indices,
    sampling_interval,
    training_progress,
)

progress_st = st.floats(0.0, 1.0, allow_nan=False)
mode_st = st.sampled_from(["stride", "window"])


# --- Eq. 15: active ratio ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eta", "want"),
    [
        (0.0, 0.0),
        (0.1, 0.2),
        (0.25, 0.5),
        (0.5, 1.0),
        (0.6, 1.0),
        (0.75, 1.0),  # 4 - 4 * 0.75 = 1: continuous at the switch
        (0.8, 0.8),
        (0.875, 0.5),
        (0.9, 0.5),  # 4 - 3.6 = 0.4 clipped to 0.5
        (1.0, 0.5),
        (1, 0.5),  # an int is a valid training ratio
    ],
)
def test_active_ratio_hand_values(eta: float, want: float) -> None:
    assert active_ratio(eta) == pytest.approx(want)


@given(progress_st)
def test_active_ratio_matches_eq15(eta: float) -> None:
    want = min(1.0, 2 * eta) if eta < 0.75 else max(0.5, 4 - 4 * eta)
    assert active_ratio(eta) == pytest.approx(want)
    assert 0.0 <= active_ratio(eta) <= 1.0


@given(st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_active_ratio_grows_in_first_half(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert active_ratio(lo) <= active_ratio(hi)


@given(st.floats(0.75, 1.0), st.floats(0.75, 1.0))
def test_active_ratio_shrinks_in_last_quarter(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert active_ratio(lo) >= active_ratio(hi)


# --- Eq. 14: sampling interval ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("eta", "want"),
    # T_min = 1, T_max = 9: interval = 1 + 8 * eta_a
    [(0.0, 1.0), (0.25, 5.0), (0.5, 9.0), (0.7, 9.0), (0.8, 7.4), (0.95, 5.0)],
)
def test_sampling_interval_hand_values(eta: float, want: float) -> None:
    assert sampling_interval(eta, 1, 9) == pytest.approx(want)


@given(progress_st, st.floats(1.0, 50.0), st.floats(0.0, 50.0))
def test_sampling_interval_matches_eq14(eta: float, t_min: float, extra: float) -> None:
    t_max = t_min + extra
    got = sampling_interval(eta, t_min, t_max)
    assert got == pytest.approx(t_min + active_ratio(eta) * (t_max - t_min))
    assert t_min - 1e-9 <= got <= t_max + 1e-9


def test_config_interval_rounds_to_nearest() -> None:
    cfg = CurriculumConfig(min_interval=1, max_interval=9)
    assert [cfg.interval(e) for e in (0.0, 0.25, 0.5, 0.8, 1.0)] == [1, 5, 9, 7, 5]
    # 1 + 0.5 * 2 * ... : halves round up (interval 1.5 -> 2)
    assert CurriculumConfig(min_interval=1, max_interval=2).interval(0.25) == 2


def test_training_progress() -> None:
    assert training_progress(0, 10) == 0.0
    assert training_progress(3, 12) == 0.25
    assert training_progress(2.5, 10) == 0.25
    assert training_progress(10, 10) == 1.0


# --- clip indices -----------------------------------------------------------------------------


@given(
    n_video=st.integers(2, 400),
    num_frames=st.integers(2, 8),
    t_min=st.integers(1, 4),
    extra=st.integers(0, 30),
    eta=progress_st,
    mode=mode_st,
    seed=st.integers(0, 2**31 - 1),
)
def test_clip_indices_valid(
    n_video: int, num_frames: int, t_min: int, extra: int, eta: float, mode: str, seed: int
) -> None:
    n_video = max(n_video, num_frames)
    cfg = CurriculumConfig(
        min_interval=t_min, max_interval=t_min + extra, num_frames=num_frames, mode=mode
    )
    idx = sample_clip_indices(n_video, eta, cfg, seed)
    assert idx.shape == (num_frames,)
    assert idx.dtype == torch.int64
    assert bool((idx[1:] > idx[:-1]).all())  # sorted, unique
    assert int(idx[0]) >= 0
    assert int(idx[-1]) < n_video
    s = min(cfg.interval(eta), (n_video - 1) // (num_frames - 1))
    span = int(idx[-1] - idx[0])
    if mode == "stride":
        assert torch.equal(idx[1:] - idx[:-1], torch.full((num_frames - 1,), s))
    else:
        assert span <= (num_frames - 1) * s


def test_stride_grows_then_shrinks_with_progress() -> None:
    cfg = CurriculumConfig(min_interval=1, max_interval=9, num_frames=5)
    gaps = {}
    for eta in (0.0, 0.25, 0.5, 0.8, 1.0):
        idx = sample_clip_indices(1000, eta, cfg, 0)
        gaps[eta] = set((idx[1:] - idx[:-1]).tolist())
    assert gaps == {0.0: {1}, 0.25: {5}, 0.5: {9}, 0.8: {7}, 1.0: {5}}


def test_window_mode_span_grows_with_progress() -> None:
    cfg = CurriculumConfig(min_interval=1, max_interval=20, num_frames=5, mode="window")
    gen = torch.Generator().manual_seed(0)
    early = [sample_clip_indices(500, 0.0, cfg, gen) for _ in range(50)]
    mid = [sample_clip_indices(500, 0.6, cfg, gen) for _ in range(50)]
    # interval 1: the window holds exactly T frames, so clips are consecutive
    assert all(int(c[-1] - c[0]) == 4 for c in early)
    spans = torch.tensor([float(c[-1] - c[0]) for c in mid])
    assert float(spans.max()) <= 4 * 20
    assert float(spans.mean()) > 40  # clearly wider than at the start


def test_short_video_shrinks_interval() -> None:
    cfg = CurriculumConfig(min_interval=1, max_interval=9, num_frames=5)
    idx = sample_clip_indices(13, 0.5, cfg, 0)  # wants 9 but only (13 - 1) // 4 = 3 fits
    assert idx.tolist() == [0, 3, 6, 9, 12]
    assert sample_clip_indices(5, 0.5, cfg, 0).tolist() == [0, 1, 2, 3, 4]


@given(seed=st.integers(0, 2**31 - 1), eta=progress_st, mode=mode_st)
def test_deterministic_given_seed(seed: int, eta: float, mode: str) -> None:
    cfg = CurriculumConfig(max_interval=6, mode=mode)
    a = sample_clip_indices(300, eta, cfg, seed)
    b = sample_clip_indices(300, eta, cfg, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


def test_different_seeds_differ() -> None:
    cfg = CurriculumConfig(max_interval=6)
    starts = {int(sample_clip_indices(300, 0.5, cfg, s)[0]) for s in range(20)}
    assert len(starts) > 1


def test_start_covers_every_position() -> None:
    cfg = CurriculumConfig(min_interval=2, max_interval=2, num_frames=3)
    gen = torch.Generator().manual_seed(1)
    starts = {int(sample_clip_indices(8, 0.3, cfg, gen)[0]) for _ in range(200)}
    assert starts == {0, 1, 2, 3}  # windows of 5 frames fit at 4 positions in 8


# --- dataset helper ---------------------------------------------------------------------------


def test_clips_dataset_reproducible_and_epoch_dependent() -> None:
    cfg = CurriculumConfig(max_interval=9)
    clips = CurriculumClips([100, 50, 300], cfg, num_epochs=4, seed=3)
    assert len(clips) == 3
    first = [clips[i] for i in range(3)]
    again = CurriculumClips([100, 50, 300], cfg, num_epochs=4, seed=3)
    assert all(torch.equal(a, again[i]) for i, a in enumerate(first))
    assert torch.equal(clips[-1], clips[2])
    assert clips.progress == 0.0
    assert all(set((c[1:] - c[:-1]).tolist()) == {1} for c in first)
    clips.set_epoch(2)  # eta = 0.5: interval 9
    assert clips.progress == 0.5
    assert set((clips[2][1:] - clips[2][:-1]).tolist()) == {9}
    loader = DataLoader(clips, batch_size=3, shuffle=False)
    (batch,) = list(loader)
    assert batch.shape == (3, 5)
    assert torch.equal(batch[2], clips[2])
    with pytest.raises(IndexError, match="out of range"):
        clips[3]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [-0.1, 1.5, math.nan])
def test_progress_out_of_range(eta: float) -> None:
    with pytest.raises(ValueError, match=r"`progress` must be a number in \[0, 1\]"):
        active_ratio(eta)
    with pytest.raises(ValueError, match="`progress`"):
        sample_clip_indices(100, eta, CurriculumConfig(max_interval=4), 0)


def test_video_too_short() -> None:
    cfg = CurriculumConfig(max_interval=4, num_frames=5)
    with pytest.raises(ValueError, match=r"`num_video_frames` must be >= config.num_frames=5"):
        sample_clip_indices(4, 0.5, cfg, 0)
    with pytest.raises(ValueError, match=r"`video_lengths\[1\]` must be >= config.num_frames=5"):
        CurriculumClips([10, 3], cfg, num_epochs=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_interval": 4, "num_frames": 1}, "`num_frames` must be an integer >= 2"),
        ({"max_interval": 4, "min_interval": 0}, "`min_interval` must be a number >= 1"),
        ({"max_interval": 2, "min_interval": 3}, "`max_interval` must be a number >= min_inter"),
        ({"max_interval": math.inf}, "`max_interval` must be finite"),
    ],
)
def test_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CurriculumConfig(**kwargs)


@pytest.mark.usefixtures("without_typecheck")
def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="`mode` must be 'stride' or 'window'"):
        CurriculumConfig(max_interval=4, mode="random")  # type: ignore[arg-type]


def test_bad_epochs() -> None:
    with pytest.raises(ValueError, match="`num_epochs` must be an integer >= 1"):
        training_progress(0, 0)
    with pytest.raises(ValueError, match=r"`epoch` must lie in \[0, num_epochs=10\]"):
        training_progress(11, 10)
    clips = CurriculumClips([10], CurriculumConfig(max_interval=2), num_epochs=3)
    with pytest.raises(ValueError, match="`epoch`"):
        clips.set_epoch(-1)
    with pytest.raises(ValueError, match="`num_epochs`"):
        CurriculumClips([10], CurriculumConfig(max_interval=2), num_epochs=0)


def test_config_is_frozen() -> None:
    cfg = CurriculumConfig(max_interval=4)
    with pytest.raises(AttributeError):
        cfg.num_frames = 3  # type: ignore[misc]
