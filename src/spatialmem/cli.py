"""The ``spatialmem`` command: list models, reconstruct an image pair or an ordered sequence
(images, a folder, a glob or a video) with cameras and exports, evaluate a reconstruction against
ground truth, run the bundled demo."""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from spatialmem._typing import Float
from spatialmem.data import synthetic_sequence
from spatialmem.data.image_inputs import (
    VIDEO_SUFFIXES,
    collect_inputs,
    load_frames,
    prepare_image,
    read_image,
)
from spatialmem.inference import FrameResult, OnlineReconstructor
from spatialmem.interop import load_checkpoint
from spatialmem.io import write_ply
from spatialmem.models import DUSt3R, PairOutput, Spann3R, create_model, list_models
from spatialmem.pipeline import export_reconstruction, reconstruct_frames

__all__ = ["build_parser", "main", "reconstruct_pair", "reconstruct_sequence"]

logger = logging.getLogger("spatialmem")


def _read_image(path: Path, size: int | tuple[int, int] | None, patch: int) -> torch.Tensor:
    """Read an image as ``[3, H, W]`` in [-1, 1] (the resize/crop policy of
    [prepare_image][spatialmem.data.image_inputs.prepare_image])."""
    return prepare_image(read_image(path), size, patch)


def _size_arg(values: list[int] | None) -> int | tuple[int, int] | None:
    if not values:
        return None
    if len(values) > 2 or any(v <= 0 for v in values):
        raise ValueError(f"--size takes one positive size S or H W, got {values}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def reconstruct_pair(
    model: DUSt3R, img1: torch.Tensor, img2: torch.Tensor, out_path: Path
) -> tuple[PairOutput, dict[str, float]]:
    """Run the pair model on two ``[3, H, W]`` images and write the joint point cloud as PLY.

    Returns:
        The predictions and a small summary (point count, confidence statistics).
    """
    with torch.inference_mode():
        out = model(img1[None], img2[None])
    points = torch.cat([out.view1.pts3d.reshape(-1, 3), out.view2.pts3d.reshape(-1, 3)])
    colors = torch.cat([img1.permute(1, 2, 0).reshape(-1, 3), img2.permute(1, 2, 0).reshape(-1, 3)])
    conf = torch.cat([out.view1.conf.reshape(-1), out.view2.conf.reshape(-1)])
    write_ply(out_path, points, (colors + 1) / 2, conf)
    summary = {
        "points": float(points.shape[0]),
        "conf_mean": float(conf.mean()),
        "conf_max": float(conf.max()),
        "depth_median_view1": float(out.view1.pts3d[..., 2].median()),
    }
    return out, summary


def reconstruct_sequence(
    model: Spann3R,
    frames: Float[Tensor, "T 3 H W"] | Sequence[Float[Tensor, "3 H W"]],
    out_path: Path,
    *,
    keyframe_every: int = 1,
    progress: bool = False,
) -> tuple[list[FrameResult], dict[str, float | int]]:
    """Stream an ordered sequence through Spann3R and write every frame's points as one PLY.

    Args:
        model: the Spann3R model in eval mode.
        frames: ``[T, 3, H, W]`` in [-1, 1] (or a sequence of ``[3, H, W]`` frames).
        out_path: the PLY file (points, colours from the frames, confidence).
        keyframe_every: reconstruct every ``k``-th frame only.
        progress: show a progress bar (``tqdm``, optional).

    Returns:
        The per-frame results and a small summary (frames, point count, confidence statistics,
        memory tokens held at the end).
    """
    recon = OnlineReconstructor(model, keyframe_every=keyframe_every)
    results = recon.run(frames, progress=progress)
    if not results:
        raise ValueError("no frame to reconstruct")
    points = torch.cat([r.pts3d.reshape(-1, 3) for r in results])
    colors = torch.cat([r.image.permute(1, 2, 0).reshape(-1, 3) for r in results])
    conf = torch.cat([r.conf.reshape(-1) for r in results])
    write_ply(out_path, points, (colors + 1) / 2, conf)
    state = recon.state
    assert state is not None
    summary: dict[str, float | int] = {
        "frames": len(results),
        "input_frames": recon.num_inputs,
        "points": int(points.shape[0]),
        "conf_mean": float(conf.mean()),
        "conf_max": float(conf.max()),
        "depth_median_frame0": float(results[0].pts3d[..., 2].median()),
        "memory_tokens": int(state.count[0]),
        "memory_capacity": state.capacity,
    }
    return results, summary


def _build(name: str, checkpoint: str | None) -> DUSt3R | Spann3R:
    model = create_model(name)
    if not isinstance(model, (DUSt3R, Spann3R)):
        raise SystemExit(f"model {name!r} is neither a pair model nor a Spann3R model")
    if checkpoint:
        report = load_checkpoint(model, checkpoint)
        logger.info(
            "loaded %d tensors (%s layout) from %s", report.loaded, report.layout, checkpoint
        )
    else:
        logger.warning(
            "no --checkpoint given: %s has random weights, so the geometry is meaningless "
            "(the run exercises the whole pipeline)",
            name,
        )
    return model.eval()


def _cmd_models(args: argparse.Namespace) -> int:
    for name in list_models(args.pattern):
        sys.stdout.write(name + "\n")
    return 0


def _cmd_pair(args: argparse.Namespace) -> int:
    model = _build(args.model, args.checkpoint)
    if not isinstance(model, DUSt3R):
        raise SystemExit(f"model {args.model!r} is not a pair model (see `spatialmem reconstruct`)")
    size = _size_arg(args.size)
    patch = model.config.patch_size
    img1 = _read_image(Path(args.image1), size, patch)
    img2 = _read_image(Path(args.image2), size, patch)
    _, summary = reconstruct_pair(model, img1, img2, Path(args.out))
    sys.stdout.write(json.dumps({"output": args.out, **summary}) + "\n")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    paths = collect_inputs(args.images)
    is_video = len(paths) == 1 and paths[0].suffix.lower() in VIDEO_SUFFIXES
    if len(paths) < 2 and not is_video:
        raise SystemExit("`reconstruct` needs at least 2 images (or a video)")
    if not is_video and -(-len(paths) // max(args.keyframe_every, 1)) < 2:
        raise SystemExit(
            f"--keyframe-every {args.keyframe_every} keeps fewer than 2 of the "
            f"{len(paths)} images; Spann3R needs at least 2"
        )
    out = Path(args.out)
    ply_only = out.suffix.lower() == ".ply"
    _check_writable(out.parent if ply_only else out)
    model = _build(args.model, args.checkpoint)
    if not isinstance(model, Spann3R):
        raise SystemExit(
            f"model {args.model!r} is not a Spann3R model (use `spatialmem pair` for pair models)"
        )
    patch = model.config.dust3r.patch_size
    frames = load_frames(paths, size=_size_arg(args.size), patch_size=patch)
    if ply_only:
        _, summary = reconstruct_sequence(
            model, frames, out, keyframe_every=args.keyframe_every, progress=args.progress
        )
        sys.stdout.write(json.dumps({"output": args.out, "model": args.model, **summary}) + "\n")
        return 0
    recon = reconstruct_frames(
        model, frames, keyframe_every=args.keyframe_every, progress=args.progress
    )
    written = export_reconstruction(
        recon, out, conf_threshold=args.conf_threshold, preview=args.preview
    )
    extra = {k: written.pop(k) for k in ("focal", "cameras") if k in written}
    summary = {"output": str(out), "model": args.model, "frames": recon.num_frames,
               "input_frames": int(frames.shape[0]), "files": written, **extra}  # fmt: skip
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _check_writable(folder: Path) -> None:
    """Fail before any compute when the output cannot be written."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise SystemExit(f"spatialmem: error: cannot write to {folder} ({probe} is not writable)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from spatialmem.metrics import evaluate_pointclouds, evaluate_pointmaps, format_table

    if args.dataset:
        if not (args.root and args.scene):
            raise SystemExit("spatialmem: error: --dataset needs --root and --scene")
        from spatialmem.data.eval_datasets import load_sequence
        from spatialmem.pipeline import evaluate_sequence

        kwargs: dict[str, int] = {"size": args.size_eval}
        if args.stride is not None:
            kwargs["stride"] = args.stride
        if args.max_frames is not None:
            kwargs["max_frames"] = args.max_frames
        seq = load_sequence(args.dataset, args.root, args.scene, **kwargs)
        model = _build(args.model, args.checkpoint)
        if not isinstance(model, Spann3R):
            raise SystemExit(f"spatialmem: error: model {args.model!r} is not a Spann3R model")
        metrics, _ = evaluate_sequence(
            model, seq, align=args.align, threshold=args.threshold, icp_threshold=args.icp,
            progress=args.progress,
        )  # fmt: skip
        name = seq.name
    else:
        if not (args.pred and args.gt):
            raise SystemExit("spatialmem: error: give PRED and GT, or --dataset with --root")
        pred, gt = _load_points(Path(args.pred)), _load_points(Path(args.gt))
        if pred.grid is not None and gt.grid is not None and pred.grid.shape == gt.grid.shape:
            metrics = evaluate_pointmaps(
                pred.grid, gt.grid, gt.valid & pred.valid, align=args.align,
                threshold=args.threshold, icp_threshold=args.icp,
            )  # fmt: skip
        else:
            if args.align != "none":
                raise SystemExit(
                    f"spatialmem: error: --align {args.align} needs per-pixel correspondences "
                    "(two reconstruction folders with frames/*.npz of the same size); use "
                    "--align none (optionally with --icp) for point clouds"
                )
            metrics = evaluate_pointclouds(
                pred.points, gt.points, threshold=args.threshold, icp_threshold=args.icp
            )
        name = f"{args.pred} vs {args.gt}"
    if args.json:
        sys.stdout.write(json.dumps({"sequence": name, **metrics.as_dict()}) + "\n")
    else:
        sys.stdout.write(format_table({name: metrics}) + "\n")
    return 0


@dataclass
class _Points:
    points: torch.Tensor
    grid: torch.Tensor | None = None
    valid: torch.Tensor | None = None


def _load_points(path: Path) -> _Points:
    """A reconstruction folder (``frames/*.npz``) or a PLY file, as points (and pointmaps)."""
    from spatialmem.io import load_frames_npz, read_ply

    if not path.exists():
        raise SystemExit(f"spatialmem: error: {path} does not exist")
    if path.is_dir():
        frames_dir = path / "frames" if (path / "frames").is_dir() else path
        data = load_frames_npz(frames_dir)
        grid = torch.as_tensor(data["pts3d"]).float()
        valid = torch.as_tensor(data["valid"]).bool() if "valid" in data else (
            torch.isfinite(grid).all(-1)
        )  # fmt: skip
        return _Points(grid[valid], grid, valid)
    if path.suffix.lower() != ".ply":
        raise SystemExit(f"spatialmem: error: {path} is neither a folder nor a .ply file")
    return _Points(torch.as_tensor(read_ply(path).points).float())


def _cmd_demo(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    model = _build(args.model, args.checkpoint)
    out_path = Path(args.out)
    if isinstance(model, Spann3R):
        if -(-args.frames // max(args.keyframe_every, 1)) < 2:
            raise SystemExit("the Spann3R demo needs at least 2 (key)frames")
        frames = synthetic_sequence(args.frames, args.height, args.width, seed=args.seed)
        _, summary = reconstruct_sequence(
            model, frames, out_path, keyframe_every=args.keyframe_every
        )
    else:  # a pair model: the first two frames
        frames = synthetic_sequence(2, args.height, args.width, seed=args.seed)
        _, summary = reconstruct_pair(model, frames[0], frames[1], out_path)
    sys.stdout.write(json.dumps({"output": str(out_path), "model": args.model, **summary}) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``spatialmem`` command."""
    parser = argparse.ArgumentParser(prog="spatialmem", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("pair", help="reconstruct two images into one PLY point cloud")
    p.add_argument("image1")
    p.add_argument("image2")
    p.add_argument("--model", default="dust3r_vitl_512_dpt")
    p.add_argument("--checkpoint", help="published DUSt3R .pth or a spatialmem checkpoint")
    p.add_argument("--size", type=int, nargs="+", metavar="S", help="S, or H W (see reconstruct)")
    p.add_argument("--out", default="pair.ply")
    p.set_defaults(func=_cmd_pair)

    p = sub.add_parser(
        "reconstruct",
        help="stream images (files, a folder, a glob or a video) through Spann3R; write the point "
        "cloud, cameras (transforms.json + COLMAP), per-frame npz and a preview",
        description="Reconstruct an ordered image sequence. Inputs are image files, folders "
        "(their images in natural order), glob patterns or one video file. Resize/crop policy: "
        "--size 224 resizes the short side to 224 and crops the centre 224x224 (the published "
        "Spann3R); --size 512 resizes the long side to 512 (the 512 DUSt3R models); no --size "
        "keeps the images and crops them to multiples of the patch size.",
    )
    p.add_argument("images", nargs="+", help="images, folders, globs or a video, in capture order")
    p.add_argument("--model", default="spann3r_vitl_dpt512")
    p.add_argument("--checkpoint", help="published Spann3R .pth or a spatialmem checkpoint")
    p.add_argument("--size", type=int, nargs="+", metavar="S", help="S, or H W (see above)")
    p.add_argument(
        "--keyframe-every", type=int, default=1, metavar="K", help="use every K-th frame"
    )
    p.add_argument(
        "--out",
        default="spatialmem_out",
        help="output folder (all exports) or a .ply file (the point cloud only)",
    )
    p.add_argument(
        "--conf-threshold", type=float, default=1.0, help="leave out points of lower confidence"
    )
    p.add_argument(
        "--preview", action=argparse.BooleanOptionalAction, default=True, help="preview PNG"
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser(
        "evaluate",
        help="score a reconstruction against ground truth (accuracy, completion, normal "
        "consistency)",
        description="Compare PRED with GT: reconstruction folders (frames/*.npz, aligned through "
        "their per-pixel correspondences) or PLY point clouds. With --dataset, reconstruct a "
        "scene of 7scenes, nrgbd or dtu with the model and score it (the paper's protocol).",
    )
    p.add_argument("pred", nargs="?", help="reconstruction folder or .ply")
    p.add_argument("gt", nargs="?", help="ground-truth folder or .ply")
    p.add_argument(
        "--align",
        choices=("none", "median", "sim3", "rigid"),
        default="sim3",
        help="alignment of PRED to GT before scoring (median: the official eval's median "
        "scale/shift; sim3: Umeyama on the pixel correspondences)",
    )
    p.add_argument(
        "--icp", type=float, metavar="DIST", help="refine with ICP (official: 0.1; DTU: 100)"
    )
    p.add_argument("--threshold", type=float, default=0.05, help="completion-ratio threshold")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--dataset", choices=("7scenes", "nrgbd", "dtu"))
    p.add_argument("--root", help="dataset root folder")
    p.add_argument("--scene", help="scene (7scenes: scene/seq-XX)")
    p.add_argument("--stride", type=int, help="keep every N-th frame (dataset default)")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--size-eval", type=int, default=224, help="square input size")
    p.add_argument("--model", default="spann3r_vitl_dpt512")
    p.add_argument("--checkpoint")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "demo",
        help="reconstruct the bundled synthetic sequence with streaming Spann3R (no download)",
    )
    p.add_argument(
        "--model", default="spann3r_tiny", help="a Spann3R model, or a pair model (2 frames)"
    )
    p.add_argument("--checkpoint")
    p.add_argument("--frames", type=int, default=8, help="frames of the sequence (Spann3R)")
    p.add_argument("--keyframe-every", type=int, default=1, metavar="K")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="spatialmem_demo.ply")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spatialmem`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, ImportError, OSError) as err:
        if args.verbose:
            raise
        raise SystemExit(f"spatialmem: error: {err}") from None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
