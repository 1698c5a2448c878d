"""Cheap argument checks used at public entry points.

Shape and dtype checks read only tensor metadata and are always on. Value checks (NaN/Inf
detection) read tensor data, which forces a device synchronisation on CUDA; they are on by default
and can be switched off for speed with [set_value_checks][spatialmem.set_value_checks] or the
``SPATIALMEM_VALUE_CHECKS=0`` environment variable (the library's one switch, like kornia's
``KORNIA_CHECKS``).

Checks run once, at the door. A public entry point (a model's ``forward``, a reconstructor's
``step``, a memory method called by a user) validates its arguments and then runs its body inside
[internal_calls][spatialmem._checks.internal_calls]; the library's own calls made from there see
[checks_active][spatialmem._checks.checks_active] return ``False`` and skip their checks, so no
check (and no host synchronisation) runs inside the per-frame loop. The nesting depth is a
process-wide counter (not per thread): a check skipped in one thread while another thread is
inside an entry point costs a clear error message, never a wrong result.
"""

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from types import FrameType

import torch
from torch import Tensor

__all__ = [
    "check_bool_mask",
    "check_finite",
    "check_images",
    "check_pixel_range",
    "check_positive",
    "check_same_batch",
    "check_tensor",
    "checks_active",
    "internal_calls",
    "match_module",
    "outside_stacklevel",
    "set_value_checks",
    "value_checks",
    "value_checks_enabled",
]

_VALUE_CHECKS = os.environ.get("SPATIALMEM_VALUE_CHECKS", "1").strip().lower() not in {
    "0",
    "false",
    "no",
    "off",
}


def value_checks_enabled() -> bool:
    """Whether NaN/Inf checks on inputs are active."""
    return _VALUE_CHECKS


def set_value_checks(enabled: bool) -> None:
    """Turn the NaN/Inf input checks on or off globally.

    Args:
        enabled: ``False`` skips every check that reads tensor values (and would synchronise
            with the GPU); shape checks stay on.
    """
    global _VALUE_CHECKS
    _VALUE_CHECKS = bool(enabled)


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Context manager form of [`set_value_checks`][spatialmem.set_value_checks] that restores the
    previous setting."""
    previous = _VALUE_CHECKS
    set_value_checks(enabled)
    try:
        yield
    finally:
        set_value_checks(previous)


_INTERNAL_DEPTH = 0


def checks_active() -> bool:
    """Whether the current call came from outside the library (so its arguments need checks).

    ``False`` inside [internal_calls][spatialmem._checks.internal_calls], i.e. when a public entry
    point that already validated its input calls the library's own modules and methods.
    """
    return _INTERNAL_DEPTH == 0


@contextlib.contextmanager
def internal_calls() -> Iterator[None]:
    """Mark the calls made inside the block as the library's own (their checks are skipped)."""
    global _INTERNAL_DEPTH
    _INTERNAL_DEPTH += 1
    try:
        yield
    finally:
        _INTERNAL_DEPTH -= 1


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"object of type {type(x).__name__}"


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int | None = None,
    floating: bool | None = None,
    dims: dict[int, int] | None = None,
    expected: str | None = None,
) -> Tensor:
    """Validate that ``x`` is a tensor with the given rank, kind and fixed dimensions.

    Args:
        name: argument name used in the error message.
        x: the value to check.
        ndim: required number of dimensions.
        floating: require a floating (``True``) or non-floating (``False``) dtype.
        dims: required sizes of some dimensions, ``{axis: size}`` (negative axes allowed).
        expected: human description of the expected layout, e.g. ``"B 3 H W"``.

    Returns:
        ``x`` unchanged, typed as a tensor.

    Raises:
        TypeError: ``x`` is not a tensor or has the wrong kind of dtype.
        ValueError: wrong rank or dimension sizes.
    """
    want = f" (expected {expected})" if expected else ""
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor{want}, got {_describe(x)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype{want}, got {_describe(x)}")
    if floating is False and x.is_floating_point():
        raise TypeError(f"`{name}` must have an integer or bool dtype{want}, got {_describe(x)}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dimensions{want}, got {_describe(x)}")
    for axis, size in (dims or {}).items():
        if x.shape[axis] != size:
            raise ValueError(
                f"`{name}` must have size {size} in dimension {axis}{want}, got {_describe(x)}"
            )
    return x


def check_bool_mask(
    name: str, mask: object, shape: tuple[int, ...] | None, expected: str
) -> Tensor:
    """Validate that ``mask`` is a bool tensor, of ``shape`` when given.

    Args:
        name: argument name used in the error message.
        mask: the value to check.
        shape: the required shape (``None``: any; the caller compares shapes itself).
        expected: human description of the expected layout, e.g. ``"B T H W"``.

    Returns:
        ``mask`` unchanged, typed as a tensor.

    Raises:
        TypeError: ``mask`` is not a tensor or not of dtype ``torch.bool``.
        ValueError: ``mask`` has another shape than ``shape``.
    """
    x = check_tensor(name, mask, ndim=None if shape is None else len(shape), expected=expected)
    if x.dtype != torch.bool:
        raise TypeError(
            f"`{name}` must have dtype torch.bool (expected {expected}), got dtype {x.dtype}"
        )
    if shape is not None and tuple(x.shape) != shape:
        raise ValueError(
            f"`{name}` must have shape {shape} (expected {expected}), got {tuple(x.shape)}"
        )
    return x


def check_finite(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (skipped when value checks are off, for
    meta tensors and while ``torch.compile`` traces, where reading values would break the
    graph)."""
    if not _VALUE_CHECKS or not x.is_floating_point() or x.device.type == "meta":
        return
    if torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"`{name}` contains {n_bad} NaN/Inf values ({_describe(x)}); "
            "disable this check with spatialmem.set_value_checks(False) if intended"
        )


def check_positive(**values: int) -> None:
    """Raise ``ValueError`` naming the first of the keyword arguments that is not positive."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value}")


PIXEL_LIMIT = 10.0
"""Largest absolute pixel value the models' entry points accept (inputs are in [-1, 1])."""


def check_pixel_range(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` if images hold values far outside the models' range [-1, 1].

    A value beyond ``±PIXEL_LIMIT`` (10) almost always means unnormalised pixels (0-255 floats).
    Also rejects NaN/Inf like ``check_finite``, with the same
    single host synchronisation. Skipped when value checks are off (it reads the data) and for
    meta tensors.
    """
    if not _VALUE_CHECKS or not x.is_floating_point() or x.device.type == "meta" or not x.numel():
        return
    if torch.compiler.is_compiling():
        return
    lo, hi = torch.stack(torch.aminmax(x)).tolist()  # NaN/Inf propagate: one sync for both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(name, x)
    if lo < -PIXEL_LIMIT or hi > PIXEL_LIMIT:
        raise ValueError(
            f"`{name}` holds values in [{lo:g}, {hi:g}], far outside the models' input range "
            "[-1, 1] (unnormalised 0-255 pixels?); convert uint8 images [..., H, W, 3] with "
            "spatialmem.data.to_model_range, i.e. (u8 / 255 - 0.5) / 0.5. Disable this check "
            "with spatialmem.set_value_checks(False) if intended"
        )


def match_module(name: str, x: Tensor, module: torch.nn.Module) -> Tensor:
    """Refuse ``x`` on another device than ``module``'s parameters; cast a floating ``x`` to their
    dtype.

    Runs before any check that reads values (so a frame on the ``meta`` device gets this error,
    not a crash). Modules without floating parameters leave ``x`` unchanged.

    Raises:
        ValueError: ``x`` and the module's parameters are on different devices.
    """
    ref = next((p for p in module.parameters() if p.is_floating_point()), None)
    if ref is None:
        return x
    if x.device != ref.device:
        raise ValueError(
            f"`{name}` is on device {x.device} but the model's parameters are on {ref.device}; "
            f"move the input with `{name}.to({str(ref.device)!r})` (or the model with "
            f"`model.to({str(x.device)!r})`)"
        )
    if x.is_floating_point() and x.dtype != ref.dtype:
        x = x.to(ref.dtype)
    return x


def check_images(
    name: str, x: object, patch_size: int, channels: int = 3, *, pixel_range: bool = False
) -> Tensor:
    """Validate a batch of images ``Float[Tensor, "B C H W"]`` for a patch-based model.

    Checks rank, the channel count, a floating dtype, ``H`` and ``W`` divisible by
    ``patch_size`` and (when value checks are on) finite values and, with ``pixel_range``,
    values within ``±PIXEL_LIMIT`` ([`check_pixel_range`][spatialmem._checks.check_pixel_range]).
    """
    x = check_tensor(
        name, x, ndim=4, floating=True, dims={1: channels}, expected=f"B {channels} H W"
    )
    h, w = x.shape[-2:]
    if h % patch_size or w % patch_size or h == 0 or w == 0:
        raise ValueError(
            f"`{name}` height and width must be positive multiples of the patch size "
            f"{patch_size}, got H={h}, W={w} ({_describe(x)})"
        )
    if pixel_range:
        check_pixel_range(name, x)  # includes the NaN/Inf check
    else:
        check_finite(name, x)
    return x


def check_same_batch(names: Sequence[str], tensors: Sequence[Tensor]) -> None:
    """Raise ``ValueError`` unless all tensors share their first (batch) dimension."""
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) > 1:
        detail = ", ".join(f"`{n}` {tuple(t.shape)}" for n, t in zip(names, tensors, strict=True))
        raise ValueError(f"arguments must have the same batch size, got {detail}")


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# Type-checking wrappers (on in the test suite) add frames of their own between a caller and
# the library.
_WRAPPER_PACKAGES = (f"{os.sep}jaxtyping{os.sep}", f"{os.sep}beartype{os.sep}")


def outside_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` issued by the calling function name the
    first frame outside this package (and outside the type-checking wrappers), wherever the
    user's call entered the library."""
    frame = sys._getframe(1)
    while _is_wrapper(frame) and frame.f_back is not None:  # this function's own wrapper
        frame = frame.f_back
    level = 1  # the function that called this one
    while frame.f_back is not None and (_is_wrapper(frame) or _in_package(frame)):
        frame, level = frame.f_back, level + 1
    return level


def _is_wrapper(frame: FrameType) -> bool:
    return any(p in frame.f_code.co_filename for p in _WRAPPER_PACKAGES)


def _in_package(frame: FrameType) -> bool:
    return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)
