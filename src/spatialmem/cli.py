"""The ``spatialmem`` command: list models, reconstruct an image pair or an ordered sequence,
run the bundled demo."""

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from spatialmem._typing import Float
from spatialmem.data import synthetic_sequence, to_model_range
from spatialmem.inference import FrameResult, OnlineReconstructor
from spatialmem.interop import load_checkpoint
from spatialmem.io import write_ply
from spatialmem.models import DUSt3R, PairOutput, Spann3R, create_model, list_models

__all__ = ["build_parser", "main", "reconstruct_pair", "reconstruct_sequence"]

logger = logging.getLogger("spatialmem")


def _read_image(path: Path, size: tuple[int, int] | None, patch: int) -> torch.Tensor:
    """Read an image as ``[3, H, W]`` in [-1, 1], resized/cropped to a multiple of the patch."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import center_crop, resize

    img = decode_image(str(path), mode=ImageReadMode.RGB)
    if size is not None:
        img = resize(img, list(size), antialias=True)
    h, w = img.shape[-2:]
    img = center_crop(img, [h - h % patch, w - w % patch])
    return to_model_range(img.permute(1, 2, 0))


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
    size = tuple(args.size) if args.size else None
    patch = model.config.patch_size
    img1 = _read_image(Path(args.image1), size, patch)
    img2 = _read_image(Path(args.image2), size, patch)
    _, summary = reconstruct_pair(model, img1, img2, Path(args.out))
    sys.stdout.write(json.dumps({"output": args.out, **summary}) + "\n")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    if len(args.images) < 2:
        raise SystemExit("`reconstruct` needs at least 2 images")
    if -(-len(args.images) // max(args.keyframe_every, 1)) < 2:
        raise SystemExit(
            f"--keyframe-every {args.keyframe_every} keeps fewer than 2 of the "
            f"{len(args.images)} images; Spann3R needs at least 2"
        )
    model = _build(args.model, args.checkpoint)
    if not isinstance(model, Spann3R):
        raise SystemExit(
            f"model {args.model!r} is not a Spann3R model (use `spatialmem pair` for pair models)"
        )
    size = tuple(args.size) if args.size else None
    patch = model.config.dust3r.patch_size
    frames = [_read_image(Path(p), size, patch) for p in args.images]
    shapes = {tuple(f.shape) for f in frames}
    if len(shapes) > 1:
        raise SystemExit(
            f"the images have different sizes after cropping to multiples of {patch} "
            f"({sorted(shapes)}); pass --size H W to resize them all"
        )
    _, summary = reconstruct_sequence(
        model,
        torch.stack(frames),
        Path(args.out),
        keyframe_every=args.keyframe_every,
        progress=args.progress,
    )
    sys.stdout.write(json.dumps({"output": args.out, "model": args.model, **summary}) + "\n")
    return 0


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
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize before cropping")
    p.add_argument("--out", default="pair.ply")
    p.set_defaults(func=_cmd_pair)

    p = sub.add_parser(
        "reconstruct",
        help="stream an ordered list of images through Spann3R into one PLY point cloud",
    )
    p.add_argument("images", nargs="+", help="image files, in capture order (at least 2)")
    p.add_argument("--model", default="spann3r_vitl_dpt512")
    p.add_argument("--checkpoint", help="published Spann3R .pth or a spatialmem checkpoint")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize before cropping")
    p.add_argument(
        "--keyframe-every", type=int, default=1, metavar="K", help="use every K-th image"
    )
    p.add_argument("--out", default="scene.ply")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    p.set_defaults(func=_cmd_reconstruct)

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
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
