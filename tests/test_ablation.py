"""The memory ablation script (benchmarks/ablation.py): a tiny end-to-end run and its variants."""

import json
from types import ModuleType
from typing import Any

import pytest
import torch

from conftest import load_benchmark
from spatialmem.inference import Segments
from spatialmem.memory import MemoryConfig, SpatialMemory
from spatialmem.models import create_model

FRAMES, H, W = 8, 32, 48  # spann3r_tiny: patch 16, 2 x 3 = 6 tokens per frame
P = (H // 16) * (W // 16)
PAGE = """# Results

Text before.

<!-- ablation:begin -->
stale table
<!-- ablation:end -->

Text after.
"""


@pytest.fixture(scope="module")
def ablation() -> ModuleType:
    return load_benchmark("ablation")


@pytest.fixture(scope="module")
def run(ablation: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ablation")
    torch.manual_seed(123)
    weights = tmp / "tiny.pt"
    torch.save(create_model("spann3r_tiny").state_dict(), weights)
    (tmp / "results.md").write_text(PAGE)
    argv = ["--model", "spann3r_tiny", "--weights", str(weights), "--sequences", "2",
            "--frames", str(FRAMES), "--height", str(H), "--width", str(W),
            "--max-points", "400", "--threads", "1", "--out", str(tmp / "ablation.json"),
            "--docs", str(tmp / "results.md"), "--plot", str(tmp / "ablation.png")]  # fmt: skip
    payload = ablation.main(argv)
    return {"payload": payload, "dir": tmp}


def test_json_structure(run: dict[str, Any], ablation: ModuleType) -> None:
    data = json.loads((run["dir"] / "ablation.json").read_text())
    assert set(data["variants"]) == set(ablation.NAMES)
    assert data["config"]["sequences"] == 2 and data["config"]["align"] == "sim3"
    assert data["config"]["conf_used"] is False
    machine = data["machine"]
    assert {"cpu", "cpu_flags", "torch", "threads", "cores"} <= set(machine)
    assert machine["threads"] == 1 and isinstance(machine["cpu_flags"], list)
    for name, entry in data["variants"].items():
        summary = entry["summary"]
        for key in ("acc", "acc_med", "comp", "comp_med", "nc", "nc_med", "acc_rel", "fps"):
            assert isinstance(summary[key], float), (name, key)
        assert summary["sequences"] == 2 and summary["failed"] == 0
        seqs = entry["per_sequence"]
        assert [s["sequence"] for s in seqs] == [0, 1]
        for s in seqs:
            assert s["acc_rel"] == pytest.approx(s["acc"] / s["diameter"])
            assert s["frames"] == FRAMES and s["seconds"] > 0
        # the summary is the mean over sequences of the per-sequence values
        assert summary["acc"] == pytest.approx(sum(s["acc"] for s in seqs) / 2)
        assert summary["comp_med"] == pytest.approx(sum(s["comp_med"] for s in seqs) / 2)
        # test rooms 0 and 1 are both orbits: one path, the mean of both sequences
        assert [s["path"] for s in seqs] == ["orbit", "orbit"]
        assert summary["by_path"]["orbit"]["sequences"] == 2
        assert summary["by_path"]["orbit"]["comp_rel"] == pytest.approx(
            sum(s["comp"] / s["diameter"] for s in seqs) / 2
        )
    # every variant is scored on the same number of points of each sequence
    counts = {tuple(s["num_pred"] for s in e["per_sequence"]) for e in data["variants"].values()}
    assert len(counts) == 1


def test_docs_table_replaced_between_markers(run: dict[str, Any], ablation: ModuleType) -> None:
    page = run["dir"] / "results.md"
    text = page.read_text()
    assert "stale table" not in text
    assert text.startswith("# Results\n\nText before.\n\n<!-- ablation:begin -->\n| variant |")
    assert text.endswith("<!-- ablation:end -->\n\nText after.\n")
    block = text.split(ablation.BEGIN)[1].split(ablation.END)[0]
    for v in ablation.VARIANTS:
        assert f"| {v.label} |" in block
    assert "2 test sequences x 8 frames" in block
    assert "| orbit (2): Acc / diam. | Comp / diam. | NC |" in block
    # a second update replaces the block instead of adding one
    ablation.update_docs(page, "new table")
    assert page.read_text().count(ablation.BEGIN) == 1 and "new table" in page.read_text()
    (run["dir"] / "plain.md").write_text("# no markers\n")
    with pytest.raises(ValueError, match="ablation:begin"):
        ablation.update_docs(run["dir"] / "plain.md", "table")
    # --from-json redraws the same table from the results without running anything
    ablation.main(["--from-json", str(run["dir"] / "ablation.json"), "--docs", str(page),
                   "--plot", ""])  # fmt: skip
    assert page.read_text().split(ablation.BEGIN)[1].split(ablation.END)[0] == block


def test_plot_written(run: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    png = run["dir"] / "ablation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_variants_differ_in_config(run: dict[str, Any]) -> None:
    v = run["payload"]["variants"]
    default = MemoryConfig(dim=64)  # spann3r_tiny: the paper's memory defaults
    assert v["trained"]["memory_config"]["long_mem_tokens"] == default.long_mem_tokens
    assert v["wm_only"]["memory_config"]["long_mem_tokens"] == 0
    assert v["no_clip"]["memory_config"]["attn_clip"] == 0.0
    assert v["trained"]["memory_config"]["attn_clip"] == default.attn_clip
    assert v["no_gate"]["memory_class"] == "AlwaysInsert"
    assert v["uncapped"]["memory_config"]["long_mem_tokens"] >= FRAMES * P
    assert v["untrained"]["trained"] is False and v["pairwise"]["kind"] == "pair"
    for s in v["wm_only"]["per_sequence"]:  # nothing kept beyond the working memory
        mem = s["memory"]
        assert mem["long_tokens"] == 0 and mem["tokens"] == mem["work_frames"] * P
    for s in v["no_gate"]["per_sequence"]:  # every frame written (the last one never is)
        mem = s["memory"]
        assert mem["frames_written"] == mem["writes_offered"] == FRAMES - 1
        assert mem["tokens"] == (FRAMES - 1) * P
    for s in v["uncapped"]["per_sequence"]:  # no consolidation: every written frame kept
        mem = s["memory"]
        assert mem["tokens"] == mem["frames_written"] * P
    # 8 frames fit in one segment of 6 + 3: streamed exactly as without segments.
    for name in ("segments", "segments_chained"):
        assert v[name]["kind"] == "segments"
        for seg, plain in zip(v[name]["per_sequence"], v["trained"]["per_sequence"], strict=True):
            assert seg["acc"] == plain["acc"] and seg["memory"] == plain["memory"]


def test_segments_restart_the_memory(ablation: ModuleType) -> None:
    torch.manual_seed(0)
    model = create_model("spann3r_tiny").eval()
    writes = ablation.count_writes(model.memory)
    images = torch.rand(14, 3, H, W) * 2 - 1
    pts, _, mem = ablation.run_stream(model, images, writes, segments=Segments())
    assert pts.shape == (14, H, W, 3)
    # Segments of 9 frames: 0-8, then 6-14 (3 repeated + 5 new): 8 + 7 writes offered.
    assert mem["writes_offered"] == 8 + 7


def _stream(memory: SpatialMemory, keys: torch.Tensor) -> Any:
    """Write frames ``keys [T, P, C]`` one by one (eval mode), return the final state."""
    state = memory.eval().init_state(1, keys.shape[1])
    with torch.no_grad():
        for k in keys:
            state = memory.update(state, k[None], k[None])
    return state


def test_memory_policies_of_the_variants(ablation: ModuleType) -> None:
    p, frames = 4, 12
    cfg = MemoryConfig(dim=8, long_mem_tokens=frames * p)
    distinct = torch.randn(frames, p, 8, generator=torch.Generator().manual_seed(0))
    default = _stream(SpatialMemory(cfg), distinct)
    assert int(default.long_tokens[0]) == (frames - 5) * p  # drained from the working memory
    wm_only = _stream(ablation.memory_factory("wm_only", 0)(cfg), distinct)
    assert int(wm_only.long_tokens[0]) == 0 and int(wm_only.count[0]) == 5 * p
    small = MemoryConfig(dim=8, long_mem_tokens=8 * p)  # consolidates after 13 frames
    capped = _stream(SpatialMemory(small), distinct.repeat(2, 1, 1))
    uncapped = _stream(
        ablation.memory_factory("uncapped", 2 * frames * p)(small), distinct.repeat(2, 1, 1)
    )
    assert int(capped.count[0]) < 2 * frames * p == int(uncapped.count[0])
    same = distinct[:1].expand(frames, -1, -1)  # identical frames: the gate refuses them
    assert int(_stream(SpatialMemory(cfg), same).count[0]) == p
    assert int(_stream(ablation.memory_factory("no_gate", 0)(cfg), same).count[0]) == frames * p
    no_clip = ablation.memory_factory("no_clip", 0)(cfg)
    assert no_clip.config.attn_clip == 0.0 and ablation.memory_factory("trained", 0) is None


def test_pairwise_matches_the_pair_model(ablation: ModuleType) -> None:
    torch.manual_seed(0)
    model = create_model("spann3r_tiny").eval()
    images = torch.rand(4, 3, H, W) * 2 - 1
    pts, seconds, mem = ablation.run_pairwise(model, images)
    assert pts.shape == (4, H, W, 3) and seconds > 0 and mem == {}
    with torch.no_grad():
        for t in (1, 3):
            out = model.dust3r(images[:1], images[t : t + 1])
            torch.testing.assert_close(pts[t], out.view2.pts3d[0], atol=1e-4, rtol=1e-4)
            if t == 1:
                torch.testing.assert_close(pts[0], out.view1.pts3d[0], atol=1e-4, rtol=1e-4)


def test_path_table_left_out_without_paths(run: dict[str, Any], ablation: ModuleType) -> None:
    """Results written before the paths were recorded still redraw, without the path table."""
    payload = json.loads((run["dir"] / "ablation.json").read_text())
    for entry in payload["variants"].values():
        del entry["summary"]["by_path"]
    assert ablation.path_table(payload) == ""
    assert "camera path" not in ablation.docs_block(payload)
