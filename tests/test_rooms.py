"""Furnished synthetic rooms: exact ground truth, loops, splits, determinism."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialmem.data.curriculum import CurriculumConfig
from spatialmem.data.rooms import (
    SPLIT_SIZE,
    RoomScene,
    RoomScenes,
    parse_path_weights,
    room_sequence,
    scene_seed,
)
from spatialmem.data.scenes import collate_clips
from spatialmem.geometry.camera import pixel_grid, project


def _inside(points: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, margin: float) -> bool:
    return bool(((points >= lo - margin) & (points <= hi + margin)).all())


@settings(max_examples=10)
@given(seed=st.integers(0, 3 * SPLIT_SIZE - 1), kind=st.sampled_from(["walk", "orbit", "forward"]))
def test_points_reproject_to_their_pixels(seed: int, kind: str) -> None:
    scene = RoomScene.random(seed, trajectory=kind)  # type: ignore[arg-type]
    clip = scene.render(torch.tensor([0, 7, 31]), 12, 18)
    uv, z = project(clip.pts3d.flatten(1, 2), clip.intrinsics.expand(3, 3, 3), clip.camera_pose)
    grid = pixel_grid(12, 18).reshape(1, -1, 2).expand(3, -1, -1)
    assert (z > 0.05).all(), "every pixel sees a surface in front of the camera"
    torch.testing.assert_close(uv, grid, atol=2e-3, rtol=0)
    assert _inside(clip.pts3d, scene.room_lo, scene.room_hi, 1e-3)
    assert _inside(clip.camera_pose[:, :3, 3], scene.room_lo, scene.room_hi, -0.2)


@pytest.mark.parametrize("kind", ["walk", "orbit", "forward"])
def test_paths_loop_and_never_enter_furniture(kind: str) -> None:
    for index in range(4):
        scene = RoomScene.random(scene_seed("test", index), trajectory=kind)  # type: ignore[arg-type]
        frames = torch.arange(scene.period + 1)
        pose = scene.camera_pose(frames)
        torch.testing.assert_close(pose[0], pose[-1], atol=1e-4, rtol=0)
        centres = pose[:, :3, 3]
        for c, r in zip(scene.sphere_centre, scene.sphere_radius, strict=True):
            assert (torch.linalg.vector_norm(centres - c, dim=-1) > r).all()
        for c, r in zip(scene.cyl_centre, scene.cyl_radius, strict=True):
            assert (torch.linalg.vector_norm((centres - c)[:, [0, 2]], dim=-1) > r).all()
        for c, h in zip(scene.box_centre, scene.box_half, strict=True):
            reach = torch.linalg.vector_norm(h[[0, 2]])
            assert (torch.linalg.vector_norm((centres - c)[:, [0, 2]], dim=-1) > reach).all()


def test_scenes_are_furnished_and_varied() -> None:
    scenes = [RoomScene.random(scene_seed("train", i)) for i in range(40)]
    counts = [len(s.box_centre) + len(s.sphere_centre) + len(s.cyl_centre) for s in scenes]
    assert min(counts) >= 2 and max(counts) >= 5
    assert {s.trajectory for s in scenes} == {"walk", "orbit", "forward"}
    assert sum(len(s.sphere_centre) for s in scenes) > 0
    assert sum(len(s.cyl_centre) for s in scenes) > 0
    assert len({int(p) for s in scenes for p in s.pattern}) == 4
    sizes = torch.stack([s.room_hi - s.room_lo for s in scenes])
    assert (sizes.amax(0) - sizes.amin(0) > 0.5).all(), "room sizes and aspect ratios vary"


def test_rendering_is_deterministic_and_textured() -> None:
    a = room_sequence(5, num_frames=6, height=24, width=36)
    b = room_sequence(5, num_frames=6, height=24, width=36)
    for name in ("images", "pts3d", "valid", "camera_pose", "intrinsics"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.images.min() >= -1 and a.images.max() <= 1
    # Enough texture to match: neighbouring pixels differ somewhere in every frame.
    diff = (a.images[..., 1:] - a.images[..., :-1]).abs().flatten(1).amax(1)
    assert (diff > 0.1).all()
    assert a.valid.float().mean() > 0.8


def test_splits_are_disjoint_seed_ranges() -> None:
    assert scene_seed("train", 0) == 0
    assert scene_seed("val", 0) == SPLIT_SIZE
    assert scene_seed("test", 3) == 2 * SPLIT_SIZE + 3
    assert scene_seed("train", SPLIT_SIZE + 2) == 2  # wraps inside its own range
    with pytest.raises((ValueError, TypeError), match="split"):
        scene_seed("holdout", 0)  # type: ignore[arg-type]


def test_sequence_with_default_stride_closes_its_loop() -> None:
    scene = RoomScene.random(scene_seed("test", 0))
    clip = room_sequence(0, num_frames=48, height=6, width=9)
    assert scene.period < 2 * 48  # covers more than one loop
    revisit = scene.camera_pose(torch.tensor([scene.period]))[0]
    gap = torch.linalg.vector_norm(clip.camera_pose[:, :3, 3] - revisit[:3, 3], dim=-1)
    assert gap.min() < 0.3, "a frame near the end is taken near where the sequence started"


def test_dataset_fresh_scenes_per_epoch_and_curriculum() -> None:
    curriculum = CurriculumConfig(max_interval=4, num_frames=3)
    data = RoomScenes(4, 3, 16, 24, curriculum=curriculum, video_frames=40, num_epochs=4)
    first = data.scene_index(1)
    clip0 = data[1]
    data.set_epoch(1)
    assert data.scene_index(1) == first + 4
    assert not torch.equal(data[1].pts3d, clip0.pts3d)
    batch = collate_clips([data[0], data[1]])
    assert batch.frames.shape == (2, 3, 3, 16, 24)
    held_out = RoomScenes(4, 3, 16, 24, split="test", stride=2)
    held_out.set_epoch(3)
    assert held_out.scene_index(2) == 2, "evaluation splits keep their scenes"
    assert torch.equal(held_out[0].frame_indices, torch.tensor([0, 2, 4]))


def test_path_weights_set_the_mix_of_camera_paths() -> None:
    def kinds(**kwargs: object) -> list[str]:
        data = RoomScenes(90, 2, 16, 24, **kwargs)  # type: ignore[arg-type]
        return [data.scene(i).trajectory for i in range(90)]

    natural = kinds()
    assert {"walk", "orbit", "forward"} == set(natural)
    only_orbits = kinds(path_weights={"orbit": 1.0})
    assert set(only_orbits) == {"orbit"}
    mixed = kinds(path_weights=parse_path_weights("orbit=3, walk=1"))
    assert set(mixed) == {"orbit", "walk"}
    assert 50 <= mixed.count("orbit") <= 85, "about three orbits for every walk"
    assert mixed == kinds(path_weights={"walk": 1, "orbit": 3}), "a function of the seed"


@pytest.mark.parametrize(
    "text", ["orbit", "orbit=x", "spiral=1", "orbit=0", "orbit=1,orbit=2", "orbit=-1,walk=2"]
)
def test_bad_path_weights_are_named(text: str) -> None:
    with pytest.raises(ValueError, match=r"path_weights|path weights"):
        parse_path_weights(text)


@pytest.mark.usefixtures("without_typecheck")  # the library's own checks, as users run it
@pytest.mark.parametrize("weights", ["orbit=2", {"orbit": None}, {"orbit": True}, {3: 1.0}])
def test_path_weights_of_the_wrong_type_are_named(weights: object) -> None:
    with pytest.raises((TypeError, ValueError), match="path_weights"):
        RoomScenes(4, 2, path_weights=weights)  # type: ignore[arg-type]


def test_bad_arguments_are_named() -> None:
    with pytest.raises((ValueError, TypeError), match="trajectory"):
        RoomScene.random(0, trajectory="spiral")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_frames"):
        room_sequence(0, num_frames=0)
    with pytest.raises(ValueError, match=r"curriculum\.num_frames"):
        RoomScenes(2, 5, curriculum=CurriculumConfig(max_interval=2, num_frames=3))
    with pytest.raises(IndexError):
        RoomScenes(2, 3)[2]
