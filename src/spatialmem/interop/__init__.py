"""Interoperability with the official DUSt3R / Spann3R code: checkpoints, constructor arguments
and training data structures."""

from spatialmem.interop.checkpoint import (
    CheckpointError,
    LoadReport,
    load_checkpoint,
    official_keymap,
    official_state_dict,
    register_official_layout,
    save_checkpoint,
)
from spatialmem.interop.keymap import DUST3R_RULES, SPANN3R_RULES, KeyMap, Rule, prefixed
from spatialmem.interop.official import (
    build_official,
    conf_mode_from_official,
    depth_mode_from_official,
    dust3r_config_from_official,
    memory_config_from_official,
    spann3r_config_from_official,
)
from spatialmem.interop.official_data import (
    sequence_target_from_official,
    step_predictions_from_official,
)

__all__ = [
    "DUST3R_RULES",
    "SPANN3R_RULES",
    "CheckpointError",
    "KeyMap",
    "LoadReport",
    "Rule",
    "build_official",
    "conf_mode_from_official",
    "depth_mode_from_official",
    "dust3r_config_from_official",
    "load_checkpoint",
    "memory_config_from_official",
    "official_keymap",
    "official_state_dict",
    "prefixed",
    "register_official_layout",
    "save_checkpoint",
    "sequence_target_from_official",
    "spann3r_config_from_official",
    "step_predictions_from_official",
]
