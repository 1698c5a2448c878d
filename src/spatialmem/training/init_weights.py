"""Starting weights of a training run: random, the model's shipped weights, or a checkpoint.

The paper fine-tunes Spann3R from DUSt3R; a run's ``init_from`` does the same with any checkpoint
[`load_checkpoint`][spatialmem.interop.load_checkpoint] reads: a whole Spann3R (a run's
``last.pt`` or ``out``, a published Spann3R checkpoint) or only its pair model (a DUSt3R
checkpoint, loaded into ``model.dust3r``; the memory parts keep their random initialisation).
"""

import logging

from spatialmem.interop import CheckpointError, load_checkpoint
from spatialmem.models import Spann3R
from spatialmem.models.pretrained import load_pretrained

__all__ = ["PRETRAINED", "load_initial_weights"]

logger = logging.getLogger(__name__)

PRETRAINED = "pretrained"
"""The ``init_from`` value that means the model's own shipped weights."""


def load_initial_weights(model: Spann3R, source: str, model_name: str) -> str:
    """Fill ``model`` with the starting weights named by ``source``.

    Args:
        model: the freshly built model.
        source: ``"pretrained"`` (the shipped weights of ``model_name``) or a checkpoint path.
        model_name: the registered name the model was built from.

    Returns:
        What was loaded, in words (for the log).

    Raises:
        ValueError: ``model_name`` has no shipped weights, or they do not fit.
        FileNotFoundError: no file at ``source``.
        CheckpointError: the checkpoint fits neither the whole model nor its pair model (the
            message is the one for the whole model).
    """
    if source == PRETRAINED:
        load_pretrained(model, model_name)
        return f"the shipped weights of {model_name!r}"
    try:
        report = load_checkpoint(model, source, strict=True)
    except CheckpointError as whole:
        try:
            report = load_checkpoint(model.dust3r, source, strict=True)
        except CheckpointError:
            raise whole from None
        return (
            f"the pair model of {source} ({report.loaded} tensors, {report.layout} layout); "
            "memory encoder and key/query heads random"
        )
    return f"{source} ({report.loaded} tensors, {report.layout} layout)"
