"""Furnished synthetic rooms: several textured, lit objects seen along looping camera paths.

The richer sibling of [`SyntheticScene`][spatialmem.data.scenes.SyntheticScene], made to train
and evaluate the memory on sequences that revisit places. A scene is an axis-aligned room with
3-6 objects standing on the floor (boxes turned about the vertical, spheres, vertical
cylinders). Every surface has its own procedural texture (checkerboard, stripes, smooth noise
or a blend, each in a two-colour palette, plus fine detail everywhere so that patches can be
matched) and is lit by one point light with Lambertian shading and ambient light, so the
shading is the same from every viewpoint, like a real matte scene. A window on one wall has no
ground truth (``valid`` is false there).

The camera follows one of three closed paths, so every video revisits where it started after
``period`` frames (a loop closure for the long-term memory):

* ``"walk"``: an ellipse around the room, looking partly inward at the furniture;
* ``"orbit"``: a circle around one object, looking at it;
* ``"forward"``: a rounded rectangle, looking along the direction of motion (turns at corners).

Rays are intersected analytically with every primitive, so world points, depth and poses are
exact. Conventions are those of [`SyntheticScene`][spatialmem.data.scenes.SyntheticScene]: OpenCV
cameras, camera-to-world poses, world ``y`` down, images ``[3, H, W]`` in [-1, 1].

Scenes are split by seed range: ``split="train"`` uses scene seeds ``[0, 10^6)``, ``"val"``
``[10^6, 2 * 10^6)`` and ``"test"`` ``[2 * 10^6, 3 * 10^6)``, so evaluation scenes are never
trained on:

```python
from spatialmem.data.rooms import RoomScenes, room_sequence

clip = room_sequence(3, num_frames=48, stride=2)   # test scene 3: 48 frames, one full loop
clip.images.shape                                   # [48, 3, 64, 96]
train = RoomScenes(num_scenes=16, num_frames=5, split="train")
train[0].pts3d.shape                                # [5, 64, 96, 3]
```
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from spatialmem._checks import check_tensor
from spatialmem._typing import Float, Int
from spatialmem.data.curriculum import CurriculumConfig
from spatialmem.data.scenes import SceneClip, SceneClipDataset, camera_rays, look_along
from spatialmem.geometry.camera import intrinsics_from_focal

__all__ = [
    "SPLIT_SIZE",
    "RoomScene",
    "RoomScenes",
    "Split",
    "TrajectoryKind",
    "parse_path_weights",
    "room_sequence",
    "scene_seed",
]

Split = Literal["train", "val", "test"]
"""Which seed range a scene comes from."""
TrajectoryKind = Literal["walk", "orbit", "forward"]
"""The shape of the camera path."""

SPLIT_SIZE = 1_000_000
"""Number of scene seeds in each split."""
_SPLIT_BASE = {"train": 0, "val": SPLIT_SIZE, "test": 2 * SPLIT_SIZE}
_TWO_PI = 2.0 * math.pi
_EPS = 1e-4
_FAR = 1e6
_NUM_WAVES = 4  # sinusoids of the smooth-noise texture


def scene_seed(split: Split, index: int) -> int:
    """Seed of scene ``index`` of a split (``index`` is taken modulo
    [`SPLIT_SIZE`][spatialmem.data.rooms.SPLIT_SIZE]).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        index: scene number within the split.

    Returns:
        The seed to pass to [`RoomScene.random`][spatialmem.data.rooms.RoomScene.random].
    """
    if split not in _SPLIT_BASE:
        raise ValueError(f"`split` must be one of {list(_SPLIT_BASE)}, got {split!r}")
    return _SPLIT_BASE[split] + int(index) % SPLIT_SIZE


def _unit(v: Tensor) -> Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True, eq=False)
class RoomScene:
    """One furnished room, its light, textures and looping camera path (module docstring).

    Build it with [`random`][spatialmem.data.rooms.RoomScene.random] and render frames of its
    unbounded, ``period``-periodic video with
    [`render`][spatialmem.data.rooms.RoomScene.render]. Surfaces are numbered: the six room
    faces ``[x_lo, y_lo (ceiling), z_lo, x_hi, y_hi (floor), z_hi]``, then the boxes, spheres
    and cylinders in that order (``S = 6 + Nb + Ns + Nc``).
    """

    room_lo: Float[Tensor, "3"]
    """Lower room corner; ``room_lo[1]`` is the ceiling."""
    room_hi: Float[Tensor, "3"]
    """Upper room corner; ``room_hi[1]`` is the floor."""
    box_centre: Float[Tensor, "Nb 3"]
    """Box centres."""
    box_half: Float[Tensor, "Nb 3"]
    """Box half sizes along their own axes."""
    box_yaw: Float[Tensor, "Nb"]
    """Box rotations about the vertical (radians)."""
    sphere_centre: Float[Tensor, "Ns 3"]
    """Sphere centres."""
    sphere_radius: Float[Tensor, "Ns"]
    """Sphere radii."""
    cyl_centre: Float[Tensor, "Nc 3"]
    """Cylinder axis mid-points."""
    cyl_radius: Float[Tensor, "Nc"]
    """Cylinder radii."""
    cyl_half_height: Float[Tensor, "Nc"]
    """Half heights of the cylinders."""
    color_a: Float[Tensor, "S 3"]
    """First palette colour of every surface (RGB in [0, 1])."""
    color_b: Float[Tensor, "S 3"]
    """Second palette colour of every surface."""
    pattern: Int[Tensor, "S"]
    """Texture of every surface: 0 checkerboard, 1 stripes, 2 smooth noise, 3 checker x noise."""
    pattern_scale: Float[Tensor, "S"]
    """Cell size / stripe period of every surface's texture in metres."""
    stripe_angle: Float[Tensor, "S"]
    """Direction of the stripes in the surface's texture coordinates."""
    wave_freq: Float[Tensor, "S 4 2"]
    """Spatial frequencies (cycles per metre) of every surface's smooth noise."""
    wave_phase: Float[Tensor, "S 4"]
    """Phases of the smooth noise."""
    detail_freq: Float[Tensor, "6 3"]
    """Frequencies of the fine detail added to every surface (cycles per metre, world axes)."""
    light: Float[Tensor, "3"]
    """Position of the point light."""
    ambient: float
    """Ambient light level in [0, 1]."""
    window_face: int
    """Wall holding the window (a room face id)."""
    window_lo: Float[Tensor, "2"]
    """Lower corner of the window in that wall's texture coordinates."""
    window_hi: Float[Tensor, "2"]
    """Upper corner of the window."""
    trajectory: TrajectoryKind
    """Kind of camera path."""
    period: int
    """Frames per loop of the camera path."""
    path_centre: Float[Tensor, "3"]
    """Centre of the path (``y``: camera height)."""
    path_radii: Float[Tensor, "2"]
    """``x`` and ``z`` radii of the path."""
    path_phase: float
    """Angle of frame 0 on the path."""
    path_direction: float
    """``+1`` or ``-1``: sense of travel."""
    look_target: Float[Tensor, "3"]
    """Point looked at on an orbit."""
    inward: float
    """How far a walking camera turns from the path towards the room's centre (radians)."""
    bob: float
    """Amplitude of the vertical bob of the camera (metres)."""
    fov_deg: float
    """Horizontal field of view."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        seed: int,
        *,
        trajectory: TrajectoryKind | None = None,
        fov_deg: int | float | None = None,
    ) -> "RoomScene":
        """A random furnished room, a deterministic function of ``seed``.

        Args:
            seed: scene seed (see [`scene_seed`][spatialmem.data.rooms.scene_seed] for splits).
            trajectory: force the kind of camera path (default: drawn from the seed).
            fov_deg: force the horizontal field of view (default: drawn in [55, 70] degrees).

        Returns:
            The scene.
        """
        if trajectory is not None and trajectory not in get_args(TrajectoryKind):
            raise ValueError(
                f"`trajectory` must be one of {get_args(TrajectoryKind)} or None, got "
                f"{trajectory!r}"
            )
        if fov_deg is not None and not 0.0 < fov_deg < 180.0:
            raise ValueError(f"`fov_deg` must lie in (0, 180), got {fov_deg!r}")
        gen = torch.Generator().manual_seed(int(seed) & (2**63 - 1))

        def uniform(lo: float, hi: float, *shape: int) -> Tensor:
            return lo + (hi - lo) * torch.rand(shape or (1,), generator=gen)

        def scalar(lo: float, hi: float) -> float:
            return float(uniform(lo, hi)[0])

        def choice(n: int) -> int:
            return int(torch.randint(n, (1,), generator=gen)[0])

        half_w, half_d = scalar(2.0, 3.2), scalar(2.0, 3.6)
        floor = scalar(1.3, 1.7)
        ceiling = floor - scalar(2.5, 3.2)
        room_lo = torch.tensor([-half_w, ceiling, -half_d])
        room_hi = torch.tensor([half_w, floor, half_d])
        kind = trajectory or get_args(TrajectoryKind)[choice(3)]
        eye = floor - scalar(1.1, 1.6)

        # The path first, then furniture placed off it.
        inner = min(half_w, half_d)
        look_target = torch.zeros(3)
        inward = 0.0
        if kind == "orbit":
            target_xz = uniform(-0.3, 0.3, 2)
            radius = scalar(1.3, max(1.4, inner - 0.45 - float(target_xz.abs().max())))
            centre = torch.tensor([float(target_xz[0]), eye, float(target_xz[1])])
            radii = torch.tensor([radius, radius])
        else:
            centre = torch.tensor([scalar(-0.2, 0.2), eye, scalar(-0.2, 0.2)])
            radii = torch.stack([uniform(0.55, 0.7)[0] * half_w, uniform(0.55, 0.7)[0] * half_d])
            inward = scalar(0.5, 1.1) if kind == "walk" else scalar(0.15, 0.4)
        path_phase = scalar(0.0, _TWO_PI)
        direction = 1.0 if choice(2) else -1.0
        period = int(torch.randint(60, 91, (1,), generator=gen)[0])

        probe = torch.linspace(0.0, _TWO_PI, 73)[:-1]
        path_xz = _path_xz(kind, centre, radii, probe)

        shapes: list[tuple[int, Tensor, float]] = []  # (kind, centre xz, footprint radius)
        if kind == "orbit":
            obj_kind = choice(3)
            shapes.append((obj_kind, centre[[0, 2]].clone(), scalar(0.25, 0.5)))
        num_objects = 3 + choice(4)
        for _ in range(40):
            if len(shapes) >= num_objects:
                break
            obj_kind = choice(3)
            footprint = scalar(0.15, 0.55)
            xz = torch.stack(
                [uniform(-half_w + 0.3, half_w - 0.3)[0], uniform(-half_d + 0.3, half_d - 0.3)[0]]
            )
            xz = xz.clamp(
                torch.tensor([-half_w + footprint + 0.05, -half_d + footprint + 0.05]),
                torch.tensor([half_w - footprint - 0.05, half_d - footprint - 0.05]),
            )
            clear_path = torch.cdist(xz[None], path_xz).min() > footprint + 0.45
            clear_objects = all(
                float(torch.linalg.vector_norm(xz - other)) > footprint + r + 0.1
                for _, other, r in shapes
            )
            if clear_path and clear_objects:
                shapes.append((obj_kind, xz, footprint))

        boxes, spheres, cylinders = [], [], []
        for obj_kind, xz, footprint in shapes:
            if obj_kind == 0:
                half = torch.stack(
                    [
                        uniform(0.5, 0.75)[0] * footprint,
                        uniform(0.15, 0.6)[0],
                        uniform(0.5, 0.75)[0] * footprint,
                    ]
                )
                c = torch.stack([xz[0], floor - half[1], xz[1]])
                boxes.append((c, half, uniform(0.0, math.pi / 2)[0]))
            elif obj_kind == 1:
                r = torch.tensor(min(footprint, 0.5))
                spheres.append((torch.stack([xz[0], floor - r, xz[1]]), r))
            else:
                r = torch.tensor(footprint * 0.8)
                h = uniform(0.2, 0.75)[0]
                cylinders.append((torch.stack([xz[0], floor - h, xz[1]]), r, h))

        def stack(items: list, i: int, shape: tuple[int, ...]) -> Tensor:
            return torch.stack([it[i] for it in items]) if items else torch.zeros(shape)

        num_surfaces = 6 + len(boxes) + len(spheres) + len(cylinders)
        hue_base = torch.rand(num_surfaces, 3, generator=gen)
        color_a = 0.15 + 0.85 * hue_base
        color_b = (color_a * uniform(0.25, 0.7, num_surfaces, 1)).clamp(0.0, 1.0)
        swap = torch.rand(num_surfaces, 1, generator=gen) < 0.5
        color_a, color_b = torch.where(swap, color_b, color_a), torch.where(swap, color_a, color_b)
        window_face = (0, 2, 3, 5)[choice(4)]
        # Window centre in the wall's texture coordinates (the two other axes, y second).
        wall_axis = 2 if window_face in (0, 3) else 0
        span = float(room_hi[wall_axis])
        win_centre = torch.tensor([scalar(-0.6 * span, 0.6 * span), scalar(ceiling + 0.9, eye)])
        win_half = uniform(0.3, 0.7, 2)
        return cls(
            room_lo=room_lo,
            room_hi=room_hi,
            box_centre=stack(boxes, 0, (0, 3)),
            box_half=stack(boxes, 1, (0, 3)),
            box_yaw=stack(boxes, 2, (0,)),
            sphere_centre=stack(spheres, 0, (0, 3)),
            sphere_radius=stack(spheres, 1, (0,)),
            cyl_centre=stack(cylinders, 0, (0, 3)),
            cyl_radius=stack(cylinders, 1, (0,)),
            cyl_half_height=stack(cylinders, 2, (0,)),
            color_a=color_a,
            color_b=color_b,
            pattern=torch.randint(4, (num_surfaces,), generator=gen),
            pattern_scale=uniform(0.12, 0.45, num_surfaces),
            stripe_angle=uniform(0.0, math.pi, num_surfaces),
            wave_freq=(torch.rand(num_surfaces, _NUM_WAVES, 2, generator=gen) - 0.5) * 6.0,
            wave_phase=torch.rand(num_surfaces, _NUM_WAVES, generator=gen) * _TWO_PI,
            detail_freq=(torch.rand(6, 3, generator=gen) - 0.5) * 24.0,
            light=torch.stack(
                [
                    uniform(-0.7, 0.7)[0] * half_w,
                    torch.tensor(ceiling + 0.2),
                    uniform(-0.7, 0.7)[0] * half_d,
                ]
            ),
            ambient=scalar(0.3, 0.55),
            window_face=window_face,
            window_lo=win_centre - win_half,
            window_hi=win_centre + win_half,
            trajectory=kind,
            period=period,
            path_centre=centre,
            path_radii=radii,
            path_phase=path_phase,
            path_direction=direction,
            look_target=torch.stack([centre[0], torch.tensor(floor - scalar(0.2, 0.6)), centre[2]])
            if kind == "orbit"
            else look_target,
            inward=inward,
            bob=scalar(0.0, 0.08),
            fov_deg=float(fov_deg) if fov_deg is not None else scalar(55.0, 70.0),
        )

    # ------------------------------------------------------------------ cameras
    @property
    def diameter(self) -> float:
        """Length of the room's diagonal in metres (an upper bound on any GT cloud's extent)."""
        return float(torch.linalg.vector_norm(self.room_hi - self.room_lo))

    def intrinsics(self, height: int, width: int) -> Float[Tensor, "3 3"]:
        """Pinhole intrinsics for ``height x width`` images (square pixels, centred)."""
        focal = 0.5 * width / math.tan(math.radians(self.fov_deg) / 2)
        return intrinsics_from_focal(torch.tensor(focal), height, width)

    def camera_pose(self, frame_indices: Int[Tensor, "T"]) -> Float[Tensor, "T 4 4"]:
        """Camera-to-world poses of frames of the video (periodic with period ``period``)."""
        t = frame_indices.to(torch.float32)
        angle = self.path_phase + self.path_direction * _TWO_PI * t / self.period
        xz = _path_xz(self.trajectory, self.path_centre, self.path_radii, angle)
        y = self.path_centre[1] + self.bob * torch.sin(3.0 * angle)
        centre = torch.stack([xz[:, 0], y, xz[:, 1]], dim=-1)
        if self.trajectory == "orbit":
            forward = self.look_target - centre
        else:
            ahead = _path_xz(
                self.trajectory,
                self.path_centre,
                self.path_radii,
                angle + 0.05 * self.path_direction,
            )
            tangent = _unit(ahead - xz)
            to_centre = _unit(self.path_centre[[0, 2]] - xz)
            turn = self.inward * (1.0 + 0.3 * torch.sin(2.0 * angle))[:, None]
            look = torch.cos(turn) * tangent + torch.sin(turn) * to_centre
            pitch = 0.15 + 0.1 * torch.sin(angle)
            forward = torch.stack([look[:, 0], pitch, look[:, 1]], dim=-1)
        return look_along(centre, forward)

    # ------------------------------------------------------------------ rendering
    def render(self, frame_indices: Int[Tensor, "T"], height: int, width: int) -> SceneClip:
        """Render frames of the video with their ground truth.

        Args:
            frame_indices: ``[T]`` integer frame numbers (frame ``t + period`` is frame ``t``).
            height: image height ``H``.
            width: image width ``W``.

        Returns:
            The [`SceneClip`][spatialmem.data.scenes.SceneClip] of those frames.
        """
        check_tensor("frame_indices", frame_indices, ndim=1, floating=False, expected="T")
        k = self.intrinsics(height, width)
        pose = self.camera_pose(frame_indices)
        origin, rays = (x.reshape(-1, 3) for x in camera_rays(pose, k, height, width))
        depth, surface, normal, uv = self._intersect(origin, rays)
        pts = origin + depth[:, None] * rays
        colour = self._shade(pts, surface, normal, uv)
        in_window = (
            (surface == self.window_face)
            & (uv >= self.window_lo).all(-1)
            & (uv <= self.window_hi).all(-1)
        )
        sky = torch.tensor([0.75, 0.85, 1.0])
        colour = torch.where(in_window[:, None], sky, colour)
        shape = (frame_indices.shape[0], height, width)
        images = (colour * 2 - 1).reshape(*shape, 3).permute(0, 3, 1, 2).contiguous()
        return SceneClip(
            images=images,
            pts3d=pts.reshape(*shape, 3),
            valid=~in_window.reshape(shape),
            camera_pose=pose,
            intrinsics=k,
            frame_indices=frame_indices.to(torch.int64),
        )

    def _intersect(self, o: Tensor, d: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """First hit of every ray: depth ``[N]``, surface id ``[N]``, unit normal ``[N, 3]``
        facing the camera, texture coordinates ``[N, 2]`` (metres along the surface)."""
        d = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        # Room seen from inside: the nearest exit plane.
        bound = torch.where(d > 0, self.room_hi, self.room_lo)
        t_axis = (bound - o) / d
        best_t, axis = t_axis.min(dim=-1)
        positive = torch.gather(d > 0, -1, axis[:, None])[:, 0]
        best_s = axis + 3 * positive.long()
        best_n = (
            -torch.nn.functional.one_hot(axis, 3).float()
            * torch.where(positive, 1.0, -1.0)[:, None]
        )
        p = o + best_t[:, None] * d
        # Texture coordinates: the two other axes, vertical (y) second on the walls.
        uv_by_axis = torch.stack([p[:, [2, 1]], p[:, [0, 2]], p[:, [0, 1]]], dim=1)
        best_uv = torch.gather(uv_by_axis, 1, axis[:, None, None].expand(-1, 1, 2))[:, 0]

        def keep(t: Tensor, s: int, n: Tensor, uv: Tensor) -> None:
            nonlocal best_t, best_s, best_n, best_uv
            closer = t < best_t
            best_t = torch.where(closer, t, best_t)
            best_s = torch.where(closer, s, best_s)
            best_n = torch.where(closer[:, None], n, best_n)
            best_uv = torch.where(closer[:, None], uv, best_uv)

        surface = 6
        for c, h, yaw in zip(self.box_centre, self.box_half, self.box_yaw, strict=True):
            cos, sin = torch.cos(yaw), torch.sin(yaw)
            rot = torch.stack(  # box axes (columns) in world coordinates: a turn about y
                [
                    torch.stack([cos, torch.zeros(()), -sin]),
                    torch.tensor([0.0, 1.0, 0.0]),
                    torch.stack([sin, torch.zeros(()), cos]),
                ],
                dim=-1,
            )
            lo_, dl = (o - c) @ rot, d @ rot
            dl = torch.where(dl.abs() < 1e-9, torch.full_like(dl, 1e-9), dl)
            t1, t2 = (-h - lo_) / dl, (h - lo_) / dl
            t_near, ax = torch.minimum(t1, t2).max(dim=-1)
            t_far = torch.maximum(t1, t2).amin(dim=-1)
            hit = (t_near <= t_far) & (t_near > _EPS)
            sign = -torch.sign(torch.gather(dl, -1, ax[:, None]))
            n_local = torch.nn.functional.one_hot(ax, 3).float() * sign
            pl = lo_ + t_near[:, None] * dl
            uv_ax = torch.stack([pl[:, [2, 1]], pl[:, [0, 2]], pl[:, [0, 1]]], dim=1)
            uv = torch.gather(uv_ax, 1, ax[:, None, None].expand(-1, 1, 2))[:, 0]
            keep(torch.where(hit, t_near, _FAR), surface, n_local @ rot.T, uv)
            surface += 1
        for c, r in zip(self.sphere_centre, self.sphere_radius, strict=True):
            oc = o - c
            a = (d * d).sum(-1)
            b = (oc * d).sum(-1)
            disc = b * b - a * ((oc * oc).sum(-1) - r * r)
            t = (-b - disc.clamp_min(0).sqrt()) / a
            hit = (disc > 0) & (t > _EPS)
            n = _unit(o + t[:, None] * d - c)
            uv = torch.stack(
                [torch.atan2(n[:, 2], n[:, 0]) * r, torch.asin(n[:, 1].clamp(-1, 1)) * r], -1
            )
            keep(torch.where(hit, t, _FAR), surface, n, uv)
            surface += 1
        for c, r, hh in zip(self.cyl_centre, self.cyl_radius, self.cyl_half_height, strict=True):
            ox, oz = o[:, 0] - c[0], o[:, 2] - c[2]
            a = d[:, 0] ** 2 + d[:, 2] ** 2
            b = ox * d[:, 0] + oz * d[:, 2]
            disc = b * b - a * (ox * ox + oz * oz - r * r)
            t_side = (-b - disc.clamp_min(0).sqrt()) / a.clamp_min(1e-12)
            y_side = o[:, 1] + t_side * d[:, 1] - c[1]
            side = (disc > 0) & (t_side > _EPS) & (y_side.abs() <= hh)
            t_cap = (c[1] - hh - o[:, 1]) / d[:, 1]
            px, pz = ox + t_cap * d[:, 0], oz + t_cap * d[:, 2]
            cap = (t_cap > _EPS) & (px * px + pz * pz <= r * r)
            t_side = torch.where(side, t_side, _FAR)
            t_cap = torch.where(cap, t_cap, _FAR)
            on_cap = t_cap < t_side
            p = o + t_side[:, None] * d
            n_side = _unit(torch.stack([p[:, 0] - c[0], torch.zeros_like(px), p[:, 2] - c[2]], -1))
            n_cap = torch.tensor([0.0, -1.0, 0.0]).expand_as(n_side)
            uv_side = torch.stack([torch.atan2(n_side[:, 2], n_side[:, 0]) * r, y_side], -1)
            keep(
                torch.minimum(t_side, t_cap),
                surface,
                torch.where(on_cap[:, None], n_cap, n_side),
                torch.where(on_cap[:, None], torch.stack([px, pz], -1), uv_side),
            )
            surface += 1
        return best_t, best_s, best_n, best_uv

    def _shade(self, pts: Tensor, surface: Tensor, normal: Tensor, uv: Tensor) -> Tensor:
        """Lit texture colour ``[N, 3]`` in [0, 1] of surface points."""
        scale = self.pattern_scale[surface][:, None]
        cells = torch.floor(uv / scale).sum(-1).remainder(2.0)
        angle = self.stripe_angle[surface]
        along = (uv[:, 0] * torch.cos(angle) + uv[:, 1] * torch.sin(angle)) / scale[:, 0]
        stripes = torch.sigmoid(6.0 * torch.sin(_TWO_PI * along))
        phase = torch.einsum("nj,nkj->nk", uv, self.wave_freq[surface]) * _TWO_PI
        noise = 0.5 + 0.5 * torch.sin(phase + self.wave_phase[surface]).mean(-1) * 1.6
        blend = cells * 0.6 + noise * 0.4
        value = torch.stack([cells, stripes, noise.clamp(0, 1), blend], -1)
        value = torch.gather(value, -1, self.pattern[surface][:, None])
        colour = torch.lerp(self.color_b[surface], self.color_a[surface], value)
        detail = torch.sin(_TWO_PI * pts @ self.detail_freq.T).mean(-1, keepdim=True)
        colour = colour * (0.88 + 0.12 * detail)
        to_light = self.light - pts
        dist2 = (to_light * to_light).sum(-1, keepdim=True)
        lambert = ((normal * to_light).sum(-1, keepdim=True) / dist2.sqrt()).clamp_min(0.0)
        light = self.ambient + (1.0 - self.ambient) * lambert * 9.0 / (dist2 + 3.0)
        return (colour * light).clamp(0.0, 1.0)


def _path_xz(
    kind: TrajectoryKind, centre: Tensor, radii: Tensor, angle: Tensor
) -> Float[Tensor, "N 2"]:
    """Points of a closed path at the given angles: an ellipse, or a rounded rectangle (a
    superellipse of exponent 4) for ``"forward"``."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    if kind == "forward":
        cos = torch.sign(cos) * cos.abs().sqrt()
        sin = torch.sign(sin) * sin.abs().sqrt()
    return torch.stack([centre[0] + radii[0] * cos, centre[2] + radii[1] * sin], dim=-1)


def room_sequence(
    index: int,
    num_frames: int = 48,
    height: int = 64,
    width: int = 96,
    *,
    split: Split = "test",
    stride: int = 2,
    trajectory: TrajectoryKind | None = None,
) -> SceneClip:
    """An evaluation sequence: frames ``0, stride, 2 stride, ...`` of scene ``index`` of a split.

    With the defaults (48 frames, stride 2) the camera covers 96 video frames, more than one
    loop of every path (60-90 frames), so the sequence ends where it began.

    Args:
        index: scene number within the split.
        num_frames: frames ``T``.
        height: image height ``H``.
        width: image width ``W``.
        split: ``"test"`` (default), ``"val"`` or ``"train"``.
        stride: video frames between consecutive frames of the sequence.
        trajectory: force the kind of camera path.

    Returns:
        A [`SceneClip`][spatialmem.data.scenes.SceneClip] with its ground truth.
    """
    if num_frames < 1 or stride < 1:
        raise ValueError(f"`num_frames` and `stride` must be >= 1, got {num_frames}, {stride}")
    scene = RoomScene.random(scene_seed(split, index), trajectory=trajectory)
    return scene.render(torch.arange(num_frames, dtype=torch.int64) * stride, height, width)


class RoomScenes(SceneClipDataset):
    """Training / evaluation clips of furnished rooms (map-style dataset).

    Item ``i`` of epoch ``e`` is a clip of scene ``seed + e * num_scenes + i`` of the split when
    ``fresh_each_epoch`` (every epoch sees new rooms: unlimited data for training), otherwise of
    scene ``seed + i``. Its frames are drawn by the curriculum sampler
    [`CurriculumClips`][spatialmem.data.CurriculumClips] from the first ``video_frames`` frames
    of the scene's video, or are ``0, stride, 2 stride, ...`` without a curriculum. Everything
    depends only on ``(split, seed, epoch, i)``: every worker and every rank draws the same clip.

    Args:
        num_scenes: items per epoch.
        num_frames: frames per clip ``T``.
        height: image height ``H``.
        width: image width ``W``.
        split: seed range of the scenes.
        seed: offset of the scene numbers and seed of the curriculum draws.
        curriculum: sampler settings, ``None`` for fixed clips.
        video_frames: frames of video the curriculum samples from.
        num_epochs: total epochs (the curriculum's training ratio ``epoch / num_epochs``).
        stride: frame step of fixed clips.
        fresh_each_epoch: new scenes every epoch (default: only for the training split).
        path_weights: relative weights of the camera paths, e.g. ``{"orbit": 2, "walk": 1,
            "forward": 1}`` (kinds left out are never drawn); each scene's kind is then drawn
            with these odds from its own seed. ``None``: the kind that
            [`RoomScene.random`][spatialmem.data.rooms.RoomScene.random] draws (about a third
            each).
    """

    def __init__(
        self,
        num_scenes: int,
        num_frames: int = 5,
        height: int = 64,
        width: int = 96,
        *,
        split: Split = "train",
        seed: int = 0,
        curriculum: CurriculumConfig | None = None,
        video_frames: int = 64,
        num_epochs: int = 1,
        stride: int = 2,
        fresh_each_epoch: bool | None = None,
        path_weights: Mapping[str, int | float] | None = None,
    ) -> None:
        scene_seed(split, 0)  # validates the split
        self._path_odds = None if path_weights is None else _path_odds(path_weights)
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
        self.split: Split = split
        self.fresh_each_epoch = split == "train" if fresh_each_epoch is None else fresh_each_epoch

    def scene_index(self, index: int) -> int:
        """Scene number (within the split) of item ``index`` at the current epoch."""
        offset = self.epoch * self.num_scenes if self.fresh_each_epoch else 0
        return (self.seed + offset + index) % SPLIT_SIZE

    def scene(self, index: int) -> RoomScene:
        """The scene of item ``index`` at the current epoch."""
        seed = scene_seed(self.split, self.scene_index(index))
        if self._path_odds is None:
            return RoomScene.random(seed)
        # A generator of its own (salted) so the draw of the kind does not shift the room's.
        gen = torch.Generator().manual_seed(seed ^ _PATH_SALT)
        kind = get_args(TrajectoryKind)[int(torch.multinomial(self._path_odds, 1, generator=gen))]
        return RoomScene.random(seed, trajectory=kind)


_PATH_SALT = 0x5EED_CA3E
"""Mixed into a scene's seed to draw its camera path under ``path_weights``."""


def _path_odds(weights: Mapping[str, int | float]) -> Float[Tensor, "3"]:
    """The weights as a tensor in the order of ``TrajectoryKind``, checked."""
    if not isinstance(weights, Mapping):
        raise TypeError(
            "`path_weights` must be a mapping of camera path to weight, e.g. {'orbit': 2, "
            "'walk': 1} (parse_path_weights reads the text form), got "
            f"{type(weights).__name__}"
        )
    kinds = get_args(TrajectoryKind)
    unknown = sorted(map(str, set(weights) - set(kinds)))
    if unknown:
        raise ValueError(f"`path_weights` has unknown camera paths {unknown}; known: {kinds}")
    if not all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights.values()):
        raise TypeError(f"`path_weights` values must be numbers, got {dict(weights)!r}")
    odds = [float(weights.get(kind, 0.0)) for kind in kinds]
    if not all(math.isfinite(w) and w >= 0.0 for w in odds) or sum(odds) <= 0.0:
        raise ValueError(
            f"`path_weights` must be finite, >= 0 and not all 0, got {dict(weights)!r}"
        )
    return torch.tensor(odds)


def parse_path_weights(text: str) -> dict[str, float]:
    """Camera-path weights written as text, e.g. ``"orbit=2, walk=1, forward=1"``.

    Args:
        text: comma-separated ``kind=weight`` pairs, kinds among ``TrajectoryKind``.

    Returns:
        The weights by kind (checked as [`RoomScenes`][spatialmem.data.rooms.RoomScenes] checks
        them).

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: a malformed pair, an unknown kind, a repeated kind or a bad weight.
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` must be a str such as 'orbit=2,walk=1', got {type(text).__name__}")
    weights: dict[str, float] = {}
    for part in text.split(","):
        kind, sep, value = (s.strip() for s in part.partition("="))
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or weight is None or kind in weights:
            raise ValueError(
                f"path weights must be comma-separated kind=weight pairs with each kind once, "
                f"e.g. 'orbit=2,walk=1,forward=1'; got {text!r}"
            )
        weights[kind] = weight
    _path_odds(weights)
    return weights
