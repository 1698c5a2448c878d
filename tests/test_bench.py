"""``spatialmem bench``: the measurement machinery on tiny models (the published-size run is the
command's default and is not part of the test suite), the JSON, the plots and the regenerated
docs page."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from spatialmem import cli
from spatialmem.bench import BenchConfig, run_bench
from spatialmem.bench.report import (
    COMPONENTS_PNG,
    SECTIONS,
    STREAM_PNG,
    render_sections,
    update_page,
)
from spatialmem.bench.step import COMPONENTS
from spatialmem.models import create_model

PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


@pytest.fixture(scope="module")
def results() -> dict:
    torch.manual_seed(0)
    cfg = BenchConfig(
        model="spann3r_tiny",
        sizes=[(32, 48)],
        variants=["eager", "optimized", "int8"],
        rounds=2,
        steps_per_round=1,
        stream_model="spann3r_tiny",
        stream_size=(32, 48),
        stream_frames=12,
        accuracy_sequences=1,
        accuracy_frames=3,
    )
    return run_bench(cfg)


@pytest.mark.usefixtures("without_typecheck")
def test_one_run_measures_every_figure(results: dict) -> None:
    (case,) = results["cases"]
    assert case["flops_per_step"] > 0 and case["tokens"] == 6
    rows = {r["variant"]: r for r in case["variants"]}
    assert set(rows) == {"eager", "optimized", "int8"}
    for name, row in rows.items():
        assert len(row["times_s"]) == 2 and row["s_per_step_min"] <= row["s_per_step_median"]
        assert row["frames_per_s"] > 0 and row["speedup_median"] > 0
        if name != "int8":
            assert row["peak_gflops"] > 0 and row["fraction_of_peak"] > 0
            assert row["peak_gflops_median"] <= row["peak_gflops"]
            assert row["fraction_of_peak_median"] > 0
            assert len(case["matmul_peaks"][name]["round_gflops"]) == 2  # one per round
            assert row["in_turn_gflops"] > 0
    assert case["square_matmul"]["gflops"] >= case["square_matmul"]["gflops_median"] > 0
    assert rows["optimized"]["max_rel_diff"] <= 1e-5  # exact tier
    assert rows["int8"]["max_rel_diff"] < 0.1  # approximate tier
    assert case["matmul_peaks"]["eager"]["shapes"]
    comp = case["components"]
    assert [r["component"] for r in comp["rows"]] == list(COMPONENTS)
    assert all(r["eager_s_min"] > 0 and r["optimized_s_min"] > 0 for r in comp["rows"])
    assert sum(r["flops"] for r in comp["rows"]) > 0
    stream = results["stream"]
    assert len(stream["steps_ms"]) == 12 and stream["samples"][-1]["frame"] == 11
    assert stream["state_bytes_end"] > 0 and stream["late_over_early"] > 0
    acc = results["accuracy"]
    assert [r["variant"] for r in acc["rows"]] == ["fp32", "int8"]
    assert acc["rows"][1]["max_rel_diff_vs_fp32"] < 0.1
    assert acc["weights"].startswith("random")  # spann3r_tiny ships no weights
    json.dumps(results, default=str)  # serialisable


def test_page_sections_are_regenerated_and_prose_kept(results: dict, tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    shutil.copy(PAGE, page)
    before = PAGE.read_text()
    sections = render_sections(results, {"components": "images/c.png", "stream": "images/s.png"})
    assert set(sections) == set(SECTIONS)
    update_page(page, sections)
    text = page.read_text()
    assert "| eager |" in text and "![Latency per component](images/c.png)" in text
    assert "## When it pays, and when it does not" in text
    # a second update replaces, not appends
    update_page(page, sections)
    assert page.read_text() == text
    assert before.count("<!-- bench:") == len(SECTIONS)
    page.write_text("# no markers\n")
    with pytest.raises(ValueError, match="generated section 'env'"):
        update_page(page, sections)


def test_gpu_runs_show_their_peak_device_memory(results: dict) -> None:
    """A CPU run has no device memory column; a GPU run (peak_device_bytes set) has one."""
    from spatialmem.bench.report import render_latency

    assert "peak GPU MiB" not in render_latency(results)
    gpu = copy.deepcopy(results)
    for row in gpu["cases"][0]["variants"]:
        row["peak_device_bytes"] = 3 * 2**30
    table = render_latency(gpu)
    assert "peak GPU MiB" in table and "| 3072 |" in table


@pytest.mark.usefixtures("without_typecheck")
def test_cli_bench_writes_json_plots_and_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "docs" / "performance.md"
    page.parent.mkdir()
    shutil.copy(PAGE, page)
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", "spann3r_tiny", "--rounds", "1", "--frames", "8"]
    argv += ["--threads", "1", "--json", str(out), "--page", str(page)]
    threads = torch.get_num_threads()
    assert cli.main(argv) == 0
    assert torch.get_num_threads() == threads  # restored
    printed = capsys.readouterr().out
    assert "| eager |" in printed and str(out) in printed
    data = json.loads(out.read_text())
    assert data["config"]["mode"] == "quick" and data["cases"][0]["height"] == 224
    assert data["env"]["torch"] == torch.__version__
    for png in (COMPONENTS_PNG, STREAM_PNG):
        image = page.parent / "images" / png
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert "Not measured yet" not in text.split("### Measured: approximate tiers")[0]
    # re-render from the JSON without measuring
    page.write_text(PAGE.read_text())
    assert cli.main(["bench", "--from-json", str(out), "--page", str(page)]) == 0
    assert "| optimized |" in page.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--rounds", "0"], "argument --rounds"),
        (["bench", "--steps-per-round", "0"], "argument --steps-per-round"),
        (["bench", "--frames", "-1"], "argument --frames"),
        (["bench", "--page", "missing/page.md"], "argument --page"),
        (["bench", "--from-json", "missing.json", "--no-page"], "argument --from-json"),
    ],
)
def test_cli_bench_bad_options_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("spatialmem: error: " + message) and err.count("\n") == 1


def test_docs_page_has_every_generated_section() -> None:
    text = PAGE.read_text()
    for name in SECTIONS:
        assert f"<!-- bench:{name} -->" in text and f"<!-- /bench:{name} -->" in text


def test_accuracy_run_uses_the_shipped_weights_by_default() -> None:
    from spatialmem.bench.step import _load_trained

    model = create_model("spann3r_small_synthetic")
    assert _load_trained(model, BenchConfig()) == "shipped weights of spann3r_small_synthetic"
    shipped = create_model("spann3r_small_synthetic", pretrained=True).state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in model.state_dict().items())
