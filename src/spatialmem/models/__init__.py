"""Model assemblies, their configurations and the registry."""

from spatialmem.models import zoo as _zoo  # noqa: F401  (registers the entry points)
from spatialmem.models.config import DUSt3RConfig, PortraitMode, replace_config
from spatialmem.models.dust3r import DUSt3R, PairDecoding, PairOutput, build_head
from spatialmem.models.outputs import PairStep, SequenceOutput
from spatialmem.models.registry import create_model, list_models, register_model
from spatialmem.models.spann3r import SequenceDriver, Spann3R, Spann3RConfig, replace_memory

__all__ = [
    "DUSt3R",
    "DUSt3RConfig",
    "PairDecoding",
    "PairOutput",
    "PairStep",
    "PortraitMode",
    "SequenceDriver",
    "SequenceOutput",
    "Spann3R",
    "Spann3RConfig",
    "build_head",
    "create_model",
    "list_models",
    "register_model",
    "replace_config",
    "replace_memory",
]
