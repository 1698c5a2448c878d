"""How accurate a reconstruction would be if every frame were registered perfectly.

Each test room is streamed as the demo streams it (``SegmentedReconstructor`` with the default
``Segments``: 6 + 3 frames, loops closed). The reconstruction is scored as the ablation scores
it (Sim(3) alignment onto the ground truth, ``evaluate_pointmaps``, the same seeded subset of
20,000 pixels), and scored again after every predicted frame was fitted to its own ground truth
by its own similarity (Umeyama): an oracle that no registration can beat with these frames.
The gap between the two is what better registration could still gain; the oracle's accuracy is
what the frames' own geometry allows.

A third pair of columns does the same with each frame's points as the pair model predicts them
in the frame's own camera (view 1 of a pair with the next frame, as at the first step of a
stream): the geometry the network draws for a frame when it need not place it.

    python benchmarks/registration_bound.py                     # shipped weights, test rooms 0-19
    python benchmarks/registration_bound.py --weights model.pt --rooms 0:5

Prints one row per room and the means, and writes ``benchmarks/results/registration_bound.json``
(with every frame's own error: the mean distance of its fitted points from their true ones, over
the diameter) and, with ``--plot``, that error frame by frame, averaged over the rooms, with the
segments' starts marked (needs matplotlib).
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import Tensor

from _common import (
    add_room_model_arguments,
    markdown_table,
    model_from_args,
    pyplot_or_none,
    rooms_from_args,
    write_json,
)
from spatialmem.data.rooms import RoomScene, room_sequence, scene_seed
from spatialmem.geometry import transform_points, umeyama
from spatialmem.inference import SegmentedReconstructor, Segments
from spatialmem.metrics import bounding_box_diagonal, evaluate_pointmaps
from spatialmem.models import Spann3R

RESULTS = Path(__file__).resolve().parent / "results" / "registration_bound.json"


def fit_each_frame(pred: Tensor, truth: Tensor, valid: Tensor) -> Tensor:
    """``pred [T, H, W, 3]`` with every frame moved by the similarity that best fits its valid
    pixels onto ``truth [T, H, W, 3]`` (``valid [T, H, W]``)."""
    flat = pred.reshape(pred.shape[0], -1, 3).float()
    fits = umeyama(flat, truth.reshape(flat.shape), mask=valid.reshape(flat.shape[:2]))
    return transform_points(fits, flat).reshape(pred.shape)


@torch.no_grad()
def pair_shapes(model: Spann3R, images: Tensor) -> Tensor:
    """``[T, H, W, 3]``: every frame of ``images [T, 3, H, W]`` as view 1 of a pair with the
    next frame (the last with the one before), in its own camera: what the first step of a
    stream starting at that frame predicts for it."""
    t = images.shape[0]
    partner = torch.tensor([i + 1 if i + 1 < t else i - 1 for i in range(t)])
    view1, view2 = model.encode_pair(images, images[partner])
    return model.dust3r.predict_pair(view1, view2, view2_head=False).view1.pts3d.float()


def frame_errors(fitted: Tensor, truth: Tensor, valid: Tensor, diameter: float) -> list[float]:
    """Every frame's mean distance between its points ``fitted [T, H, W, 3]`` and the true ones
    over its valid pixels, divided by ``diameter``."""
    dist = (fitted - truth.nan_to_num()).norm(dim=-1) * valid
    return (dist.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1) / diameter).tolist()


def plot(rows: list[dict], segments: Segments, path: Path) -> Path | None:
    """The frames' own errors (streamed, and the pair model's), averaged over the rooms, by
    frame, with the first new frame of every segment after the first marked."""
    plt = pyplot_or_none()
    if plt is None:
        return None

    fig, ax = plt.subplots(figsize=(9.0, 3.6), dpi=110)
    for key, label in (("frame_error", "streamed in segments"),
                       ("frame_error_pairs", "pair model, view 1 (own camera)")):  # fmt: skip
        mean = [statistics.fmean(v) for v in zip(*(r[key] for r in rows), strict=True)]
        ax.plot(mean, marker=".", label=label)
    frames = len(rows[0]["frame_error"])
    for start in range(segments.length, frames, segments.frames):
        ax.axvline(start - 0.5, color="gray", alpha=0.3, lw=0.8)
    ax.set_xlabel("frame (gray lines: a new segment's first new frame)")
    ax.set_ylabel("error after the frame's own Sim(3)\n/ diameter")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Each frame's own geometry, mean over {len(rows)} rooms", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _scores(pred: Tensor, truth: Tensor, valid: Tensor, diameter: float) -> tuple[float, float]:
    m = evaluate_pointmaps(pred, truth, valid, align="sim3", max_points=20_000, seed=0)
    return float(m.acc) / diameter, float(m.comp) / diameter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_room_model_arguments(parser, split="test", rooms="0:20")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--plot", help="PNG of the frames' own errors, frame by frame")
    args = parser.parse_args(argv)
    model = model_from_args(args)
    segments = Segments()
    rows = []
    for room in rooms_from_args(args):
        clip = room_sequence(room, args.frames, split=args.split, stride=args.stride)
        results = SegmentedReconstructor(model, segments, optimize=False).run(clip.images)
        pred = torch.stack([r.pts3d for r in results]).float()
        diameter = float(bounding_box_diagonal(clip.pts3d[clip.valid]))
        acc, comp = _scores(pred, clip.pts3d, clip.valid, diameter)
        fitted = fit_each_frame(pred, clip.pts3d, clip.valid)
        acc_fit, comp_fit = _scores(fitted, clip.pts3d, clip.valid, diameter)
        own = fit_each_frame(pair_shapes(model, clip.images), clip.pts3d, clip.valid)
        acc_own, comp_own = _scores(own, clip.pts3d, clip.valid, diameter)
        rows.append({
            "room": room, "path": RoomScene.random(scene_seed(args.split, room)).trajectory,
            "acc": acc, "comp": comp, "acc_fitted": acc_fit, "comp_fitted": comp_fit,
            "acc_pairs_fitted": acc_own, "comp_pairs_fitted": comp_own,
            "frame_error": frame_errors(fitted, clip.pts3d, clip.valid, diameter),
            "frame_error_pairs": frame_errors(own, clip.pts3d, clip.valid, diameter),
        })  # fmt: skip
    keys = ("acc", "comp", "acc_fitted", "comp_fitted", "acc_pairs_fitted", "comp_pairs_fitted")
    mean = {"room": "mean", "path": ""} | {k: statistics.fmean(r[k] for r in rows) for k in keys}
    table = markdown_table(
        [*rows, mean],
        [("room", "room"), ("path", "camera path"),
         ("acc", "Acc / diameter", ".4f"), ("comp", "Comp / diameter", ".4f"),
         ("acc_fitted", "Acc, frames fitted", ".4f"),
         ("comp_fitted", "Comp, frames fitted", ".4f"),
         ("acc_pairs_fitted", "Acc, pair view 1 fitted", ".4f"),
         ("comp_pairs_fitted", "Comp, pair view 1 fitted", ".4f")],
    )  # fmt: skip
    sys.stdout.write(f"{table}\n")
    weights = args.weights or "shipped"
    write_json(RESULTS, {"model": args.model, "weights": weights, "split": args.split,
                         "frames": args.frames, "stride": args.stride, "rows": rows,
                         "mean": mean})  # fmt: skip
    if args.plot:
        plot(rows, segments, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
