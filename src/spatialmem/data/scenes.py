"""Synthetic training scenes with ground truth: a textured room with a box, seen by a moving camera.

Every scene is an axis-aligned room (floor, ceiling, four walls) with one axis-aligned box
standing on the floor. A pinhole camera moves smoothly inside the room while looking at a point
near the box. Each pixel's ray is intersected analytically with the room and the box, so the
world point, the depth and the camera pose of every frame are known exactly; the image colours
the hit point with a procedural texture of its world coordinates (no rendering library). A
rectangular "window" on the far wall has no ground truth (``valid`` is false there, like the sky
or missing depth of a real sensor).

Conventions: cameras follow OpenCV (x right, y down, z forward); poses are camera-to-world
``[4, 4]`` matrices; world ``y`` points down (the floor is the room's largest ``y``). Images are
``[3, H, W]`` in [-1, 1], the models' input range.

Everything is a deterministic function of the seed and the frame indices:

```python
from spatialmem.data.scenes import SyntheticScenes, collate_clips

dataset = SyntheticScenes(num_scenes=8, num_frames=5, height=64, width=64)
batch = collate_clips([dataset[0], dataset[1]])
batch.frames.shape          # [2, 5, 3, 64, 64]
batch.target.pts3d.shape    # [2, 5, 64, 64, 3] world points (a SequenceTarget)
```
"""

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from spatialmem._checks import check_tensor
from spatialmem._typing import Bool, Float, Int
from spatialmem.data.curriculum import CurriculumClips, CurriculumConfig
from spatialmem.geometry.camera import intrinsics_from_focal, pixel_grid, points_to_depth
from spatialmem.tensor_dataclass import TensorDataclass
from spatialmem.types import SequenceTarget

__all__ = [
    "SceneBatch",
    "SceneClip",
    "SceneClipDataset",
    "SyntheticScene",
    "SyntheticScenes",
    "camera_rays",
    "collate_clips",
    "look_along",
    "synthetic_clip",
]

_TWO_PI = 2.0 * math.pi


@dataclass(eq=False)
class SceneClip(TensorDataclass):
    """``T`` frames of one scene with their ground truth.

    A [`TensorDataclass`][spatialmem.tensor_dataclass.TensorDataclass] without a batch
    dimension: dimension 0 is the frame axis ``T``, and ``intrinsics`` has none. The operations
    that transform every tensor (``to``, ``detach``, ``clone``, ``pin_memory``, ``apply``) apply
    as they are, and ``SceneClip.stack(clips)`` stacks clips of one shape along a new batch
    dimension; indexing (``clip[1:3]``) would also slice the rows of ``intrinsics``, so render
    the frames you need with
    [`SyntheticScene.render`][spatialmem.data.scenes.SyntheticScene.render] instead.
    """

    images: Float[Tensor, "T 3 H W"]
    """Rendered frames in [-1, 1]."""
    pts3d: Float[Tensor, "T H W 3"]
    """World point seen by every pixel."""
    valid: Bool[Tensor, "T H W"]
    """Pixels with ground truth (false on the far wall's window)."""
    camera_pose: Float[Tensor, "T 4 4"]
    """Camera-to-world pose of every frame."""
    intrinsics: Float[Tensor, "3 3"]
    """Pinhole intrinsics shared by all frames (pixel centres at ``+0.5``)."""
    frame_indices: Int[Tensor, "T"]
    """Which frames of the scene's video these are."""

    @property
    def num_frames(self) -> int:
        """Number of frames ``T``."""
        return self.images.shape[0]

    def depth(self) -> Float[Tensor, "T H W"]:
        """Depth (camera ``z``) of every pixel, from the points and the poses (see
        [`points_to_depth`][spatialmem.geometry.camera.points_to_depth])."""
        return points_to_depth(self.pts3d, self.camera_pose)


@dataclass(eq=False)
class SceneBatch(TensorDataclass):
    """A batch of clips: model input plus the loss target (see
    [`collate_clips`][spatialmem.data.scenes.collate_clips]).

    A batch-first [`TensorDataclass`][spatialmem.tensor_dataclass.TensorDataclass]:
    ``batch.to(device, non_blocking=True)`` moves every tensor (the nested ``target`` too;
    pinned host memory and ``non_blocking`` overlap the copy with compute on CUDA),
    ``pin_memory()`` is what ``DataLoader(pin_memory=True)`` calls, and ``batch[i : i + 1]``
    takes one clip.
    """

    frames: Float[Tensor, "B T 3 H W"]
    """Model input, in [-1, 1]."""
    target: SequenceTarget
    """Ground truth for the sequence losses (world points, valid mask, frame 0's pose)."""
    camera_pose: Float[Tensor, "B T 4 4"]
    """Camera-to-world pose of every frame."""
    intrinsics: Float[Tensor, "B 3 3"]
    """Intrinsics of every clip."""

    @property
    def batch_size(self) -> int:
        """Number of clips ``B``."""
        return self.frames.shape[0]


def collate_clips(clips: Sequence[SceneClip]) -> SceneBatch:
    """Stack clips of equal shape into a [`SceneBatch`][spatialmem.data.scenes.SceneBatch] (a
    ``DataLoader`` ``collate_fn``).

    Args:
        clips: ``B >= 1`` clips, all ``[T, 3, H, W]`` with the same ``T``, ``H``, ``W``.

    Returns:
        ``frames [B, T, 3, H, W]`` and a [`SequenceTarget`][spatialmem.types.SequenceTarget] with
        ``pts3d [B, T, H, W, 3]``, ``valid [B, T, H, W]`` and ``camera_pose0 [B, 4, 4]``.

    Raises:
        ValueError: no clips, or clips of different shapes.
    """
    if len(clips) == 0:
        raise ValueError("`clips` must hold at least one SceneClip, got an empty sequence")
    shape = tuple(clips[0].images.shape)
    for i, clip in enumerate(clips):
        if not isinstance(clip, SceneClip):
            raise TypeError(f"`clips[{i}]` must be a SceneClip, got {type(clip).__name__}")
        if tuple(clip.images.shape) != shape:
            raise ValueError(
                f"all clips must have the same [T, 3, H, W] shape: clips[0] has {shape}, "
                f"clips[{i}] has {tuple(clip.images.shape)}"
            )
    stacked = SceneClip.stack(clips)
    return SceneBatch(
        frames=stacked.images,
        target=SequenceTarget(
            pts3d=stacked.pts3d,
            valid=stacked.valid,
            camera_pose0=stacked.camera_pose[:, 0].clone(),
        ),
        camera_pose=stacked.camera_pose,
        intrinsics=stacked.intrinsics,
    )


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-12)


def look_along(
    centre: Float[Tensor, "T 3"], forward: Float[Tensor, "T 3"]
) -> Float[Tensor, "T 4 4"]:
    """Camera-to-world poses of cameras at ``centre`` looking along ``forward`` (any length),
    upright: the world's ``+y`` is the image's "down" (OpenCV axes)."""
    forward = _unit(forward)
    down_hint = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = _unit(torch.linalg.cross(down_hint, forward))
    down = torch.linalg.cross(forward, right)
    pose = torch.eye(4).repeat(centre.shape[0], 1, 1)
    pose[:, :3, :3] = torch.stack([right, down, forward], dim=-1)
    pose[:, :3, 3] = centre
    return pose


def camera_rays(
    pose: Float[Tensor, "T 4 4"], intrinsics: Float[Tensor, "3 3"], height: int, width: int
) -> tuple[Float[Tensor, "T H W 3"], Float[Tensor, "T H W 3"]]:
    """World origin and direction of every pixel's ray; directions have camera ``z = 1``, so a
    hit's ray parameter is its depth.

    Raises:
        ValueError: ``height`` or ``width`` below 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"`height` and `width` must be >= 1, got {height} x {width}")
    k = intrinsics
    u, v = pixel_grid(height, width).unbind(-1)
    ray_cam = torch.stack(
        [(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], torch.ones_like(u)], dim=-1
    )
    rays = torch.einsum("tij,hwj->thwi", pose[:, :3, :3], ray_cam)
    return pose[:, None, None, :3, 3].expand_as(rays), rays


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """One random scene: room, box, texture and camera trajectory (see the module docstring).

    Build it with [`random`][spatialmem.data.scenes.SyntheticScene.random]; render any frames of its
    (unbounded) video with [`render`][spatialmem.data.scenes.SyntheticScene.render]. All tensors are
    float32 on the CPU.
    """

    room_lo: Float[Tensor, "3"]
    """Lower corner of the room (world)."""
    room_hi: Float[Tensor, "3"]
    """Upper corner of the room; ``room_hi[1]`` is the floor."""
    box_lo: Float[Tensor, "3"]
    """Lower corner of the box."""
    box_hi: Float[Tensor, "3"]
    """Upper corner of the box (``box_hi[1]`` is the floor)."""
    window_lo: Float[Tensor, "2"]
    """``(x, y)`` lower corner of the invalid window on the far wall (``z = room_hi[2]``)."""
    window_hi: Float[Tensor, "2"]
    """``(x, y)`` upper corner of the window."""
    tint: Float[Tensor, "7 3"]
    """Base colour of the six room faces (``-x, -y, -z, +x, +y, +z`` order by axis and side:
    ``[x_lo, y_lo, z_lo, x_hi, y_hi, z_hi]``) and of the box (last row)."""
    wave_freq: Float[Tensor, "3 K 3"]
    """Per channel, ``K`` spatial frequencies (cycles per metre) of the texture's sinusoids."""
    wave_phase: Float[Tensor, "3 K"]
    """Phases of the sinusoids."""
    checker_size: float
    """Side of the checkerboard cells in metres."""
    start: Float[Tensor, "3"]
    """Camera position of frame 0."""
    velocity: Float[Tensor, "3"]
    """Camera displacement per frame (metres)."""
    sway: Float[Tensor, "3"]
    """Amplitude of a slow sinusoidal sway added to the straight path."""
    sway_period: float
    """Period of the sway, in frames."""
    look_at: Float[Tensor, "3"]
    """Point the camera looks at (near the box)."""
    fov_deg: float
    """Horizontal field of view of the camera in degrees."""

    @classmethod
    def random(
        cls, seed: int, *, speed: int | float = 0.05, fov_deg: int | float = 60.0
    ) -> "SyntheticScene":
        """A random scene, a deterministic function of ``seed``.

        Args:
            seed: random seed (any int).
            speed: camera displacement per frame in metres (the rooms are about 4-5 m wide
                and the camera starts about 2.5 m from the box).
            fov_deg: horizontal field of view of the camera.

        Returns:
            The scene.
        """
        if not 0.0 < fov_deg < 180.0:
            raise ValueError(f"`fov_deg` must lie in (0, 180), got {fov_deg!r}")
        if not speed >= 0.0:
            raise ValueError(f"`speed` must be >= 0, got {speed!r}")
        gen = torch.Generator().manual_seed(int(seed) & (2**63 - 1))

        def uniform(lo: float, hi: float, *shape: int) -> Tensor:
            return lo + (hi - lo) * torch.rand(shape or (1,), generator=gen)

        half_w, half_d = uniform(1.8, 2.4), uniform(2.2, 2.8)
        ceil, floor = uniform(-1.6, -1.2), uniform(1.0, 1.4)
        room_lo = torch.cat([-half_w, ceil, -half_d])
        room_hi = torch.cat([half_w, floor, half_d])
        size = uniform(0.5, 0.9, 3)
        centre_xz = torch.cat([uniform(-0.6, 0.6), uniform(0.6, 1.2)])
        box_lo = torch.stack([centre_xz[0] - size[0] / 2, floor[0] - size[1], centre_xz[1]])
        box_hi = torch.stack([centre_xz[0] + size[0] / 2, floor[0], centre_xz[1] + size[2]])
        win_c = torch.cat([uniform(-0.8, 0.8), uniform(-0.6, -0.2)])
        win_half = uniform(0.3, 0.6, 2)
        start = torch.cat([uniform(-0.5, 0.5), uniform(-0.3, 0.3), uniform(-1.8, -1.3)])
        angle = uniform(0.0, _TWO_PI)[0]
        direction = torch.stack(
            [torch.cos(angle), 0.2 * torch.sin(3 * angle), 0.5 * torch.sin(angle)]
        )
        velocity = float(speed) * _unit(direction)
        look_at = (box_lo + box_hi) / 2 + uniform(-0.3, 0.3, 3) * torch.tensor([1.0, 0.5, 1.0])
        return cls(
            room_lo=room_lo,
            room_hi=room_hi,
            box_lo=box_lo,
            box_hi=box_hi,
            window_lo=win_c - win_half,
            window_hi=win_c + win_half,
            tint=0.25 + 0.75 * torch.rand(7, 3, generator=gen),
            wave_freq=(torch.rand(3, 4, 3, generator=gen) - 0.5) * 3.0,
            wave_phase=torch.rand(3, 4, generator=gen) * _TWO_PI,
            checker_size=float(uniform(0.25, 0.5)[0]),
            start=start,
            velocity=velocity,
            sway=float(speed) * uniform(1.0, 4.0, 3),
            sway_period=float(uniform(16.0, 40.0)[0]),
            look_at=look_at,
            fov_deg=float(fov_deg),
        )

    def intrinsics(self, height: int, width: int) -> Float[Tensor, "3 3"]:
        """Pinhole intrinsics for ``height x width`` images (square pixels, centred)."""
        focal = 0.5 * width / math.tan(math.radians(self.fov_deg) / 2)
        return intrinsics_from_focal(torch.tensor(focal), height, width)

    def camera_pose(self, frame_indices: Int[Tensor, "T"]) -> Float[Tensor, "T 4 4"]:
        """Camera-to-world poses of the given frames of the video.

        Frame ``t`` is at ``start + t * velocity + sway * sin(2 pi t / sway_period)`` and looks
        at [`look_at`][spatialmem.data.scenes.SyntheticScene.look_at] with the world's ``+y`` as
        "down".
        """
        t = frame_indices.to(torch.float32)[:, None]
        phase = torch.sin(_TWO_PI * t / self.sway_period)
        centre = self.start + t * self.velocity + phase * self.sway
        return look_along(centre, self.look_at - centre)

    def render(self, frame_indices: Int[Tensor, "T"], height: int, width: int) -> SceneClip:
        """Render frames of the video with their ground truth.

        Args:
            frame_indices: ``[T]`` integer frame numbers (any, e.g. from the curriculum
                sampler); frame ``t``'s pose is
                [`camera_pose`][spatialmem.data.scenes.SyntheticScene.camera_pose] of ``t``.
            height: image height ``H``.
            width: image width ``W``.

        Returns:
            The [`SceneClip`][spatialmem.data.scenes.SceneClip] of those frames.
        """
        check_tensor("frame_indices", frame_indices, ndim=1, floating=False, expected="T")
        k = self.intrinsics(height, width)
        pose = self.camera_pose(frame_indices)
        origin, rays = camera_rays(pose, k, height, width)
        depth, face = self._intersect(origin, rays)
        pts = origin + depth[..., None] * rays
        images = self._shade(pts, face)
        on_far_wall = face == 5
        in_window = (
            (pts[..., 0] > self.window_lo[0])
            & (pts[..., 0] < self.window_hi[0])
            & (pts[..., 1] > self.window_lo[1])
            & (pts[..., 1] < self.window_hi[1])
        )
        valid = ~(on_far_wall & in_window)
        # The window shows a flat sky colour: no texture to match, as with a real sky.
        images = torch.where(valid[:, None], images, 0.8)
        return SceneClip(
            images=images,
            pts3d=pts,
            valid=valid,
            camera_pose=pose,
            intrinsics=k,
            frame_indices=frame_indices.to(torch.int64),
        )

    def _intersect(self, origin: Tensor, rays: Tensor) -> tuple[Tensor, Tensor]:
        """Depth of the first hit along each ray and the face id (0-5 room, 6 box)."""
        safe = torch.where(rays.abs() < 1e-9, torch.full_like(rays, 1e-9), rays)
        # Room, seen from inside: the exit distance along each axis.
        bound = torch.where(safe > 0, self.room_hi, self.room_lo)
        t_axis = (bound - origin) / safe
        t_room, axis = t_axis.min(dim=-1)
        side_hi = torch.gather(safe > 0, -1, axis[..., None])[..., 0]
        face = axis + 3 * side_hi.long()
        # Box, seen from outside: slab test.
        t1 = (self.box_lo - origin) / safe
        t2 = (self.box_hi - origin) / safe
        t_near = torch.minimum(t1, t2).amax(dim=-1)
        t_far = torch.maximum(t1, t2).amin(dim=-1)
        hit_box = (t_near <= t_far) & (t_near > 1e-4) & (t_near < t_room)
        depth = torch.where(hit_box, t_near, t_room)
        face = torch.where(hit_box, torch.full_like(face, 6), face)
        return depth, face

    def _shade(self, pts: Tensor, face: Tensor) -> Tensor:
        """Procedural colour of world points: tinted sinusoids times a checkerboard."""
        phase = torch.einsum("thwj,ckj->thwck", pts, self.wave_freq) * _TWO_PI + self.wave_phase
        waves = torch.sin(phase).mean(-1)  # [T, H, W, 3]
        cells = torch.floor(pts / self.checker_size).sum(-1)
        checker = 0.75 + 0.25 * (cells.remainder(2.0) * 2 - 1)  # 0.5 or 1.0
        rgb = self.tint[face] * (0.6 + 0.4 * waves) * checker[..., None]
        return (rgb.clamp(0.0, 1.0) * 2 - 1).permute(0, 3, 1, 2).contiguous()


def synthetic_clip(
    num_frames: int = 5,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    stride: int = 1,
) -> SceneClip:
    """Frames ``0, stride, 2 stride, ...`` of the random scene ``seed``.

    Args:
        num_frames: number of frames ``T``.
        height: image height ``H``.
        width: image width ``W``.
        seed: scene seed (see
            [`SyntheticScene.random`][spatialmem.data.scenes.SyntheticScene.random]).
        stride: frame step between consecutive frames of the clip (the camera moves about
            5 cm per frame).

    Returns:
        A [`SceneClip`][spatialmem.data.scenes.SceneClip] with ``images [T, 3, H, W]`` in [-1, 1]
        and its ground truth.
    """
    if num_frames < 1 or stride < 1:
        raise ValueError(f"`num_frames` and `stride` must be >= 1, got {num_frames}, {stride}")
    indices = torch.arange(num_frames, dtype=torch.int64) * stride
    return SyntheticScene.random(seed).render(indices, height, width)


def _scene_seed(seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"scene:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@runtime_checkable
class _Renderable(Protocol):
    def render(self, frame_indices: Tensor, height: int, width: int) -> SceneClip: ...


class SceneClipDataset(Dataset[SceneClip]):
    """What the synthetic clip datasets share: item ``i`` is a clip of the scene
    [`scene(i)`][spatialmem.data.scenes.SceneClipDataset.scene] (a subclass's choice), whose
    frames are fixed (``0, stride, 2 stride, ...``) or, with ``curriculum``, drawn from the first
    ``video_frames`` frames of the scene's video by
    [`CurriculumClips`][spatialmem.data.CurriculumClips] at training ratio
    ``epoch / num_epochs`` (call [`set_epoch`][spatialmem.data.scenes.SceneClipDataset.set_epoch]
    at the start of every epoch). The draw depends only on ``(seed, epoch, i)``, so every
    ``DataLoader`` worker and every rank sees the same clip for the same index.

    Args:
        num_scenes: items per epoch (dataset length).
        num_frames: frames per clip ``T >= 2``; must equal ``curriculum.num_frames`` when a
            curriculum is given.
        height: image height ``H``.
        width: image width ``W``.
        seed: base seed (of the scenes and of the curriculum draws).
        stride: frame step of the fixed clips (ignored with a curriculum).
        curriculum: curriculum sampler settings, or ``None`` for fixed clips.
        video_frames: frames of video the curriculum samples from.
        num_epochs: total training epochs (the curriculum's ``η = epoch / num_epochs``).

    Raises:
        ValueError: for invalid sizes, naming the argument.
    """

    def __init__(
        self,
        num_scenes: int,
        num_frames: int,
        height: int,
        width: int,
        *,
        seed: int,
        stride: int,
        curriculum: CurriculumConfig | None,
        video_frames: int,
        num_epochs: int,
    ) -> None:
        if num_scenes < 1:
            raise ValueError(f"`num_scenes` must be >= 1, got {num_scenes}")
        if num_frames < 2:
            raise ValueError(
                f"`num_frames` must be >= 2 (a sequence needs a pair), got {num_frames}"
            )
        if height < 1 or width < 1 or stride < 1:
            raise ValueError(
                f"`height`, `width` and `stride` must be >= 1, got {height}, {width}, {stride}"
            )
        if curriculum is not None and curriculum.num_frames != num_frames:
            raise ValueError(
                f"`curriculum.num_frames`={curriculum.num_frames} must equal "
                f"`num_frames`={num_frames}"
            )
        self.num_scenes = num_scenes
        self.num_frames = num_frames
        self.height = height
        self.width = width
        self.seed = seed
        self.stride = stride
        self.epoch = 0
        self.clips = (
            None
            if curriculum is None
            else CurriculumClips([video_frames] * num_scenes, curriculum, num_epochs, seed=seed)
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its curriculum draws, and whatever else a subclass ties to it).

        Args:
            epoch: current epoch, ``0 <= epoch <= num_epochs``.
        """
        if self.clips is not None:
            self.clips.set_epoch(epoch)
        self.epoch = epoch

    def scene(self, index: int) -> _Renderable:
        """The scene of item ``index`` (anything with a ``render(frame_indices, H, W)``)."""
        raise NotImplementedError

    def frame_indices(self, index: int) -> Int[Tensor, "T"]:
        """Frame numbers of item ``index``'s clip (at the current epoch)."""
        if self.clips is not None:
            return self.clips[index]
        return torch.arange(self.num_frames, dtype=torch.int64) * self.stride

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> SceneClip:
        """Clip of item ``index``: ``images [T, 3, H, W]`` and its ground truth."""
        if not -self.num_scenes <= index < self.num_scenes:
            raise IndexError(f"item {index} out of range for {self.num_scenes} scenes")
        index %= self.num_scenes
        return self.scene(index).render(self.frame_indices(index), self.height, self.width)


class SyntheticScenes(SceneClipDataset):
    """A map-style dataset of synthetic clips: item ``i`` is a clip of random scene ``i``.

    Scene ``i`` depends only on ``(seed, i)``; its clip's frames are chosen as described in
    [`SceneClipDataset`][spatialmem.data.scenes.SceneClipDataset].

    Args:
        num_scenes: number of scenes (dataset length).
        num_frames: frames per clip ``T``; must equal ``curriculum.num_frames`` when a curriculum is
            given.
        height: image height ``H``.
        width: image width ``W``.
        seed: base seed.
        stride: frame step of the fixed clips (ignored with a curriculum).
        curriculum: curriculum sampler settings, or ``None`` for fixed clips.
        video_frames: length of each scene's video for the curriculum sampler.
        num_epochs: total training epochs (the curriculum's ``η = epoch / num_epochs``).
        speed: camera displacement per frame in metres.

    Returns items of type [`SceneClip`][spatialmem.data.scenes.SceneClip]; batch them with
    [`collate_clips`][spatialmem.data.scenes.collate_clips].
    """

    def __init__(
        self,
        num_scenes: int,
        num_frames: int = 5,
        height: int = 64,
        width: int = 64,
        *,
        seed: int = 0,
        stride: int = 1,
        curriculum: CurriculumConfig | None = None,
        video_frames: int = 48,
        num_epochs: int = 1,
        speed: int | float = 0.05,
    ) -> None:
        super().__init__(
            num_scenes,
            num_frames,
            height,
            width,
            seed=seed,
            stride=stride,
            curriculum=curriculum,
            video_frames=video_frames,
            num_epochs=num_epochs,
        )
        self.speed = float(speed)

    def scene(self, index: int) -> SyntheticScene:
        """The scene of item ``index``."""
        return SyntheticScene.random(_scene_seed(self.seed, index), speed=self.speed)
