"""Fixtures A1/A2: the DUSt3R pair model reproduces the official outputs and intermediates."""

import pytest
import torch

from conftest import assert_close, load_fixture
from spatialmem.data import to_model_range
from spatialmem.interop import build_official
from spatialmem.layers import RoPE2D
from spatialmem.models import DUSt3R

FIXTURES = ["dust3r_pair_tiny_dpt.pt", "dust3r_pair_tiny_linear.pt"]


@pytest.fixture(scope="module", params=FIXTURES)
def case(request: pytest.FixtureRequest) -> tuple[dict, DUSt3R]:
    fx = load_fixture(request.param)
    model = build_official("dust3r", fx["config"], fx["state_dict"])
    assert isinstance(model, DUSt3R) and not model.training
    return fx, model


def test_encoder_intermediates(case: tuple[dict, DUSt3R]) -> None:
    fx, model = case
    it = fx["intermediates"]
    for view in ("1", "2"):
        img = fx["inputs"][f"view{view}"]["img"]
        with torch.no_grad():
            tokens, pos = model.encoder.patch_embed(img)
            out, blocks = model.encoder.forward_intermediates(img)
        assert torch.equal(pos, it[f"pos{view}"])
        assert_close(tokens, it[f"enc_patch_tokens{view}"], what="patch tokens")
        assert_close(out.tokens, it[f"feat{view}"], what=f"feat{view}")
        if view == "1":
            assert len(blocks) == len(it["enc_block_outputs1"])
            for i, (got, want) in enumerate(zip(blocks, it["enc_block_outputs1"], strict=True)):
                assert_close(got, want, what=f"encoder block {i}")


def test_decoder_lists(case: tuple[dict, DUSt3R]) -> None:
    fx, model = case
    it = fx["intermediates"]
    with torch.no_grad():
        dec1, dec2 = model.decoder(it["feat1"], it["feat2"], it["pos1"], it["pos2"])
        assert_close(model.decoder.embed(it["feat1"]), it["dec_embed1"], what="dec_embed1")
        assert_close(model.decoder.embed(it["feat2"]), it["dec_embed2"], what="dec_embed2")
    for name, got_list in (("dec1", dec1), ("dec2", dec2)):
        want_list = it[name]
        assert len(got_list) == len(want_list) == model.config.dec_depth + 1
        for i, (got, want) in enumerate(zip(got_list, want_list, strict=True)):
            assert_close(got, want, what=f"{name}[{i}]")


def test_rope_probes(case: tuple[dict, DUSt3R]) -> None:
    fx, model = case
    for part, module in (("enc", model.encoder.rope), ("dec", model.decoder.rope)):
        probe = fx["intermediates"]["rope_probe"][part]
        assert module is not None and module.base == probe["base"]
        assert_close(module(probe["tokens"], probe["positions"]), probe["out"], what=f"rope {part}")
        assert_close(
            RoPE2D(probe["base"])(probe["tokens"], probe["positions"]), probe["out"], what=part
        )


def test_heads_on_reference_tokens(case: tuple[dict, DUSt3R]) -> None:
    fx, model = case
    it = fx["intermediates"]
    hw = tuple(fx["config"]["run"]["image_hw"])
    with torch.no_grad():
        for n, head in (("1", model.head1), ("2", model.head2)):
            raw = head.forward_raw(it[f"dec{n}"], hw)
            assert_close(raw, it[f"head{n}"]["raw"], what=f"head{n} raw")


def test_final_outputs(case: tuple[dict, DUSt3R]) -> None:
    fx, model = case
    inputs, outputs = fx["inputs"], fx["outputs"]
    with torch.no_grad():
        out = model(inputs["view1"]["img"], inputs["view2"]["img"])
    assert_close(out.view1.pts3d, outputs["res1"]["pts3d"], what="view1 pts3d")
    assert_close(out.view1.conf, outputs["res1"]["conf"], what="view1 conf")
    assert_close(out.view2.pts3d, outputs["res2"]["pts3d_in_other_view"], what="view2 pts3d")
    assert_close(out.view2.conf, outputs["res2"]["conf"], what="view2 conf")


def test_uint8_inputs_normalise_like_the_official_loader(case: tuple[dict, DUSt3R]) -> None:
    """The library's conversion (not a re-derivation of the formula) gives the fixture inputs."""
    fx, _ = case
    u8 = fx["inputs"]["img_uint8"]  # [2, B, H, W, 3]
    for v, view in enumerate(("view1", "view2")):
        assert torch.equal(to_model_range(u8[v]), fx["inputs"][view]["img"]), view
