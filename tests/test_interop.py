"""Checkpoint layouts: the published manifests, aliases, and clear errors."""

import json
from pathlib import Path

import pytest
import torch

from conftest import load_fixture, reference_dir
from spatialmem import create_model, load_checkpoint
from spatialmem.interop import (
    CheckpointError,
    build_official,
    dust3r_config_from_official,
    official_state_dict,
    save_checkpoint,
    spann3r_config_from_official,
)

MANIFESTS = ["dust3r_vitl_224_linear", "dust3r_vitl_512_dpt", "spann3r_vitl_dpt512"]
# Registry name -> reference manifest file (the published Spann3R file is "spann3r_default").
MANIFEST_FILES = {"spann3r_vitl_dpt512": "spann3r_default"}


def _manifest(name: str) -> tuple[dict, list[tuple[str, tuple[int, ...]]]]:
    name = MANIFEST_FILES.get(name, name)
    base = reference_dir() / "manifests"
    if not (base / f"{name}.tsv").exists():
        pytest.skip(f"manifest {name} not available")
    meta = json.loads((base / f"{name}.json").read_text())
    rows = []
    for line in (base / f"{name}.tsv").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.split(",") if s)))
    return meta, rows


@pytest.mark.parametrize("name", MANIFESTS)
def test_published_layout_round_trips_on_meta(name: str) -> None:
    meta, rows = _manifest(name)
    with torch.device("meta"):
        model = create_model(name)
    sd = official_state_dict(model)
    assert {k: tuple(v.shape) for k, v in sd.items()} == dict(rows)
    assert len(sd) == meta["n_keys"]
    unique = {id(v) for v in sd.values()}
    assert len(unique) == meta["n_unique_tensors"]
    assert sum(p.numel() for p in model.parameters()) == meta["n_params_unique"]
    for group in meta["alias_groups"]:
        assert len({id(sd[k]) for k in group}) == 1, group
    # A published-style checkpoint with those keys (aliases included) loads with nothing left.
    ckpt = {"model": {k: torch.empty(s, device="meta") for k, s in rows}, "args": None}
    report = load_checkpoint(model, ckpt)
    assert report.layout == "official"
    assert report.missing == [] and report.unexpected == []
    assert report.loaded == len(model.state_dict())


@pytest.mark.parametrize("name", MANIFESTS[:2])
def test_manifest_constructor_builds_the_registered_architecture(name: str) -> None:
    meta, _ = _manifest(name)
    config = dust3r_config_from_official(meta["constructor"])
    with torch.device("meta"):
        registered = create_model(name)
    assert config.head == registered.config.head
    for field in ("enc_embed_dim", "enc_depth", "dec_embed_dim", "dec_depth", "dec_num_heads"):
        assert getattr(config, field) == getattr(registered.config, field)
    assert config.depth_mode == registered.config.depth_mode
    assert config.conf_mode == registered.config.conf_mode


@pytest.mark.parametrize(
    ("kind", "fixture", "preset"),
    [("dust3r", "dust3r_pair_tiny_dpt.pt", "dust3r_tiny_dpt"),
     ("spann3r", "spann3r_tiny_eval.pt", "spann3r_tiny")],
)  # fmt: skip
def test_official_round_trip_preserves_weights(
    tmp_path: Path, kind: str, fixture: str, preset: str
) -> None:
    fx = load_fixture(fixture)
    model = build_official(kind, fx["config"], fx["state_dict"])
    sd = official_state_dict(model)
    assert sd.keys() == fx["state_dict"].keys()
    for key, value in fx["state_dict"].items():
        assert torch.equal(sd[key], value), key
    # Published file layout on disk, loaded through the safe unpickler.
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "args": f"{kind}(...)", "epoch": 3}, path)
    fresh = create_model(preset, portrait="legacy_reshape")
    assert load_checkpoint(fresh, path).layout == "official"
    for (k, a), b in zip(fresh.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_spatialmem_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("dust3r_tiny_linear")
    path = tmp_path / "mine.pt"
    save_checkpoint(model, path, note="unit test")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "spatialmem" and payload["config"]["head"] == "linear"
    other = create_model("dust3r_tiny_linear")
    assert load_checkpoint(other, path).layout == "spatialmem"
    for a, b in zip(other.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_spatialmem_checkpoint_header_is_checked(tmp_path: Path) -> None:
    model = create_model("dust3r_tiny_linear")
    path = tmp_path / "mine.pt"
    save_checkpoint(model, path, step=7, note="unit test")
    report = load_checkpoint(create_model("dust3r_tiny_linear"), path)
    assert report.config_mismatch == [] and report.metadata == {"step": 7, "note": "unit test"}
    # A different setting is reported; the weights still load.
    other = create_model("dust3r_tiny_linear", portrait="native")
    report = load_checkpoint(other, path)
    assert report.config_mismatch == ["portrait: checkpoint 'transpose' vs model 'native'"]
    assert report.loaded == len(other.state_dict())
    payload = torch.load(path, weights_only=True)
    report = load_checkpoint(other, {**payload, "model_class": "Spann3R"})
    assert report.config_mismatch[0] == "model_class: checkpoint 'Spann3R' vs model 'DUSt3R'"
    with pytest.raises(CheckpointError, match="format version 2 is newer"):
        load_checkpoint(other, {**payload, "format_version": 2})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(model, path, config={})


def test_missing_and_unexpected_keys_are_reported() -> None:
    fx = load_fixture("dust3r_pair_tiny_linear.pt")
    model = create_model("dust3r_tiny_linear")
    broken = dict(fx["state_dict"])
    del broken["enc_norm.weight"]
    broken["some.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing 1 keys: encoder\.norm\.weight") as err:
        load_checkpoint(model, {"model": broken})
    assert "unexpected 1 keys: some.extra.weight" in str(err.value)
    report = load_checkpoint(model, {"model": broken}, strict=False)
    assert report.missing == ["encoder.norm.weight"]
    assert report.unexpected == ["some.extra.weight"]


def test_shape_mismatch_and_disagreeing_aliases_raise() -> None:
    fx = load_fixture("dust3r_pair_tiny_dpt.pt")
    model = create_model("dust3r_tiny_dpt")
    bad = dict(fx["state_dict"])
    bad["enc_norm.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(model, bad)
    bad = dict(fx["state_dict"])
    key = "downstream_head1.dpt.scratch.layer1_rn.weight"
    bad[key] = bad[key] + 1
    with pytest.raises(CheckpointError, match="alias keys"):
        load_checkpoint(model, bad)


def test_unreadable_inputs_raise_clearly(tmp_path: Path) -> None:
    model = create_model("dust3r_tiny_linear")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(model, tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="unrecognised checkpoint"):
        load_checkpoint(model, {"epoch": 3, "note": "no weights here"})
    evil = tmp_path / "evil.pth"

    class Payload:
        def __reduce__(self) -> tuple:
            return (print, ("this must never run",))

    torch.save({"model": {}, "obj": Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(model, evil)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"pos_embed": "cosine"}, "pos_embed"),
        ({"output_mode": "pts3d+desc24"}, "output_mode"),
        ({"head_type": "conv"}, "head_type"),
        ({"patch_embed_cls": "Mystery"}, "patch_embed_cls"),
    ],
)
def test_unsupported_official_options_are_rejected(change: dict, match: str) -> None:
    fx = load_fixture("dust3r_pair_tiny_linear.pt")
    with pytest.raises(ValueError, match=match):
        build_official("dust3r", {**fx["config"], **change})


def test_build_official_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        build_official("croco", {})


def test_spann3r_manifest_constructor_builds_the_registered_architecture() -> None:
    meta, _ = _manifest("spann3r_vitl_dpt512")
    config = spann3r_config_from_official(meta["constructor"])
    with torch.device("meta"):
        registered = create_model("spann3r_vitl_dpt512")
    ours = registered.config
    for field in ("mem_enc_depth", "mem_enc_num_heads", "mem_mlp_ratio", "mem_rope", "mem_dim"):
        assert getattr(config, field) == getattr(ours, field), field
    assert config.resolved_mem_enc_embed_dim == ours.resolved_mem_enc_embed_dim
    for field in ("enc_embed_dim", "enc_depth", "dec_embed_dim", "dec_depth", "head"):
        assert getattr(config.dust3r, field) == getattr(ours.dust3r, field), field
    # The published loading path (PatchEmbedDust3R + landscape_only) is the legacy portrait mode.
    assert config.dust3r.portrait == "legacy_reshape"
    assert config.memory_config.attn_dropout == meta["constructor"]["kwargs"]["memory_dropout"]


def test_spann3r_official_options_that_do_not_exist_are_refused() -> None:
    fx = load_fixture("spann3r_tiny_eval.pt")
    with pytest.raises(ValueError, match="use_feat"):
        spann3r_config_from_official({**fx["config"], "use_feat": True})
    with pytest.raises(ValueError, match="mem_out_dim"):
        spann3r_config_from_official({**fx["config"], "mem_out_dim": 32})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"hello, not a checkpoint\n", "not a file written by torch.save"),
        ("truncated", "truncated or corrupt"),
    ],
)
def test_unreadable_files_are_named_with_the_fault(
    tmp_path: Path, content: bytes | str, reason: str
) -> None:
    model = create_model("dust3r_tiny_linear")
    path = tmp_path / "weights.pth"
    if content == "truncated":
        save_checkpoint(model, path)
        raw = path.read_bytes()
        content = raw[: len(raw) // 2]
    assert isinstance(content, bytes)
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, path)
    text = str(err.value)
    assert "not a readable PyTorch checkpoint" in text and reason in text and str(path) in text
    assert "unpickles" not in text  # the pickle advice is for real pickled objects only


def test_pickled_objects_get_the_pickle_advice(tmp_path: Path) -> None:
    path = tmp_path / "objects.pth"
    torch.save({"model": {}, "when": Path("/")}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects") as err:
        load_checkpoint(create_model("dust3r_tiny_linear"), path)
    assert "pathlib" in str(err.value) and "re-save" in str(err.value)


def test_layout_is_the_best_match_and_extra_keys_are_named() -> None:
    model = create_model("dust3r_tiny_linear")
    state = dict(model.state_dict())
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("dust3r_tiny_linear"), state)
    text = str(err.value)
    assert "spatialmem layout" in text and "unexpected 1 keys: extra.weight" in text
    assert "missing" not in text
    report = load_checkpoint(create_model("dust3r_tiny_linear"), state, strict=False)
    assert report.layout == "spatialmem" and report.unexpected == ["extra.weight"]


def test_another_architecture_is_named(tmp_path: Path) -> None:
    path = tmp_path / "pair.pth"
    save_checkpoint(create_model("dust3r_tiny_linear"), path)
    with pytest.raises(CheckpointError, match="saved from a DUSt3R, not a Spann3R"):
        load_checkpoint(create_model("spann3r_tiny"), path)


def test_float64_tensors_are_cast_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = create_model("dust3r_tiny_linear")
    state = {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    fresh = create_model("dust3r_tiny_linear")
    with caplog.at_level("WARNING", logger="spatialmem.interop.checkpoint"):
        load_checkpoint(fresh, state)
    assert "stored as torch.float64 are cast to the model's torch.float32" in caplog.text
    assert all(p.dtype == torch.float32 for p in fresh.parameters())
    key = next(iter(state))
    torch.testing.assert_close(fresh.state_dict()[key], state[key].float())
