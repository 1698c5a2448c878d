"""Measured optimisation decisions kept on disk (spatialmem.optimize.disk_cache)."""

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import spatialmem as sm
from spatialmem.optimize import (
    choose_conv_layout,
    choose_linear_impl,
    clear_decisions,
    convs,
    disk_cache,
    linear,
)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPATIALMEM_DECISION_CACHE", "1")
    monkeypatch.setenv("SPATIALMEM_CACHE_DIR", str(tmp_path))
    clear_decisions()
    yield tmp_path
    clear_decisions()


@pytest.fixture
def timings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fake, counted timings: the linear's candidates and the head's layouts."""
    calls: list[str] = []

    def time_min(fns: dict, **kw: object) -> dict[str, float]:
        calls.append("linear")
        return {name: 1.0 + i for i, name in enumerate(reversed(list(fns)))}

    def time_pairs(*args: object, **kw: object) -> tuple[dict[str, float], float]:
        calls.append("conv")
        return {"plain": 2.0, "channels_last": 1.0}, 0.5

    monkeypatch.setattr(linear, "_time_min", time_min)
    monkeypatch.setattr(convs, "_time_pairs", time_pairs)
    return calls


def _head() -> nn.Module:
    torch.manual_seed(0)
    return sm.create_model("spann3r_tiny").eval().dust3r.head1


def test_a_later_process_reuses_the_decisions(cache_dir: Path, timings: list[str]) -> None:
    layer = nn.Linear(8, 16)
    first = choose_linear_impl(layer, tokens=4, candidates=("aten",))
    pays = choose_conv_layout(_head(), tokens=6)
    assert timings == ["linear", "conv"] and pays[0]
    clear_decisions()  # a new process: nothing in memory, the file on disk
    assert choose_linear_impl(layer, tokens=4, candidates=("aten",)) == first
    assert choose_conv_layout(_head(), tokens=6) == pays
    assert timings == ["linear", "conv"]  # nothing timed again
    data = json.loads((cache_dir / "decisions.json").read_text())
    mine = data["machines"][disk_cache.machine_fingerprint()]
    assert set(mine) == {"linear", "conv"} and len(mine["linear"]) == 1
    # other shapes, tokens or candidates are other decisions
    choose_linear_impl(layer, tokens=5, candidates=("aten",))
    assert timings[-1] == "linear" and len(timings) == 3
    # forgetting this machine's entries on disk makes the next process measure again
    clear_decisions(disk=True)
    assert (
        disk_cache.machine_fingerprint()
        not in json.loads((cache_dir / "decisions.json").read_text())["machines"]
    )
    choose_linear_impl(layer, tokens=4, candidates=("aten",))
    assert len(timings) == 4


def test_another_machine_or_torch_measures_again(
    cache_dir: Path, timings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = nn.Linear(8, 16)
    choose_linear_impl(layer, tokens=4, candidates=("aten",))
    clear_decisions()
    monkeypatch.setattr(disk_cache, "machine_fingerprint", lambda: "another CPU|torch 9")
    choose_linear_impl(layer, tokens=4, candidates=("aten",))
    assert timings == ["linear", "linear"]
    machines = json.loads((cache_dir / "decisions.json").read_text())["machines"]
    assert len(machines) == 2  # both kept: a shared folder serves both machines


def test_a_corrupt_file_is_measured_over(
    cache_dir: Path, timings: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    (cache_dir / "decisions.json").write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="spatialmem.optimize.disk_cache"):
        choose_linear_impl(nn.Linear(8, 16), tokens=4, candidates=("aten",))
    assert "ignoring the decision cache" in caplog.text and timings == ["linear"]
    assert json.loads((cache_dir / "decisions.json").read_text())["format"] == 1


def test_the_cache_can_be_turned_off(
    cache_dir: Path, timings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPATIALMEM_DECISION_CACHE", "0")
    assert disk_cache.cache_path() is None
    choose_linear_impl(nn.Linear(8, 16), tokens=4, candidates=("aten",))
    clear_decisions()
    choose_linear_impl(nn.Linear(8, 16), tokens=4, candidates=("aten",))
    assert timings == ["linear", "linear"] and not any(cache_dir.iterdir())


def test_default_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPATIALMEM_DECISION_CACHE", "1")
    monkeypatch.delenv("SPATIALMEM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert disk_cache.cache_path() == tmp_path / "spatialmem" / "decisions.json"
    monkeypatch.setenv("SPATIALMEM_CACHE_DIR", str(tmp_path / "mine"))
    assert disk_cache.cache_path() == tmp_path / "mine" / "decisions.json"


def test_a_malformed_entry_is_measured_over(cache_dir: Path, timings: list[str]) -> None:
    layer = nn.Linear(8, 16)
    choose_linear_impl(layer, tokens=4, candidates=("aten",))
    path = cache_dir / "decisions.json"
    data = json.loads(path.read_text())
    entries = data["machines"][disk_cache.machine_fingerprint()]["linear"]
    for key in entries:
        entries[key] = "aten"  # not a (choice, seconds) pair
    path.write_text(json.dumps(data))
    clear_decisions()
    assert choose_linear_impl(layer, tokens=4, candidates=("aten",))[0] == "aten"
    assert timings == ["linear", "linear"]
