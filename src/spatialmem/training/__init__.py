"""Training of sequence models (Spann3R): the step, the optimiser, data parallelism, the CLI.

* [`train_step`][spatialmem.training.step.train_step] /
  [`TrainStep`][spatialmem.training.step.TrainStep]: forward,
  [`Spann3RLoss`][spatialmem.losses.Spann3RLoss] (confidence regression + scale term),
  ``/ accum_iter``, backward, gradient-norm clip (1.0), AdamW step; AMP on CUDA; works on a
  ``DistributedDataParallel`` model.
* [`build_optimizer`][spatialmem.training.optim.build_optimizer],
  [`warmup_cosine`][spatialmem.training.optim.warmup_cosine]: AdamW with the paper's ``lr = 5e-5``
  and ``betas = (0.9, 0.95)``, linear warm-up + cosine decay.
* `spatialmem.training.distributed`: process group from the ``torchrun`` environment (gloo
  on CPU, nccl on CUDA), DDP wrapping, a ``DistributedSampler`` loader, rank-0 logging.
* [`train`][spatialmem.training.runner.train] / ``python -m spatialmem.training``: the whole loop on
  synthetic scenes with the curriculum clip sampler, colour jitter, periodic validation, a run
  directory (``metrics.csv``, ``loss.png``, resumable ``last.pt``) and exact resumption
  (`spatialmem.training.runner`); settings in a
  [`TrainConfig`][spatialmem.training.config.TrainConfig], from a TOML file with ``--config``
  (`spatialmem.training.config`); the command line generated from its fields
  (`spatialmem.training.cli`):

  ```bash
  torchrun --nproc_per_node 2 -m spatialmem.training --model spann3r_tiny --steps 100
  ```
* `spatialmem.training.augment.jitter_colors`: per-clip colour jitter;
  `spatialmem.training.logs`: the metrics CSV and its loss plot; `spatialmem.training.state`:
  the resumable training state.
"""

from spatialmem.training.augment import jitter_colors
from spatialmem.training.cli import build_parser, main, parse_config
from spatialmem.training.config import TrainConfig, read_config_file
from spatialmem.training.distributed import (
    DistributedContext,
    ResumableSampler,
    barrier,
    cleanup,
    init_distributed,
    make_loader,
    reduce_mean,
    setup_logging,
    wrap_ddp,
)
from spatialmem.training.logs import MetricsCSV, plot_loss_curves, read_metrics
from spatialmem.training.optim import build_optimizer, param_groups, warmup_cosine
from spatialmem.training.runner import TrainResult, train
from spatialmem.training.step import (
    AmpMode,
    StepStats,
    TrainStep,
    amp_settings,
    train_step,
    unwrap_model,
)

__all__ = [
    "AmpMode",
    "DistributedContext",
    "MetricsCSV",
    "ResumableSampler",
    "StepStats",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "amp_settings",
    "barrier",
    "build_optimizer",
    "build_parser",
    "cleanup",
    "init_distributed",
    "jitter_colors",
    "main",
    "make_loader",
    "param_groups",
    "parse_config",
    "plot_loss_curves",
    "read_config_file",
    "read_metrics",
    "reduce_mean",
    "setup_logging",
    "train",
    "train_step",
    "unwrap_model",
    "warmup_cosine",
    "wrap_ddp",
]
