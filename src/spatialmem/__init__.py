"""spatialmem: typed, composable PyTorch modules for memory-based online 3D reconstruction.

Quick start:

```python
import spatialmem as sm

model = sm.create_model("spann3r_vitl_dpt512")
sm.load_checkpoint(model, "spann3r.pth")
out = model.eval()(frames)      # frames [B, T, 3, H, W] in [-1, 1]
out.pts3d                       # [B, T, H, W, 3], every frame in frame 0's camera frame
```
"""

from spatialmem._typing import typecheck_requested

if typecheck_requested():  # pragma: no cover - the test suite installs the hook through pytest
    from jaxtyping import install_import_hook

    # Installed before any submodule is imported, so every spatialmem module is wrapped.
    install_import_hook("spatialmem", "beartype.beartype")

# Subpackages reached as attributes (``sm.inference.OnlineReconstructor``).
from spatialmem import geometry, inference, metrics, optimize
from spatialmem._checks import set_value_checks, value_checks
from spatialmem.decoders import TwinDecoder
from spatialmem.encoders import CroCoEncoder
from spatialmem.heads import DPTHead, HeadOutput, LinearHead, TokenMLP
from spatialmem.interop import load_checkpoint, save_checkpoint
from spatialmem.memory import MemoryConfig, MemoryEncoder, MemoryState, SpatialMemory
from spatialmem.models import (
    DUSt3R,
    DUSt3RConfig,
    PairOutput,
    SequenceOutput,
    Spann3R,
    Spann3RConfig,
    create_model,
    list_models,
    register_model,
)
from spatialmem.optimize import optimize_for_inference

__version__ = "0.1.0"

__all__ = [
    "CroCoEncoder",
    "DPTHead",
    "DUSt3R",
    "DUSt3RConfig",
    "HeadOutput",
    "LinearHead",
    "MemoryConfig",
    "MemoryEncoder",
    "MemoryState",
    "PairOutput",
    "SequenceOutput",
    "Spann3R",
    "Spann3RConfig",
    "SpatialMemory",
    "TokenMLP",
    "TwinDecoder",
    "__version__",
    "create_model",
    "geometry",
    "inference",
    "list_models",
    "load_checkpoint",
    "metrics",
    "optimize",
    "optimize_for_inference",
    "register_model",
    "save_checkpoint",
    "set_value_checks",
    "value_checks",
]
