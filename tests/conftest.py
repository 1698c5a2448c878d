"""Shared test configuration: hypothesis profiles and access to the reference fixtures."""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

# CI must never flake: derandomised, no deadline, bounded example counts.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# Measured layout decisions are not read from or written to a cache on disk: tests that time
# (or fake the timing of) a layer must see it measured; tests of the disk cache turn it on.
os.environ["SPATIALMEM_DECISION_CACHE"] = "0"

_REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """Directory holding ``fixtures/`` and ``manifests/`` produced by the official code."""
    env = os.environ.get("SPATIALMEM_REFERENCE_DIR")
    return Path(env) if env else _REPO.parent / "shared" / "reference"


def load_fixture(filename: str) -> dict[str, Any]:
    """Load a reference fixture by file name, skipping the test if it is not available."""
    path = reference_dir() / "fixtures" / filename
    if not path.exists():
        pytest.skip(f"reference fixture {path} not available")
    return torch.load(path, weights_only=True, map_location="cpu")


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-4, what: str = "") -> None:
    """``torch.testing.assert_close`` with the reference tolerance (atol = rtol = ``tol``)."""
    torch.testing.assert_close(
        got, want, atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}" if what else m
    )


def tiny_spann3r(seed: int = 0) -> Any:
    """``spann3r_tiny`` with seeded random weights, in eval mode (the streaming tests' model)."""
    import spatialmem as sm
    from spatialmem.models import Spann3R

    torch.manual_seed(seed)
    model = sm.create_model("spann3r_tiny")
    assert isinstance(model, Spann3R)
    return model.eval()


@pytest.fixture
def without_typecheck():
    """Run with jaxtyping's runtime checks off, as users do by default.

    The library's own always-on argument checks must then produce the error, which is what the
    bad-input tests are about.
    """
    import jaxtyping

    previous = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", previous)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module (it imports ``_common`` from its folder)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def random_similarity(gen: torch.Generator, spread: float = 1.0) -> torch.Tensor:
    """A seeded random similarity ``[4, 4]``: rotation vector, translation and log scale of
    size about ``spread`` (the scale's a third of it)."""
    from spatialmem.geometry import sim3, skew

    rotation = torch.linalg.matrix_exp(skew(torch.randn(3, generator=gen) * spread))
    scale = torch.exp(torch.randn((), generator=gen) * 0.3 * spread)
    return sim3(scale, rotation, torch.randn(3, generator=gen) * spread)
