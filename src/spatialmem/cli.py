"""The ``spatialmem`` command: list models, reconstruct an image pair or an ordered sequence
(images, a folder, a glob or a video) with cameras and exports, evaluate a reconstruction against
ground truth, run the bundled demo."""

import argparse
import dataclasses
import difflib
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor

from spatialmem._typing import Float
from spatialmem.bench import add_arguments as add_bench_arguments
from spatialmem.data.image_inputs import (
    VIDEO_SUFFIXES,
    collect_inputs,
    load_frames,
    prepare_image,
    read_image,
)
from spatialmem.inference import FrameResult, Segments, recommended_segments
from spatialmem.interop import CheckpointError, load_checkpoint
from spatialmem.io import write_ply
from spatialmem.models import DUSt3R, PairOutput, Spann3R, create_model, list_models
from spatialmem.optimize import optimize_for_inference
from spatialmem.pipeline import export_reconstruction, make_reconstructor, reconstruct_frames

__all__ = ["CliError", "build_parser", "main", "reconstruct_pair", "reconstruct_sequence"]

logger = logging.getLogger("spatialmem")

USAGE = 2
"""Exit status of a wrong command line (an argument's value, a missing argument)."""
FAILURE = 1
"""Exit status of a run that cannot be done (a missing or unreadable file, an unwritable output)."""


class CliError(Exception):
    """A fault reported as the one line ``spatialmem: error: <message>``.

    Attributes:
        exit_code: ``2`` for a wrong command line, ``1`` for a failure.
    """

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block) with exit status 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise CliError(f"{message} (see `{self.prog} --help`)", USAGE)


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("spatialmem")
    except (ImportError, PackageNotFoundError):  # pragma: no cover - not installed
        from spatialmem import __version__

        return __version__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


_AUTO = "auto"
"""``--segments auto``: the model's
[recommended_segments][spatialmem.inference.recommended_segments], resolved once the model is
known."""


def _segments_arg(text: str) -> Segments | str | None:
    """``--segments NEW:OVERLAP`` (e.g. ``6:3``), ``off`` for one memory over the stream, or
    ``auto`` (resolved per model by ``_resolve_segments``)."""
    if text.strip().lower() in ("off", "none", "0"):
        return None
    if text.strip().lower() == _AUTO:
        return _AUTO
    try:
        new, overlap = (int(part) for part in text.split(":"))
        return Segments(frames=new, overlap=overlap)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NEW:OVERLAP (two positive integers, e.g. 6:3), auto or off, got {text!r}"
        ) from None


@dataclass
class _ModelSpec:
    """What the command line needs to know of a model before building it."""

    name: str
    kind: type
    patch: int


def _model_spec(name: str) -> _ModelSpec:
    """Check a ``--model`` name and read its class and patch size (built on the meta device,
    so nothing is allocated)."""
    names = list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CliError(
            f"argument --model: unknown model {name!r}{hint} (`spatialmem models` lists them)",
            USAGE,
        )
    with torch.device("meta"):
        model = create_model(name)
    if isinstance(model, Spann3R):
        return _ModelSpec(name, Spann3R, model.config.dust3r.patch_size)
    if isinstance(model, DUSt3R):
        return _ModelSpec(name, DUSt3R, model.config.patch_size)
    raise CliError(f"argument --model: {name!r} is neither a pair nor a Spann3R model", USAGE)


def _check_size(size: int | tuple[int, int] | None, spec: _ModelSpec) -> None:
    smallest = min(size) if isinstance(size, tuple) else size
    if smallest is not None and smallest < spec.patch:
        text = f"{size[0]} {size[1]}" if isinstance(size, tuple) else str(size)
        raise CliError(
            f"argument --size: {text} is smaller than one {spec.patch}x{spec.patch} patch of "
            f"{spec.name}",
            USAGE,
        )


def _check_checkpoint_file(checkpoint: str | None) -> None:
    if checkpoint is None:
        return
    path = Path(checkpoint)
    if not path.exists():
        raise CliError(f"argument --checkpoint: {path} does not exist")
    if not path.is_file():
        raise CliError(f"argument --checkpoint: {path} is not a file")


def _read_image(path: Path, size: int | tuple[int, int] | None, patch: int) -> torch.Tensor:
    """Read an image as ``[3, H, W]`` in [-1, 1] (the resize/crop policy of
    [prepare_image][spatialmem.data.image_inputs.prepare_image])."""
    return prepare_image(read_image(path), size, patch)


def _size_arg(values: list[int] | None) -> int | tuple[int, int] | None:
    if not values:
        return None
    if len(values) > 2 or any(v <= 0 for v in values):
        raise CliError(f"argument --size: takes one positive size S or H W, got {values}", USAGE)
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
    segments: Segments | None = None,
    progress: bool = False,
) -> tuple[list[FrameResult], dict[str, float | int]]:
    """Stream an ordered sequence through Spann3R and write every frame's points as one PLY.

    Args:
        model: the Spann3R model in eval mode.
        frames: ``[T, 3, H, W]`` in [-1, 1] (or a sequence of ``[3, H, W]`` frames).
        out_path: the PLY file (points, colours from the frames, confidence).
        keyframe_every: reconstruct every ``k``-th frame only.
        segments: stream in overlapping segments
            ([`make_reconstructor`][spatialmem.pipeline.make_reconstructor]); ``None``: one
            memory.
        progress: show a progress bar (``tqdm``, optional).

    Returns:
        The per-frame results and a small summary (frames, point count, confidence statistics,
        memory tokens held at the end).
    """
    recon = make_reconstructor(model, keyframe_every=keyframe_every, segments=segments)
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


def _build_with_source(name: str, checkpoint: str | None) -> tuple[DUSt3R | Spann3R, str]:
    """The model in eval mode and where its weights come from: ``"checkpoint"`` (loaded from
    ``checkpoint``), ``"shipped"`` (no checkpoint, and the package ships weights for ``name``)
    or ``"random"`` (neither; warned)."""
    from spatialmem.models.pretrained import pretrained_models

    shipped = not checkpoint and name in pretrained_models()
    model = create_model(name, pretrained=True) if shipped else create_model(name)
    if not isinstance(model, (DUSt3R, Spann3R)):
        raise CliError(f"model {name!r} is neither a pair model nor a Spann3R model", USAGE)
    if shipped:
        logger.info("%s: the weights shipped in the package", name)
        return model.eval(), "shipped"
    if checkpoint:
        try:
            report = load_checkpoint(model, checkpoint)
        except CheckpointError as err:
            text = str(err)
            if checkpoint not in text:
                text = f"checkpoint {checkpoint} does not fit {name}: {text}"
            raise CliError(text) from err
        logger.info(
            "loaded %d tensors (%s layout) from %s", report.loaded, report.layout, checkpoint
        )
        return model.eval(), "checkpoint"
    logger.warning(
        "no --checkpoint given and no weights shipped for %s: it has random weights, so the "
        "reconstruction and its metrics are noise (the run exercises the whole pipeline; %s "
        "ships trained weights)",
        name,
        ", ".join(pretrained_models()),
    )
    return model.eval(), "random"


def _streaming(segments: Segments | None) -> str:
    """How a stream runs, in words (``"segments of 6 + 3, loops closed"``, ``"one memory"``)."""
    if segments is None:
        return "one memory"
    text = f"segments of {segments.frames} + {segments.overlap}"
    return text + (", loops closed" if segments.loop_closure is not None else "")


def _build(name: str, checkpoint: str | None) -> DUSt3R | Spann3R:
    return _build_with_source(name, checkpoint)[0]


def _resolve_segments(args: argparse.Namespace) -> None:
    """Turn ``--segments auto`` into the model's recommendation, then apply
    ``--no-loop-closure``."""
    if getattr(args, "segments", None) == _AUTO:
        args.segments = recommended_segments(args.model)
    if getattr(args, "segments", None) is not None and not args.loop_closure:
        args.segments = dataclasses.replace(args.segments, loop_closure=None)


def _default_size(name: str, checkpoint: str | None) -> int | None:
    """No ``--size``: the long side the shipped weights were trained at (when they run), else
    the images as they are."""
    from spatialmem.models.pretrained import pretrained_input_size, pretrained_models

    if checkpoint or name not in pretrained_models():
        return None
    trained = pretrained_input_size(name)
    if trained is None:
        return None
    logger.info(
        "frames resized to a long side of %d pixels, as %s's shipped weights were trained "
        "(%dx%d); --size changes it",
        max(trained),
        name,
        *trained,
    )
    return max(trained)


def _inference_model(
    model: DUSt3R | Spann3R, optimize: bool, hw: tuple[int, int] | None
) -> DUSt3R | Spann3R:
    """The model as a command runs it: converted in place to its fastest form on this machine
    (``--optimize``, the default; float32, equal to eager within 1e-5, see
    [optimize_for_inference][spatialmem.optimize.optimize_for_inference]), or as built with
    ``--no-optimize``. ``hw``: the frame size the layers are timed for."""
    if not isinstance(model, Spann3R):
        return model
    patch = model.config.dust3r.patch_size
    tokens = max(1, (hw[0] // patch) * (hw[1] // patch)) if hw else None
    backend = "auto" if optimize else "eager"
    return optimize_for_inference(model, backend=backend, inplace=True, tokens=tokens)


def _cmd_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise CliError(
            f"no registered model matches {args.pattern!r} (`spatialmem models` lists them all)"
        )
    for name in names:
        sys.stdout.write(name + "\n")
    return 0


def _image_file(text: str) -> Path:
    """One image file given on the command line, checked before any compute."""
    path = Path(text)
    if not path.exists():
        raise CliError(f"{path} does not exist")
    if path.is_dir():
        raise CliError(f"{path} is a folder; `pair` takes two image files")
    return path


def _cmd_pair(args: argparse.Namespace) -> int:
    spec = _model_spec(args.model)
    if spec.kind is not DUSt3R:
        raise CliError(
            f"argument --model: {args.model!r} is not a pair model (see `spatialmem reconstruct`)",
            USAGE,
        )
    size = _size_arg(args.size)
    _check_size(size, spec)
    _check_checkpoint_file(args.checkpoint)
    out = Path(args.out)
    _check_writable(out, file=True)
    img1 = _read_image(_image_file(args.image1), size, spec.patch)
    img2 = _read_image(_image_file(args.image2), size, spec.patch)
    if img1.shape != img2.shape:
        raise CliError(
            f"{args.image1} and {args.image2} come out as {tuple(img1.shape[1:])} and "
            f"{tuple(img2.shape[1:])} pixels; give --size to bring both to one size",
        )
    model = _build(args.model, args.checkpoint)
    assert isinstance(model, DUSt3R)
    _, summary = reconstruct_pair(model, img1, img2, out)
    sys.stdout.write(json.dumps({"output": args.out, **summary}) + "\n")
    return 0


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    spec = _model_spec(args.model)
    if spec.kind is not Spann3R:
        raise CliError(
            f"argument --model: {args.model!r} is not a Spann3R model (use `spatialmem pair` for "
            "pair models)",
            USAGE,
        )
    size = _size_arg(args.size)
    _check_size(size, spec)
    _check_checkpoint_file(args.checkpoint)
    if size is None:
        size = _default_size(args.model, args.checkpoint)
    paths = collect_inputs(args.images)
    is_video = len(paths) == 1 and paths[0].suffix.lower() in VIDEO_SUFFIXES
    if len(paths) < 2 and not is_video:
        raise CliError("`reconstruct` needs at least 2 images (or a video)", USAGE)
    if not is_video and -(-len(paths) // args.keyframe_every) < 2:
        raise CliError(
            f"argument --keyframe-every: {args.keyframe_every} keeps fewer than 2 of the "
            f"{len(paths)} images; Spann3R needs at least 2",
            USAGE,
        )
    out = Path(args.out)
    ply_only = out.suffix.lower() == ".ply"
    _check_writable(out, file=ply_only)
    frames = load_frames(paths, size=size, patch_size=spec.patch)
    model, weights = _build_with_source(args.model, args.checkpoint)
    assert isinstance(model, Spann3R)
    model = _inference_model(model, args.optimize, tuple(frames.shape[-2:]))
    about = {"model": args.model, "weights": weights, "streaming": _streaming(args.segments)}
    logger.info("streaming %d frames: %s", frames.shape[0], about["streaming"])
    if ply_only:
        _, summary = reconstruct_sequence(
            model,
            frames,
            out,
            keyframe_every=args.keyframe_every,
            segments=args.segments,
            progress=args.progress,
        )
        sys.stdout.write(json.dumps({"output": args.out, **about, **summary}) + "\n")
        return 0
    recon = reconstruct_frames(
        model,
        frames,
        keyframe_every=args.keyframe_every,
        segments=args.segments,
        progress=args.progress,
    )
    written = export_reconstruction(
        recon, out, conf_threshold=args.conf_threshold, preview=args.preview
    )
    extra = {k: written.pop(k) for k in ("focal", "cameras") if k in written}
    summary = {"output": str(out), **about, "frames": recon.num_frames,
               "input_frames": int(frames.shape[0]), "files": written, **extra}  # fmt: skip
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _check_writable(out: Path, *, file: bool) -> None:
    """Fail before any compute when the output (a ``file`` or a folder) cannot be written."""
    if file and out.is_dir():
        raise CliError(f"argument --out: {out} is a folder, not a file")
    if not file and out.exists() and not out.is_dir():
        raise CliError(f"argument --out: {out} exists and is not a folder")
    if out.exists() and not os.access(out, os.W_OK):
        raise CliError(f"argument --out: cannot write to {out} (not writable)")
    probe = out.parent if file else out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise CliError(f"argument --out: cannot write to {out} ({probe} is not writable)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from spatialmem.metrics import evaluate_pointclouds, evaluate_pointmaps, format_table

    if args.dataset:
        if not (args.root and args.scene):
            raise CliError("--dataset needs --root and --scene", USAGE)
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
            raise CliError(f"argument --model: {args.model!r} is not a Spann3R model", USAGE)
        model = _inference_model(model, args.optimize, (args.size_eval, args.size_eval))
        metrics, _ = evaluate_sequence(
            model, seq, align=args.align, threshold=args.threshold, icp_threshold=args.icp,
            segments=args.segments, progress=args.progress,
        )  # fmt: skip
        name = seq.name
    else:
        if not (args.pred and args.gt):
            raise CliError("give PRED and GT, or --dataset with --root", USAGE)
        pred, gt = _load_points(Path(args.pred)), _load_points(Path(args.gt))
        if pred.grid is not None and gt.grid is not None and pred.grid.shape == gt.grid.shape:
            metrics = evaluate_pointmaps(
                pred.grid, gt.grid, gt.valid & pred.valid, align=args.align,
                threshold=args.threshold, icp_threshold=args.icp,
            )  # fmt: skip
        else:
            if args.align != "none":
                raise CliError(
                    f"argument --align: {args.align} needs per-pixel correspondences "
                    "(two reconstruction folders with frames/*.npz of the same size); use "
                    "--align none (optionally with --icp) for point clouds",
                    USAGE,
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
        raise CliError(f"{path} does not exist")
    if path.is_dir():
        frames_dir = path / "frames" if (path / "frames").is_dir() else path
        data = load_frames_npz(frames_dir)
        grid = torch.as_tensor(data["pts3d"]).float()
        valid = torch.as_tensor(data["valid"]).bool() if "valid" in data else (
            torch.isfinite(grid).all(-1)
        )  # fmt: skip
        return _Points(grid[valid], grid, valid)
    if path.suffix.lower() != ".ply":
        raise CliError(f"{path} is neither a folder nor a .ply file")
    return _Points(torch.as_tensor(read_ply(path).points).float())


def _cmd_demo(args: argparse.Namespace) -> int:
    spec = _model_spec(args.model)
    for name, value in (("height", args.height), ("width", args.width)):
        if value % spec.patch:
            fit = max(spec.patch, round(value / spec.patch) * spec.patch)
            raise CliError(
                f"argument --{name}: {value} is not a multiple of the patch size {spec.patch} "
                f"of {spec.name} (try {fit})",
                USAGE,
            )
    if spec.kind is Spann3R and -(-args.frames // args.keyframe_every) < 2:
        raise CliError(
            f"argument --frames: the Spann3R demo needs at least 2 (key)frames; --frames "
            f"{args.frames} with --keyframe-every {args.keyframe_every} keeps fewer",
            USAGE,
        )
    if args.scene < 0:
        raise CliError(f"argument --scene: expected a room number >= 0, got {args.scene}", USAGE)
    _check_checkpoint_file(args.checkpoint)
    out_dir = Path(args.out)
    if out_dir.suffix.lower() == ".ply":
        raise CliError(
            f"argument --out: the demo writes a folder (scene.ply, ground_truth.ply, "
            f"preview.png), not the file {out_dir}",
            USAGE,
        )
    _check_writable(out_dir, file=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run_demo(args, out_dir)
    finally:
        torch.set_num_threads(previous)


def _run_demo(args: argparse.Namespace, out_dir: Path) -> int:
    import time

    from spatialmem.data.rooms import room_sequence
    from spatialmem.metrics import evaluate_pointmaps, format_table

    torch.manual_seed(args.seed)  # the weights of a model without shipped weights
    model, weights = _build_with_source(args.model, args.checkpoint)
    model = _inference_model(model, args.optimize, (args.height, args.width))
    num = args.frames if isinstance(model, Spann3R) else 2
    logger.info(
        "rendering test room %d: %d frames of %dx%d", args.scene, num, args.height, args.width
    )
    clip = room_sequence(args.scene, num_frames=num, height=args.height, width=args.width)
    logger.info("reconstructing online with %s (%s weights)", args.model, weights)
    start = time.perf_counter()
    if isinstance(model, Spann3R):
        recon = reconstruct_frames(
            model, clip.images, keyframe_every=args.keyframe_every, segments=args.segments
        )
        pts3d, conf, index = recon.pts3d, recon.conf, recon.input_indices
    else:  # a pair model: the first two frames
        with torch.inference_mode():
            out = model(clip.images[:1], clip.images[1:2])
        pts3d = torch.cat([out.view1.pts3d, out.view2.pts3d])
        conf = torch.cat([out.view1.conf, out.view2.conf])
        index = [0, 1]
    seconds = time.perf_counter() - start
    gt, valid, colours = _demo_ground_truth(
        clip.pts3d, clip.camera_pose, clip.valid, clip.images, index
    )
    logger.info("scoring against the ground truth (Sim(3) alignment)")
    metrics = evaluate_pointmaps(
        pts3d, gt, valid, conf=conf, align="sim3", max_points=_DEMO_METRIC_POINTS
    )
    files = _demo_write(args, out_dir, pts3d, conf, gt, valid, colours)
    fps = len(index) / seconds
    summary = {"output": str(out_dir), "model": args.model, "weights": weights,
               "streaming": _streaming(args.segments) if isinstance(model, Spann3R) else "pair",
               "scene": args.scene, "frames": len(index), "seconds": round(seconds, 3),
               "frames_per_second": round(fps, 2), "metrics": metrics.as_dict(),
               "files": files}  # fmt: skip
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return 0
    name = f"test room {args.scene}"
    sys.stdout.write(
        f"{args.model} ({weights} weights) on {name}: {len(index)} frames of "
        f"{args.height}x{args.width}, reconstructed online ({summary['streaming']}) in "
        f"{seconds:.2f} s "
        f"({fps:.1f} frames/s, streaming only)\n"
        f"metrics after Sim(3) alignment to the ground truth (acc/comp: distances in metres, "
        f"lower is better; nc: normal consistency, higher is better; clouds of at most "
        f"{_DEMO_METRIC_POINTS:,} points):\n"
        f"{format_table({name: metrics})}\n"
        f"wrote {', '.join(files.values())}\n"
    )
    return 0


_DEMO_METRIC_POINTS = 50_000
"""Points of each cloud the demo's metrics use (a seeded subset: seconds instead of a minute)."""
_DEMO_SCENE = 2
"""The demo's default test room: the first whose camera path is not an orbit (rooms 0 and 1
orbit their centre, where the shipped model's segments shrink to a blob; see the results
page), chosen by that rule, not by its score."""


def _demo_ground_truth(
    pts3d: Tensor, pose: Tensor, valid: Tensor, images: Tensor, index: list[int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Ground-truth points of the processed frames ``index`` in the first one's camera axes
    (where the model predicts), their valid mask and the pixel colours in [0, 1]."""
    from spatialmem.geometry import points_in_camera

    sel = torch.tensor(index)
    gt = points_in_camera(pts3d[sel], pose[sel][:1].expand(len(index), 4, 4))
    return gt, valid[sel], (images[sel].permute(0, 2, 3, 1) + 1) / 2


def _demo_write(
    args: argparse.Namespace,
    out_dir: Path,
    pts3d: Tensor,
    conf: Tensor,
    gt: Tensor,
    valid: Tensor,
    colours: Tensor,
) -> dict[str, str]:
    """Write the reconstruction (as predicted), the ground truth and the side-by-side preview."""
    from spatialmem.geometry import transform_points, umeyama

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "ply": str(write_ply(out_dir / "scene.ply", pts3d.reshape(-1, 3),
                             colours.reshape(-1, 3), conf.reshape(-1))),
        "ground_truth": str(write_ply(out_dir / "ground_truth.ply", gt[valid], colours[valid])),
    }  # fmt: skip
    if args.preview:
        from spatialmem.viz import render_preview

        # The Sim(3) of the metrics (Umeyama on the valid pixels, confidence-weighted).
        fit = umeyama(pts3d[valid][None].double(), gt[valid][None].double(), conf[valid][None])
        aligned = transform_points(fit, pts3d.reshape(1, -1, 3).double())[0].float()
        files["preview"] = str(render_preview(
            aligned.reshape(pts3d.shape)[valid], out_dir / "preview.png",
            colors=colours[valid], gt_points=gt[valid], gt_colors=colours[valid],
            title=f"{args.model} on test room {args.scene}: reconstruction (top, Sim(3)-aligned) "
            "and ground truth (bottom)",
        ))  # fmt: skip
    return files


def _cmd_bench(args: argparse.Namespace) -> int:
    from spatialmem.bench import run_from_args

    command = "spatialmem bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else ""
    try:
        text = run_from_args(args, command=command.strip() or "spatialmem bench")
    except ValueError as err:
        if str(err).startswith("argument --"):
            raise CliError(str(err), USAGE) from err
        raise
    sys.stdout.write(text + "\n")
    return 0


def _add_segments_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--segments",
        type=_segments_arg,
        default=_segments_arg(default),
        metavar="NEW:OVERLAP",
        help="stream in overlapping segments, each with a fresh memory, chained by similarity "
        "fits on OVERLAP repeated frames (for models whose memory registers a short horizon, "
        "like the shipped small model); off: one memory for the whole stream; auto: what suits "
        "--model (6:3 for spann3r_small_synthetic, off for the others; see "
        f"spatialmem.inference.recommended_segments) (default: {default})",
    )
    parser.add_argument(
        "--loop-closure",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --segments: recognise places seen again and spread the drift over the "
        "segments when the stream ends (see spatialmem.inference.LoopClosure); "
        "--no-loop-closure chains the segments only",
    )


def _add_optimize_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--optimize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the fastest float32 path of this machine (equal to eager within 1e-5); "
        "--no-optimize runs the model as built",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``spatialmem`` command."""
    parser = _Parser(prog="spatialmem", description=__doc__)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging; tracebacks of errors"
    )
    parser.add_argument("--version", action="version", version=f"spatialmem {_version()}")
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
        "keeps the images and crops them to multiples of the patch size, except for a model "
        "run with its shipped weights, whose frames are resized to the long side it was "
        "trained at (96 for spann3r_small_synthetic).",
    )
    p.add_argument("images", nargs="+", help="images, folders, globs or a video, in capture order")
    p.add_argument("--model", default="spann3r_vitl_dpt512")
    p.add_argument("--checkpoint", help="published Spann3R .pth or a spatialmem checkpoint")
    p.add_argument("--size", type=int, nargs="+", metavar="S", help="S, or H W (see above)")
    p.add_argument(
        "--keyframe-every", type=_positive_int, default=1, metavar="K", help="use every K-th frame"
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
    _add_segments_option(p, _AUTO)
    _add_optimize_flag(p)
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
    p.add_argument("--stride", type=_positive_int, help="keep every N-th frame (dataset default)")
    p.add_argument("--max-frames", type=_positive_int)
    p.add_argument("--size-eval", type=_positive_int, default=224, help="square input size")
    p.add_argument("--model", default="spann3r_vitl_dpt512")
    p.add_argument("--checkpoint")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    _add_segments_option(p, _AUTO)
    _add_optimize_flag(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "demo",
        help="reconstruct a held-out synthetic room online with the shipped small Spann3R and "
        "score it against the ground truth (no download)",
        description="Render a test sequence of the synthetic rooms (spatialmem.data.rooms; never "
        "trained on), reconstruct it online with the trained spann3r_small_synthetic shipped in "
        "the package, print accuracy / completion / normal consistency after Sim(3) alignment "
        "and the frames per second, and write scene.ply, ground_truth.ply and preview.png "
        "(reconstruction above the ground truth) into --out.",
    )
    p.add_argument(
        "--model",
        default="spann3r_small_synthetic",
        help="a Spann3R model, or a pair model (2 frames); models without shipped weights and "
        "without --checkpoint have random weights",
    )
    p.add_argument("--checkpoint", help="weights to load instead of the shipped ones")
    p.add_argument(
        "--scene",
        type=int,
        default=_DEMO_SCENE,
        help=f"test room number (0, 1, 2, ...; default {_DEMO_SCENE}, the first test room whose "
        "camera does not orbit: on orbits the shipped model's segments collapse, see "
        "docs/results.md)",
    )
    p.add_argument(
        "--frames", type=_positive_int, default=48, help="frames of the sequence (Spann3R)"
    )
    p.add_argument("--keyframe-every", type=_positive_int, default=1, metavar="K")
    p.add_argument("--height", type=_positive_int, default=64, help="a multiple of the patch")
    p.add_argument("--width", type=_positive_int, default=96, help="a multiple of the patch")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="intra-op threads (default 1: the small model's tensors are tiny, so more threads "
        "mostly wait on each other, and much longer when the cores are busy)",
    )
    p.add_argument("--out", default="spatialmem_demo", help="output folder")
    p.add_argument(
        "--preview", action=argparse.BooleanOptionalAction, default=True, help="preview PNG"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    _add_segments_option(p, _AUTO)
    _add_optimize_flag(p)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "bench",
        help="time the published Spann3R's streaming step, eager against optimised, and "
        "regenerate the performance page",
        description="Benchmark the streaming step (random weights): per-frame latency of eager "
        "and optimised in alternating rounds, frames/s, peak memory, FLOPs, the matmul peak of "
        "the same path and the fraction reached, a per-component breakdown and the cost along a "
        "long stream. Writes a JSON file and, when docs/performance.md is in this folder (or "
        "--page), its tables and plots.",
    )
    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def _fail(message: str, exit_code: int) -> NoReturn:
    line = " ".join(message.split())  # one line, whatever the message holds
    sys.stderr.write(f"spatialmem: error: {line}\n")
    raise SystemExit(exit_code)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Warnings as log lines like the command's others, without Python's source location (the
    command's user did not write that line)."""
    logger.warning("%s: %s", category.__name__, message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spatialmem`` command.

    Every fault ends in one line on stderr, ``spatialmem: error: <message>`` naming the file or
    the argument at fault, with exit status 2 for a wrong command line (a bad argument value, an
    unknown model) and 1 for a run that cannot be done (a missing, unreadable or unfitting file,
    an unwritable output). Arguments and inputs are checked, and every image read, before the
    model is built. With ``-v`` the traceback is printed above that line.

    Returns:
        ``0`` on success.

    Raises:
        SystemExit: on any fault (after writing the line), and for ``--help`` and ``--version``.
    """
    try:
        args = build_parser().parse_args(argv)
    except CliError as err:
        _fail(str(err), err.exit_code)
    _resolve_segments(args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _log_warning
            return int(args.func(args))
    except CliError as err:
        if args.verbose:
            traceback.print_exc()
        _fail(str(err), err.exit_code)
    except (ValueError, OSError, ImportError) as err:  # FileNotFoundError is an OSError
        if args.verbose:
            traceback.print_exc()
        _fail(str(err), FAILURE)
    except Exception as err:  # an unexpected fault: still one line, the traceback with -v
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (run with -v for the traceback)"
        _fail(f"{type(err).__name__}: {err}{hint}", FAILURE)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
