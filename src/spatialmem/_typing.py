"""Shape-annotation aliases and the runtime type-check switch.

Public functions are annotated with [jaxtyping](https://docs.kidger.site/jaxtyping/) shapes such
as ``Float[Tensor, "B 3 H W"]``. The annotations are *checked* only when the package is imported
through jaxtyping's import hook with beartype as the checker, which happens when

* the environment variable ``SPATIALMEM_TYPECHECK=1`` is set before ``import spatialmem``, or
* pytest runs with ``--jaxtyping-packages=spatialmem,beartype.beartype`` (the project's test
  suite does this).

Otherwise the annotations are plain metadata: no wrappers, nothing for ``torch.compile`` to trace.

Dimension names used throughout the library:

| name | meaning |
|---|---|
| ``B`` | batch size |
| ``T`` | frames in a sequence |
| ``P`` | patches (tokens) per image, ``(H / patch) * (W / patch)`` |
| ``C`` | channels / token width |
| ``H, W`` | image height and width in pixels |
| ``h, w`` | patch-grid height and width |
| ``X`` | tokens held in a memory |
"""

import os

from jaxtyping import Bool, Float, Int, Shaped

__all__ = ["TYPECHECK_ENV", "Bool", "Float", "Int", "Shaped", "typecheck_requested"]

TYPECHECK_ENV = "SPATIALMEM_TYPECHECK"


def typecheck_requested() -> bool:
    """Whether the user asked for runtime shape checking via ``SPATIALMEM_TYPECHECK``."""
    return os.environ.get(TYPECHECK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
