"""What the CPU can do, read through torch's cpuinfo (no guessing from the model name)."""

import functools
import logging
import platform
import warnings
from dataclasses import dataclass

import torch

from spatialmem._checks import outside_stacklevel

__all__ = ["BF16_SLOWDOWN_NOTE", "CpuFeatures", "cpu_features", "warn_bf16_emulated"]

logger = logging.getLogger(__name__)

BF16_SLOWDOWN_NOTE = (
    "bf16 autocast on a CPU without bf16 instructions measured about 5x SLOWER than float32 "
    "(published Spann3R at 224x224 on 2 AVX2 cores: 13.3 s/frame against 2.6 s/frame)"
)
"""The measurement quoted by the warning of a bf16 request on a CPU without bf16 instructions."""


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU features that decide the inference path, as torch sees them.

    Read with [`cpu_features`][spatialmem.optimize.cpu_features].
    """

    name: str
    """CPU model name (``torch.cpu.get_capabilities()``, else ``platform``)."""
    capability: str
    """``torch.backends.cpu.get_cpu_capability()``: the vector ISA ATen dispatches to
    (``"AVX2"``, ``"AVX512"``, ``"DEFAULT"``, ``"SVE256"``, ...)."""
    avx512: bool
    """AVX-512 (F, BW, VL, DQ): oneDNN's AVX-512 kernels."""
    avx512_bf16: bool
    """``AVX512_BF16``: native bf16 dot products."""
    amx_bf16: bool
    """AMX tiles with bf16 (Sapphire Rapids and later)."""
    onednn: bool
    """oneDNN (MKLDNN) is compiled in (``torch.backends.mkldnn.is_available()``)."""
    onednn_bf16: bool
    """oneDNN runs bf16 kernels on this CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``;
    on x86 also true for AVX-512 CPUs that convert to fp32 internally)."""
    threads: int
    """``torch.get_num_threads()`` when read."""

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU has bf16 instructions (AVX512_BF16 or AMX-BF16 on x86; what oneDNN
        reports elsewhere). Without them bf16 matmuls are emulated and slower than fp32."""
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return self.avx512_bf16 or self.amx_bf16
        return self.onednn_bf16


def _probe(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # pragma: no cover - a torch build without the probe
        return False


@functools.cache
def _static_features() -> tuple[str, str, bool, bool, bool, bool, bool]:
    caps: dict[str, object] = {}
    get_caps = getattr(torch.cpu, "get_capabilities", None)
    if get_caps is not None:
        try:
            caps = dict(get_caps())
        except Exception:  # pragma: no cover - cpuinfo failed to initialise
            caps = {}
    name = str(caps.get("cpu_name") or platform.processor() or platform.machine())
    capability = torch.backends.cpu.get_cpu_capability()
    avx512 = _probe("_is_avx512_supported") or all(
        bool(caps.get(k)) for k in ("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq")
    )
    avx512_bf16 = _probe("_is_avx512_bf16_supported") or bool(caps.get("avx512_bf16"))
    amx_bf16 = bool(caps.get("amx_bf16"))
    onednn = bool(torch.backends.mkldnn.is_available())
    try:
        onednn_bf16 = onednn and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - op missing in this build
        onednn_bf16 = False
    return name, capability, avx512, avx512_bf16, amx_bf16, onednn, onednn_bf16


def cpu_features() -> CpuFeatures:
    """The features of this process's CPU that choose the inference path.

    Returns:
        A [`CpuFeatures`][spatialmem.optimize.CpuFeatures]; the flags are read once per process.

    Example:
        ```python
        from spatialmem.optimize import cpu_features

        cpu = cpu_features()
        print(cpu.capability, "native bf16:", cpu.native_bf16)
        ```
    """
    return CpuFeatures(*_static_features(), threads=torch.get_num_threads())


_bf16_warned = False


def warn_bf16_emulated(features: CpuFeatures | None = None) -> bool:
    """Warn (once per process) that bf16 was asked for on a CPU without bf16 instructions.

    Args:
        features: the CPU's features (default: [`cpu_features`][spatialmem.optimize.cpu_features]).

    Returns:
        ``True`` when the CPU lacks bf16 instructions (whether or not the warning was shown now).
    """
    global _bf16_warned
    features = features or cpu_features()
    if features.native_bf16:
        return False
    if not _bf16_warned:
        _bf16_warned = True
        warnings.warn(
            f"bfloat16 was requested, but this CPU ({features.name}, {features.capability}) has "
            f"no bf16 instructions (AVX512_BF16 or AMX): every bf16 matmul is emulated. "
            f"{BF16_SLOWDOWN_NOTE}. The run continues in bf16; use dtype=None (float32) for "
            "speed on this machine.",
            RuntimeWarning,
            stacklevel=outside_stacklevel(),
        )
    return True
