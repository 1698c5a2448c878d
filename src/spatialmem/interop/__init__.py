"""Interoperability with the official DUSt3R / Spann3R checkpoints."""

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
    dust3r_config_from_official,
    spann3r_config_from_official,
)

__all__ = [
    "DUST3R_RULES",
    "SPANN3R_RULES",
    "CheckpointError",
    "KeyMap",
    "LoadReport",
    "Rule",
    "build_official",
    "dust3r_config_from_official",
    "load_checkpoint",
    "official_keymap",
    "official_state_dict",
    "prefixed",
    "register_official_layout",
    "save_checkpoint",
    "spann3r_config_from_official",
]
