"""Regenerate docs/images/loop-closure.png (the picture of the results page's "Closing loops").

Validation room 2 (a forward path that comes back to its start), reconstructed by the shipped
`spann3r_small_synthetic` in segments of 6 + 3, chained only and with the loops closed; each
reconstruction is Sim(3)-aligned to the ground truth and drawn from above (x, z), every frame
coloured by its index:

    python docs/scripts/make_loop_closure_figure.py
"""

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import spatialmem as sm
from spatialmem.data.rooms import room_sequence
from spatialmem.geometry import transform_points, umeyama
from spatialmem.inference import LoopClosure, SegmentedReconstructor, Segments
from spatialmem.metrics import evaluate_pointmaps

OUT = Path(__file__).resolve().parents[1] / "images" / "loop-closure.png"
ROOM = 2


def main() -> None:
    model = sm.create_model("spann3r_small_synthetic", pretrained=True).eval()
    clip = room_sequence(ROOM, 48, split="val")
    valid, truth = clip.valid, clip.pts3d
    diameter = float((truth[valid].amax(0) - truth[valid].amin(0)).norm())
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharex=True, sharey=True)
    panels = [("ground truth", truth, "")]
    for name, loops in (("chained only", None), ("loops closed", LoopClosure())):
        recon = SegmentedReconstructor(model, Segments(loop_closure=loops))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pts = torch.stack([r.pts3d for r in recon.run(clip.images)]).float()
        fit = umeyama(pts[valid][None], truth[valid][None])
        aligned = transform_points(fit, pts.reshape(1, -1, 3)).reshape(pts.shape)
        score = evaluate_pointmaps(pts, truth, valid, align="sim3", max_points=20000)
        note = f"Acc {score.acc / diameter:.1%}, Comp {score.comp / diameter:.1%} of the diameter"
        panels.append((name, aligned, note))
    for ax, (name, pts, note) in zip(axes, panels, strict=True):
        for frame in range(pts.shape[0]):
            p = pts[frame][valid[frame]][::7]
            ax.scatter(p[:, 0], p[:, 2], s=0.3, color=plt.cm.viridis(frame / (pts.shape[0] - 1)))
        ax.set_title(f"{name}\n{note}" if note else f"{name}\n")
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
    axes[0].set_ylabel("z (m)")
    lo, hi = truth[valid].amin(0), truth[valid].amax(0)
    axes[0].set_xlim(float(lo[0]) - 0.5, float(hi[0]) + 0.5)
    axes[0].set_ylim(float(lo[2]) - 0.5, float(hi[2]) + 0.5)
    fig.suptitle(
        f"Validation room {ROOM} from above, 48 frames (colour: frame index, dark = first); "
        "segments of 6 + 3"
    )
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
