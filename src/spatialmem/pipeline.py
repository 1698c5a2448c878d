"""End-to-end jobs behind the command line, callable from Python: reconstruct, export, evaluate.

- [reconstruct_frames][spatialmem.pipeline.reconstruct_frames]: stream an ordered sequence through
  a Spann3R model ([OnlineReconstructor][spatialmem.inference.OnlineReconstructor], or in
  overlapping segments with [SegmentedReconstructor][spatialmem.inference.SegmentedReconstructor]).
- [export_reconstruction][spatialmem.pipeline.export_reconstruction]: recover the cameras
  ([estimate_cameras][spatialmem.geometry.estimate_cameras]) and write the point cloud, per-frame
  ``.npz``, Nerfstudio ``transforms.json``, a COLMAP text model and a preview PNG.
- [evaluate_sequence][spatialmem.pipeline.evaluate_sequence]: reconstruct an evaluation sequence
  and score it against its ground truth with the paper's metrics.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spatialmem._typing import Float
from spatialmem.inference import OnlineReconstructor, SegmentedReconstructor, Segments
from spatialmem.models import Spann3R
from spatialmem.tensor_dataclass import TensorDataclass

__all__ = [
    "SequenceReconstruction",
    "evaluate_sequence",
    "export_reconstruction",
    "make_reconstructor",
    "reconstruct_frames",
]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class SequenceReconstruction(TensorDataclass):
    """The reconstruction of one sequence, frames in processing order."""

    pts3d: Float[Tensor, "T H W 3"]
    """Points of every pixel in frame 0's camera frame."""
    conf: Float[Tensor, "T H W"]
    """Confidence of every point."""
    images: Float[Tensor, "T 3 H W"]
    """The processed frames in [-1, 1]."""
    input_indices: list[int]
    """Index of each processed frame among the input frames (``keyframe_every`` skips)."""

    @property
    def num_frames(self) -> int:
        """Processed frames ``T``."""
        return self.pts3d.shape[0]


def make_reconstructor(
    model: Spann3R, *, keyframe_every: int = 1, segments: Segments | None = None
) -> OnlineReconstructor | SegmentedReconstructor:
    """The streaming driver of a job: plain Spann3R streaming, or overlapping segments.

    Args:
        model: the Spann3R model in eval mode.
        keyframe_every: process every ``k``-th frame only.
        segments: cut the stream into overlapping segments chained by similarity fits
            ([`SegmentedReconstructor`][spatialmem.inference.SegmentedReconstructor]);
            ``None``: one memory for the whole stream, the paper's method.

    Returns:
        An [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor] or a
        [`SegmentedReconstructor`][spatialmem.inference.SegmentedReconstructor].
    """
    if segments is None:
        return OnlineReconstructor(model, keyframe_every=keyframe_every)
    return SegmentedReconstructor(model, segments, keyframe_every=keyframe_every)


def reconstruct_frames(
    model: Spann3R,
    frames: Float[Tensor, "N 3 H W"],
    *,
    keyframe_every: int = 1,
    segments: Segments | None = None,
    progress: bool = False,
) -> SequenceReconstruction:
    """Stream ``frames`` (in capture order) through ``model`` (eval mode) and collect the result.

    Args:
        model: the Spann3R model in eval mode.
        frames: ``[N, 3, H, W]`` in [-1, 1].
        keyframe_every: process every ``k``-th frame only.
        segments: overlapping segments (see
            [`make_reconstructor`][spatialmem.pipeline.make_reconstructor]); ``None``: one
            memory for the whole stream.
        progress: show a progress bar (``tqdm``, optional).

    Returns:
        Every processed frame's points in frame 0's camera frame, with confidences and images.

    Raises:
        ValueError: fewer than two frames would be processed.
    """
    recon = make_reconstructor(model, keyframe_every=keyframe_every, segments=segments)
    results = recon.run(frames, progress=progress)
    if len(results) < 2:
        raise ValueError(
            f"Spann3R needs at least 2 processed frames, got {len(results)} "
            f"({frames.shape[0]} inputs, keyframe_every={keyframe_every})"
        )
    return SequenceReconstruction(
        pts3d=torch.stack([r.pts3d for r in results]),
        conf=torch.stack([r.conf for r in results]),
        images=torch.stack([r.image for r in results]),
        input_indices=[r.input_index for r in results],
    )


def export_reconstruction(
    recon: SequenceReconstruction,
    out_dir: str | Path,
    *,
    conf_threshold: float = 1.0,
    preview: bool = True,
    max_points: int | None = None,
) -> dict[str, Any]:
    """Recover the cameras and write every export of a reconstruction into ``out_dir``.

    Args:
        recon: from [reconstruct_frames][spatialmem.pipeline.reconstruct_frames].
        out_dir: output folder (created).
        conf_threshold: points with a lower confidence are left out of the point clouds.
        preview: also render ``preview.png``.
        max_points: cap on the points of the clouds (deterministic subsample).

    Returns:
        What was written (paths) and the recovered focal lengths; where the cameras cannot be
        recovered (points behind the camera, as with untrained weights) only the point cloud
        and the preview are written and ``"cameras"`` says why.
    """
    from spatialmem.geometry import estimate_cameras
    from spatialmem.io import write_ply, write_reconstruction

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = recon.conf.reshape(-1) >= conf_threshold  # the points the clouds and preview show
    points = recon.pts3d.reshape(-1, 3)[keep]
    colours = ((recon.images.permute(0, 2, 3, 1).reshape(-1, 3) + 1) / 2)[keep]
    try:
        cams = estimate_cameras(recon.pts3d[None], recon.conf[None])
    except ValueError as err:
        # Cameras are undefined for a pointmap behind its camera (e.g. untrained weights): the
        # point cloud is still written, the camera exports are not.
        logger.warning("cameras could not be recovered (%s): writing the point cloud only", err)
        ply = write_ply(out / "scene.ply", points, colours)
        written: dict[str, Any] = {"ply": str(ply), "cameras": f"not recovered: {err}"}
    else:
        files = write_reconstruction(
            out,
            pts3d=recon.pts3d,
            conf=recon.conf,
            images=recon.images,
            K=cams.K[0],
            cam_to_world=cams.cam_to_world[0],
            conf_threshold=conf_threshold,
            max_points=max_points,
        )
        written = {k: str(v) for k, v in dict(files).items()}
        written["focal"] = [round(float(f), 3) for f in cams.focal[0]]
    if preview:
        from spatialmem.viz import render_preview

        written["preview"] = str(render_preview(points, out / "preview.png", colors=colours))
    return written


def evaluate_sequence(
    model: Spann3R,
    sequence: Any,
    *,
    align: str = "sim3",
    threshold: float = 0.05,
    icp_threshold: float | None = None,
    keyframe_every: int = 1,
    segments: Segments | None = None,
    progress: bool = False,
) -> tuple[Any, SequenceReconstruction]:
    """Reconstruct an [EvalSequence][spatialmem.data.eval_datasets.EvalSequence] online and score
    it against its ground truth (paper protocol: per-pixel correspondences for the alignment,
    then accuracy, completion and normal consistency on the valid pixels). The official
    evaluation aligns with ``align="median", icp_threshold=0.1`` (``100`` for DTU, in mm).
    ``keyframe_every``, ``segments`` and ``progress`` are passed to
    [reconstruct_frames][spatialmem.pipeline.reconstruct_frames].

    Returns:
        ``(metrics, reconstruction)``.
    """
    from spatialmem.metrics import evaluate_pointmaps

    recon = reconstruct_frames(
        model,
        sequence.images,
        keyframe_every=keyframe_every,
        segments=segments,
        progress=progress,
    )
    index = torch.tensor(recon.input_indices)
    metrics = evaluate_pointmaps(
        recon.pts3d,
        sequence.pts3d[index],
        sequence.valid[index],
        conf=recon.conf,
        align=align,
        threshold=threshold,
        icp_threshold=icp_threshold,
    )
    return metrics, recon
