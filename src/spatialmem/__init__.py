"""spatialmem: typed, composable PyTorch modules for memory-based online 3D reconstruction.

Quick start::

    import spatialmem as sm

    model = sm.create_model("dust3r_vitl_512_dpt")
    sm.load_checkpoint(model, "DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth")
    out = model.eval()(img1, img2)  # images [B, 3, H, W] in [-1, 1]
    out.view2.pts3d                 # [B, H, W, 3] in view 1's camera frame
"""

from spatialmem._typing import typecheck_requested

if typecheck_requested():  # pragma: no cover - the test suite installs the hook through pytest
    from jaxtyping import install_import_hook

    # Installed before any submodule is imported, so every spatialmem module is wrapped.
    install_import_hook("spatialmem", "beartype.beartype")

from spatialmem._checks import set_value_checks, value_checks
from spatialmem.decoders import TwinDecoder
from spatialmem.encoders import CroCoEncoder
from spatialmem.heads import DPTHead, HeadOutput, LinearHead
from spatialmem.interop import load_checkpoint, save_checkpoint
from spatialmem.models import (
    DUSt3R,
    DUSt3RConfig,
    PairOutput,
    create_model,
    list_models,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "CroCoEncoder",
    "DPTHead",
    "DUSt3R",
    "DUSt3RConfig",
    "HeadOutput",
    "LinearHead",
    "PairOutput",
    "TwinDecoder",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "save_checkpoint",
    "set_value_checks",
    "value_checks",
]
