"""How much of the camera's turn between two frames a Spann3R model registers.

Each pair of frames ``(a, a + gap)`` of a synthetic room is streamed alone (a 2-frame
``OnlineReconstructor`` stream). Each predicted frame is then fitted to its ground truth, in
frame ``a``'s camera, by its own similarity (Umeyama). If the model placed frame ``a + gap``
where it belongs relative to frame ``a``, the two fits are the same; the rotation between them
is the turn the model missed. The true turn between the two cameras is printed beside it: an
error equal to the true turn means the second frame was drawn in its own camera, as if the
camera had not moved.

A second measure asks whether the model looks at the first frame at all when it places the
second: view 2's points are predicted twice, once beside frame ``a`` and once beside frame
``a + gap`` itself (a pair of one frame, which the model must draw in that frame's camera), and
the mean distance between the two predictions is divided by the mean distance of the points
from the camera. The same ratio of the ground truth (frame ``a + gap`` in frame ``a``'s camera
against in its own) is printed beside it: a model that registers the pair moves view 2 as far
as the truth does; one that draws frame ``a + gap`` as if the cameras were the same moves it
hardly at all.

    python benchmarks/pair_rotation.py                          # shipped weights, val rooms 0-6
    python benchmarks/pair_rotation.py --weights model.pt --rooms 0:20 --gaps 2,4

Prints one row per room and gap (medians over the pairs) and writes
``benchmarks/results/pair_rotation.json``.
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
    rooms_from_args,
    write_json,
)
from spatialmem.data.rooms import RoomScene, room_sequence, scene_seed
from spatialmem.data.scenes import SceneClip
from spatialmem.geometry import (
    invert_rigid,
    rotation_angle_deg,
    sim3_scale,
    transform_points,
    umeyama,
)
from spatialmem.inference import OnlineReconstructor
from spatialmem.models import Spann3R

RESULTS = Path(__file__).resolve().parent / "results" / "pair_rotation.json"


def missed_turn(model: Spann3R, clip: SceneClip, first: int, second: int) -> tuple[float, float]:
    """``(true turn, missed turn)`` in degrees between frames ``first`` and ``second``."""
    out = OnlineReconstructor(model, optimize=False).run(clip.images[[first, second]])
    to_first = invert_rigid(clip.camera_pose[first])[None]
    fits = []
    for result, frame in zip(out, (first, second), strict=True):
        truth = transform_points(to_first, clip.pts3d[frame].reshape(1, -1, 3))
        pred = result.pts3d.reshape(1, -1, 3).float()
        fits.append(umeyama(pred, truth, mask=clip.valid[frame].reshape(1, -1))[0])
    error = torch.linalg.inv(fits[0]) @ fits[1]
    missed = rotation_angle_deg(error[:3, :3] / sim3_scale(error), torch.eye(3))
    rotations = clip.camera_pose[[first, second], :3, :3]
    return float(rotation_angle_deg(rotations[0], rotations[1])), float(missed)


def _relative_move(moved: Tensor, still: Tensor) -> float:
    """Mean distance between two predictions of the same pixels over the mean distance of
    ``still`` from its camera."""
    return float((moved - still).norm(dim=-1).mean() / still.norm(dim=-1).mean())


def view1_effect(model: Spann3R, clip: SceneClip, first: int, second: int) -> tuple[float, float]:
    """``(true, predicted)`` relative move of frame ``second``'s points when the first view of
    the pair is frame ``first`` instead of frame ``second`` itself (see the module docs)."""
    pair = model.dust3r
    view2 = pair.encode(clip.images[second : second + 1])
    predicted = []
    for view1 in (first, second):
        decoded = pair.predict_pair(pair.encode(clip.images[view1 : view1 + 1]), view2)
        assert decoded.view2 is not None
        predicted.append(decoded.view2.pts3d[0].float())
    valid = clip.valid[second]
    truth = [
        transform_points(invert_rigid(clip.camera_pose[camera])[None], clip.pts3d[second][None])[0]
        for camera in (first, second)
    ]
    return (
        _relative_move(truth[0][valid], truth[1][valid]),
        _relative_move(predicted[0][valid], predicted[1][valid]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_room_model_arguments(parser, split="val", rooms="0:7")
    parser.add_argument("--gaps", default="2,4,8", help="frames between the two of a pair")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per room and gap")
    args = parser.parse_args(argv)
    gaps = [int(v) for v in args.gaps.split(",")]
    model = model_from_args(args)
    rows = []
    with torch.inference_mode():
        for room in rooms_from_args(args):
            clip = room_sequence(room, 48, split=args.split)
            path = RoomScene.random(scene_seed(args.split, room)).trajectory
            for gap in gaps:
                starts = range(
                    0, clip.num_frames - gap, max(1, (clip.num_frames - gap) // args.pairs)
                )
                firsts = list(starts)[: args.pairs]
                turns = [missed_turn(model, clip, a, a + gap) for a in firsts]
                moves = [view1_effect(model, clip, a, a + gap) for a in firsts]
                rows.append({
                    "room": room, "path": path, "gap": gap,
                    "true_turn": statistics.median(t for t, _ in turns),
                    "missed_turn": statistics.median(m for _, m in turns),
                    "true_move": statistics.median(t for t, _ in moves),
                    "predicted_move": statistics.median(m for _, m in moves),
                })  # fmt: skip
    table = markdown_table(
        rows,
        [("room", "room"), ("path", "camera path"), ("gap", "gap (frames)"),
         ("true_turn", "true turn (deg)", ".1f"), ("missed_turn", "missed turn (deg)", ".1f"),
         ("true_move", "view 2 moved by view 1, truth", ".3f"),
         ("predicted_move", "view 2 moved by view 1, model", ".3f")],
    )  # fmt: skip
    sys.stdout.write(f"{table}\n")
    weights = args.weights or "shipped"
    write_json(
        RESULTS, {"model": args.model, "weights": weights, "split": args.split, "rows": rows}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
