"""The weights shipped in the package: file format, fit to the preset, stable outputs, errors."""

import hashlib
from pathlib import Path

import pytest
import torch

from spatialmem.models import create_model
from spatialmem.models.pretrained import (
    MAX_FILE_BYTES,
    PRETRAINED_FORMAT,
    export_pretrained,
    load_pretrained,
    pretrained_input_size,
    pretrained_metadata,
    pretrained_models,
    pretrained_path,
)

NAME = "spann3r_small_synthetic"
FIXTURE = Path(__file__).parent / "fixtures" / f"pretrained_{NAME}_outputs.pt"
REGENERATE = "python -m spatialmem.models.pretrained CHECKPOINT --name " + NAME


@pytest.fixture(scope="module")
def shipped() -> dict:
    return torch.load(pretrained_path(NAME), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return create_model(NAME, pretrained=True).eval()


def test_the_default_model_ships_weights() -> None:
    assert NAME in pretrained_models()
    path = pretrained_path(NAME)
    assert path.is_file() and path.parent.name == "weights"
    assert path.stat().st_size < MAX_FILE_BYTES


def test_the_file_fits_the_preset_key_for_key_in_float16(shipped: dict) -> None:
    assert shipped["format"] == PRETRAINED_FORMAT and shipped["version"] == 1
    assert shipped["model"] == NAME
    with torch.device("meta"):
        own = create_model(NAME).state_dict()
    state = shipped["state_dict"]
    assert list(state) == list(own)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in own.items()
    }
    assert {v.dtype for v in state.values()} == {torch.float16}
    assert isinstance(shipped["metadata"], dict)


def test_loaded_weights_are_float32_and_equal_the_file(shipped: dict, model) -> None:
    loaded = model.state_dict()
    assert {v.dtype for v in loaded.values()} == {torch.float32}
    for key, value in shipped["state_dict"].items():
        assert torch.equal(loaded[key], value.float()), key


def test_metadata_records_the_export() -> None:
    meta = pretrained_metadata(NAME)
    assert {"date", "source", "parameters"} <= set(meta)
    assert meta["parameters"] == sum(p.numel() for p in create_model(NAME).parameters())


def test_the_training_frame_size_is_read_from_the_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import spatialmem.models.pretrained as pretrained

    config = pretrained_metadata(NAME)["config"]
    assert pretrained_input_size(NAME) == (config["height"], config["width"]) == (64, 96)
    with pytest.raises(ValueError, match="no pretrained weights"):
        pretrained_input_size("spann3r_tiny")
    unusable = [{}, {"config": "64x96"}, {"config": {"height": 64}}]
    unusable += [{"config": {"height": h, "width": 96}} for h in (0, True, 64.0)]
    for recorded in unusable:
        monkeypatch.setattr(pretrained, "pretrained_metadata", lambda name, r=recorded: r)
        assert pretrained_input_size(NAME) is None


def test_outputs_on_a_fixed_clip_are_stable(model) -> None:
    """The fixture holds the streamed outputs written together with the shipped weights."""
    from spatialmem.data.rooms import room_sequence
    from spatialmem.pipeline import reconstruct_frames

    assert FIXTURE.is_file(), f"missing {FIXTURE}; regenerate it with `{REGENERATE}`"
    assert FIXTURE.stat().st_size < 300_000
    ref = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    digest = hashlib.sha256(pretrained_path(NAME).read_bytes()).hexdigest()
    assert ref["weights_sha256"] == digest, (
        f"{FIXTURE.name} was written for other weights than the shipped ones: regenerate both "
        f"with `{REGENERATE}`"
    )
    clip = room_sequence(ref["scene"], num_frames=ref["num_frames"])
    with torch.inference_mode():
        recon = reconstruct_frames(model, clip.images)
    s = ref["pixel_stride"]
    pts3d, conf = recon.pts3d[:, ::s, ::s], recon.conf[:, ::s, ::s]
    scale = float(ref["pts3d"].norm(dim=-1).median())
    torch.testing.assert_close(pts3d, ref["pts3d"], rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(conf, ref["conf"], rtol=1e-4, atol=1e-4)


def test_pretrained_for_a_model_without_shipped_weights_names_those_with() -> None:
    with pytest.raises(ValueError, match="no pretrained weights") as err:
        create_model("spann3r_tiny", pretrained=True)
    assert NAME in str(err.value) and "load_checkpoint" in str(err.value)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no_such_model", pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights"):
        pretrained_path("spann3r_tiny")


def test_overrides_that_change_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit") as err:
        create_model(NAME, pretrained=True, enc_depth=4)
    text = str(err.value)
    assert "enc_depth" in text and "not in the model" in text
    with pytest.raises(ValueError, match="shape mismatches"):
        create_model(NAME, pretrained=True, patch_size=16)


def test_overrides_that_keep_shapes_are_allowed(shipped: dict) -> None:
    from spatialmem.memory import SpatialMemory

    class NewestFirst(SpatialMemory):
        def consolidation_scores(self, state):
            return -state.age.float()

    model = create_model(NAME, pretrained=True, memory=NewestFirst, portrait="native")
    assert isinstance(model.memory, NewestFirst)
    key = next(iter(shipped["state_dict"]))
    assert torch.equal(model.state_dict()[key], shipped["state_dict"][key].float())


def test_failed_load_leaves_the_model_untouched() -> None:
    model = create_model(NAME, enc_depth=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="do not fit"):
        load_pretrained(model, NAME)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("layout", ["state_dict", "last_pt", "save_checkpoint"])
def test_export_reads_training_checkpoints(tmp_path: Path, layout: str) -> None:
    from spatialmem.interop import save_checkpoint

    torch.manual_seed(1)
    source_model = create_model(NAME)
    src = tmp_path / "ckpt.pt"
    if layout == "state_dict":
        torch.save(source_model.state_dict(), src)
    elif layout == "last_pt":
        torch.save(
            {"format": "spatialmem.train_state/1", "model": source_model.state_dict(),
             "optimizer": {"state": {}, "param_groups": []}, "step": 1234, "epoch": 3,
             "config": {"lr": 3e-4, "crop": (64, 96)}},
            src,
        )  # fmt: skip
    else:
        save_checkpoint(source_model, src, step=99, train_config={"lr": 1e-4})
    out = export_pretrained(src, NAME, tmp_path / "w.pt", metadata={"metrics": {"acc": 0.1}})
    assert out.stat().st_size < MAX_FILE_BYTES
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert obj["format"] == PRETRAINED_FORMAT and obj["model"] == NAME
    meta = obj["metadata"]
    assert meta["metrics"] == {"acc": 0.1} and meta["source"] == "ckpt.pt"
    if layout == "last_pt":
        assert meta["steps"] == 1234 and meta["config"] == {"lr": 3e-4, "crop": [64, 96]}
    if layout == "save_checkpoint":
        assert meta["steps"] == 99 and meta["config"] == {"lr": 1e-4}
    for key, value in source_model.state_dict().items():
        assert obj["state_dict"][key].dtype == torch.float16
        torch.testing.assert_close(obj["state_dict"][key].float(), value, rtol=1e-3, atol=1e-4)


def test_export_refuses_a_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    src = tmp_path / "tiny.pt"
    torch.save(create_model("spann3r_tiny").state_dict(), src)
    with pytest.raises(ValueError, match=r"tiny\.pt|missing|shape"):
        export_pretrained(src, NAME, tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()
    with pytest.raises(ValueError, match="no pretrained weights"):
        export_pretrained(src, "spann3r_tiny", tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError):
        export_pretrained(tmp_path / "missing.pt", NAME, tmp_path / "w.pt")
