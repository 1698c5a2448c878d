"""Settings of a training run: [`TrainConfig`][spatialmem.training.config.TrainConfig], its TOML
config files and the names of the files of a run directory.

[`TrainConfig`][spatialmem.training.config.TrainConfig] holds the options of
[`train`][spatialmem.training.runner.train] (and, one option per field, of the command line
``python -m spatialmem.training``). ``--config recipe.toml`` /
[`TrainConfig.from_toml`][spatialmem.training.config.TrainConfig.from_toml] read the fields from a
TOML file ([`read_config_file`][spatialmem.training.config.read_config_file]).
"""

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from spatialmem.data.rooms import parse_path_weights
from spatialmem.training.optim import PAPER_LR
from spatialmem.training.step import AmpMode

__all__ = [
    "BEST_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "RESUME_FREE_FIELDS",
    "STATE_FILE",
    "SceneKind",
    "TrainConfig",
    "read_config_file",
]

SceneKind = Literal["box", "rooms"]
"""Training scenes: ``"box"`` (a room with one box, `spatialmem.data.scenes.SyntheticScenes`) or
``"rooms"`` (`spatialmem.data.rooms.RoomScenes`)."""

RESUME_FREE_FIELDS = frozenset(
    {
        "resume",
        "init_from",
        "run_dir",
        "out",
        "log_every",
        "save_every",
        "stop_after",
        "val_every",
        "val_scenes",
        "val_stride",
        "num_workers",
        "device",
        "torch_threads",
    }
)
"""[`TrainConfig`][spatialmem.training.config.TrainConfig] fields that may differ between an
interrupted run and its resumption: they change what is logged, saved or evaluated and where the
run executes, not the optimisation itself."""

# Names of the files of a run directory.
STATE_FILE = "last.pt"
BEST_FILE = "best.pt"
METRICS_FILE = "metrics.csv"
PLOT_FILE = "loss.png"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of a training run (the command-line options of ``-m spatialmem.training``)."""

    model: str = "spann3r_tiny"
    """Registered model name (a [`Spann3R`][spatialmem.models.Spann3R])."""
    steps: int = 100
    """Optimiser steps."""
    batch_size: int = 2
    """Clips per process and micro-batch (global batch: ``batch_size * world_size *
    accum_iter``; the paper uses 2 per GPU on 8 GPUs)."""
    accum_iter: int = 1
    """Micro-batches per optimiser step."""
    lr: float = PAPER_LR
    """Base learning rate (paper: 5e-5)."""
    weight_decay: float = 0.05
    """AdamW weight decay of the weight matrices."""
    warmup_steps: int = 0
    """Linear warm-up steps of the cosine schedule."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clip (official 1.0); ``None`` (on the command line or in a config file: a
    value ``<= 0``) disables clipping."""
    alpha: float = 0.4
    """Confidence-regulariser weight of the first half of the epochs."""
    alpha_end: float = 0.2
    """``alpha`` reached at the last epoch (official schedule: 0.4 -> 0.2 over the second half)."""
    frame_scale_weight: float = 0.0
    """Weight of the per-frame scale term of [`Spann3RLoss`][spatialmem.losses.Spann3RLoss]
    (not in the paper; 0: off, the official objective)."""
    amp: AmpMode = "auto"
    """Mixed precision (CUDA only)."""
    device: str | None = None
    """Training device; ``None``: ``cuda:<LOCAL_RANK>`` if available, else the CPU."""
    torch_threads: int | None = None
    """Intra-op CPU threads (``torch.set_num_threads``, process-wide); ``None`` keeps torch's
    default."""
    scenes: SceneKind = "box"
    """Training scenes: ``"box"`` (a textured room with one box, ``SyntheticScenes``) or
    ``"rooms"`` (``spatialmem.data.rooms.RoomScenes``)."""
    path_weights: str | None = None
    """Mix of camera paths of the training rooms (``scenes="rooms"`` only), e.g.
    ``"orbit=2,walk=1,forward=1"``; kinds left out are not trained on. ``None``: the rooms' own
    draw, about a third each. Validation clips keep the rooms' own mix."""
    num_frames: int = 5
    """Frames per clip ``T`` (paper: 5)."""
    height: int = 64
    """Image height."""
    width: int = 64
    """Image width."""
    num_scenes: int = 64
    """Synthetic scenes per epoch."""
    video_frames: int = 48
    """Length of each synthetic video the curriculum samples clips from."""
    curriculum: bool = True
    """Sample clip frames with the curriculum (growing, then shrinking interval)."""
    max_interval: int = 4
    """Curriculum ``T_max``: the largest interval between adjacent clip frames."""
    min_interval: int = 1
    """Curriculum ``T_min``: the interval between adjacent clip frames at the start of training
    (paper: 1). Raise it to fine-tune at the frame step of inference, e.g.
    ``min_interval = max_interval = 2`` for sequences streamed at a stride of 2, so that a
    fine-tune does not start with a quarter of closer frames."""
    pair_every: int = 0
    """Mix frame pairs into the clips: every ``pair_every``-th micro-batch is a batch of
    ``batch_size`` 2-frame clips with gaps of up to ``pair_max_interval`` frames instead of a
    clip batch ([`PairBatches`][spatialmem.training.pairs.PairBatches]). With ``accum_iter =
    pair_every`` every optimiser step sums the gradients of ``pair_every - 1`` clip batches and
    one pair batch, so registering pairs and carrying a memory are learned together rather than
    in stages that undo each other. 0 (the default, and the paper): clips only."""
    pair_max_interval: int = 8
    """Curriculum ``T_max`` of the pairs of ``pair_every``: the largest gap between the two
    frames (their curriculum starts at ``min_interval``)."""
    color_jitter: float = 0.0
    """Colour-jitter strength ``j`` in [0, 1]: per clip, brightness, contrast and saturation are
    scaled by factors drawn from ``[1 - j, 1 + j]`` (the same for all frames of the clip; input
    frames only). 0 disables it."""
    mem_dropout: float | None = None
    """Override of the memory's attention dropout (``None``: the model's, paper 0.15)."""
    seed: int = 0
    """Seed of the model initialisation, the data, the shuffling and the augmentation."""
    num_workers: int = 0
    """Data-loader workers per process."""
    log_every: int = 10
    """Log every this many optimiser steps (averaged over the ranks)."""
    val_every: int = 0
    """Evaluate the loss on fixed validation clips every this many optimiser steps (and at the
    last step); 0 disables validation."""
    val_scenes: int = 8
    """Validation clips (frames ``0, s, 2 s, ...`` of scenes disjoint from the training ones;
    ``s`` is ``val_stride``)."""
    val_stride: int | None = None
    """Frame step ``s`` of the validation clips; ``None``: ``max(max_interval // 2, 1)``. Set it
    to the step the model will stream at, so that ``best.pt`` is the best there."""
    run_dir: str | None = None
    """Run directory: rank 0 writes ``metrics.csv`` (one row per optimiser step),
    ``loss.png`` and the resumable state ``last.pt`` (every ``save_every`` steps and at the end)
    there. ``None`` writes nothing but ``out``."""
    save_every: int = 200
    """Write ``last.pt`` and redraw ``loss.png`` every this many optimiser steps."""
    resume: bool = False
    """Continue from ``run_dir/last.pt`` if it exists (the settings must match the saved ones,
    except logging, saving, validation and placement options); else start afresh."""
    init_from: str | None = None
    """Starting weights instead of a random initialisation: ``"pretrained"`` (the model's
    shipped weights) or a checkpoint file (a run's ``last.pt`` or ``out``, a published Spann3R
    checkpoint, or a DUSt3R checkpoint, which fills the pair model only, as the paper starts).
    Only the weights are taken (optimiser, schedule and data start afresh); ignored when
    ``resume`` continues a saved run. ``None``: random (seeded by ``seed``)."""
    stop_after: int | None = None
    """End this invocation after this many optimiser steps in total (saving ``last.pt``), e.g. to
    fit a job's time limit; the schedule and the data still follow ``steps``, and ``resume``
    continues. ``None``: run to ``steps``."""
    out: str | None = None
    """Checkpoint written by rank 0 at the end
    ([`save_checkpoint`][spatialmem.interop.save_checkpoint]; not written when ``stop_after``
    ends the run early)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accum_iter", "num_frames", "num_scenes", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("save_every", "val_scenes"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("stop_after", "torch_threads", "val_stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1 or None, got {value}")
        if self.val_every < 0:
            raise ValueError(f"TrainConfig.val_every must be >= 0, got {self.val_every}")
        if not 0.0 <= self.color_jitter <= 1.0:
            raise ValueError(
                f"TrainConfig.color_jitter must lie in [0, 1], got {self.color_jitter}"
            )
        if self.scenes not in typing.get_args(SceneKind):
            raise ValueError(f"TrainConfig.scenes must be 'box' or 'rooms', got {self.scenes!r}")
        if self.path_weights is not None:
            if self.scenes != "rooms":
                raise ValueError("TrainConfig.path_weights needs scenes='rooms'")
            try:
                parse_path_weights(self.path_weights)
            except ValueError as err:
                raise ValueError(f"TrainConfig.path_weights: {err}") from None
        if self.resume and self.run_dir is None:
            raise ValueError("TrainConfig.resume needs a run_dir to resume from")
        if self.num_frames < 2:
            raise ValueError(f"TrainConfig.num_frames must be >= 2, got {self.num_frames}")
        if not 1 <= self.min_interval <= self.max_interval:
            raise ValueError(
                f"TrainConfig.min_interval must lie in [1, max_interval={self.max_interval}], "
                f"got {self.min_interval}"
            )
        if self.pair_every < 0 or self.pair_every == 1:
            raise ValueError(
                "TrainConfig.pair_every must be 0 (no pairs) or >= 2 (every n-th micro-batch "
                f"a pair batch; for pairs only set num_frames = 2), got {self.pair_every}"
            )
        if self.pair_every and self.pair_max_interval < self.min_interval:
            raise ValueError(
                f"TrainConfig.pair_max_interval must be >= min_interval={self.min_interval}, "
                f"got {self.pair_max_interval}"
            )
        if self.curriculum and self.video_frames < self.num_frames:
            raise ValueError(
                f"TrainConfig.video_frames={self.video_frames} must be >= "
                f"num_frames={self.num_frames}"
            )

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> "TrainConfig":
        """Settings read from a TOML file whose keys are field names.

        Keys may use underscores or dashes (``batch_size`` or ``batch-size``); a
        ``max_grad_norm`` of ``<= 0`` disables clipping. Fields the file leaves out keep their
        defaults (TOML has no ``None``: leave out a field whose default is ``None``).

        Args:
            path: the TOML file, e.g.

                ```toml
                model = "spann3r_tiny"
                steps = 2000
                batch-size = 4
                color_jitter = 0.3
                run_dir = "runs/tiny"
                ```
            **overrides: field values that replace the file's.

        Returns:
            The settings.

        Raises:
            ValueError: an unknown key (the message lists the valid ones), a value of the wrong
                type, a malformed file, or settings the class rejects.
        """
        return cls(**{**read_config_file(path), **overrides})


def _argument_type(hint: Any) -> tuple[type, tuple[Any, ...] | None]:
    """``(type, choices)`` of a field annotation: ``X | None`` parses as ``X``, a ``Literal``
    gives its values as choices."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    return hint, None


def _file_value(where: str, key: str, value: Any, hint: Any) -> Any:
    """A config-file value checked (and an int widened to float) against a field annotation."""
    kind, choices = _argument_type(hint)
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{where}: `{key}` must be one of {list(choices)}, got {value!r}")
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and number:
        return float(value)
    if kind is int and number and isinstance(value, int):
        return value
    if kind in (bool, str) and isinstance(value, kind):
        return value
    raise ValueError(
        f"{where}: `{key}` must be a {kind.__name__}, got {type(value).__name__} {value!r}"
    )


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The [`TrainConfig`][spatialmem.training.config.TrainConfig] field values of a TOML file.

    Keys are field names, with underscores or dashes; values are checked against the field
    types (an integer is accepted for a float field); a ``max_grad_norm`` of ``<= 0`` becomes
    ``None`` (no clipping), as on the command line.

    Args:
        path: the TOML file.

    Returns:
        Field name to value, for the fields the file sets.

    Raises:
        ValueError: a malformed file, an unknown key (the message lists the valid ones), a key
            given twice (``batch_size`` and ``batch-size``) or a value of the wrong type.
        OSError: the file cannot be read.
    """
    where = os.fspath(path)
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{where}: not valid TOML: {err}") from None
    hints = typing.get_type_hints(TrainConfig)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in names:
            raise ValueError(
                f"{where}: unknown key {key!r}; the valid keys are the TrainConfig fields: "
                + ", ".join(names)
            )
        if name in values:
            raise ValueError(f"{where}: {name!r} is given twice (with '_' and with '-')")
        values[name] = _file_value(where, key, value, hints[name])
    if values.get("max_grad_norm") is not None and values["max_grad_norm"] <= 0:
        values["max_grad_norm"] = None
    return values
