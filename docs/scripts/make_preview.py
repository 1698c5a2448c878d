"""Regenerate docs/images/preview-synthetic.png (the picture of the "Cameras and exports" guide).

A reconstruction stand-in (the ground truth of a synthetic scene with Gaussian noise of 0.5% of
its diagonal, in frame 0's camera frame) beside its ground truth, drawn by
spatialmem.viz.render_preview.
"""

from pathlib import Path

import torch

from spatialmem.data.scenes import synthetic_clip
from spatialmem.geometry import points_in_camera
from spatialmem.viz import render_preview

OUT = Path(__file__).resolve().parents[1] / "images" / "preview-synthetic.png"


def main() -> None:
    clip = synthetic_clip(num_frames=8, height=48, width=64, seed=1, stride=2)
    first = clip.camera_pose[:1].expand(clip.num_frames, 4, 4)
    gt = points_in_camera(clip.pts3d, first)[clip.valid]
    colours = ((clip.images.permute(0, 2, 3, 1) + 1) / 2)[clip.valid]
    scale = float((gt.amax(0) - gt.amin(0)).norm())
    noisy = gt + 0.005 * scale * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    render_preview(
        noisy,
        OUT,
        colors=colours,
        gt_points=gt,
        gt_colors=colours,
        title="synthetic scene: reconstruction stand-in (top) and ground truth (bottom)",
    )


if __name__ == "__main__":
    main()
