"""The DUSt3R pair model: registry, configuration, input validation, portrait handling."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import spatialmem
from spatialmem import DUSt3R, DUSt3RConfig, create_model, list_models


@pytest.fixture(scope="module")
def tiny() -> DUSt3R:
    torch.manual_seed(0)
    return create_model("dust3r_tiny_dpt").eval()


def _img(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_registry_lists_published_and_tiny_models() -> None:
    names = list_models()
    for name in ("dust3r_vitl_224_linear", "dust3r_vitl_512_dpt", "dust3r_tiny_dpt"):
        assert name in names
    assert list_models("*linear") == ["dust3r_tiny_linear", "dust3r_vitl_224_linear"]
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope")
    with pytest.raises(TypeError, match="unknown option"):
        create_model("dust3r_tiny_dpt", enc_widht=3)
    with pytest.raises(ValueError, match="already registered"):
        spatialmem.register_model(spatialmem.models.zoo.dust3r_tiny_dpt)


def test_widths_follow_the_config() -> None:
    model = create_model("dust3r_tiny_linear", dec_embed_dim=32, dec_num_heads=2)
    assert model.decoder.embed.out_features == 32
    assert model.head1.proj.in_features == 32
    with pytest.raises(ValueError, match="divisible"):
        DUSt3RConfig(enc_embed_dim=30, enc_num_heads=4)
    with pytest.raises(ValueError, match="dpt_hooks"):
        DUSt3RConfig(dec_depth=4, dpt_hooks=(0, 1, 2, 9))


def test_output_shapes_for_landscape_pairs_of_different_sizes(tiny: DUSt3R) -> None:
    with torch.no_grad():
        out = tiny(_img(2, 32, 48), _img(2, 48, 64, seed=1))
    assert out.view1.pts3d.shape == (2, 32, 48, 3) and out.view1.conf.shape == (2, 32, 48)
    assert out.view2.pts3d.shape == (2, 48, 64, 3) and out.view2.conf.shape == (2, 48, 64)
    assert (out.view1.conf >= 1).all() and torch.isfinite(out.view2.pts3d).all()


@given(perm_seed=st.integers(0, 1000))
def test_pair_model_is_equivariant_to_batch_permutation(perm_seed: int) -> None:
    torch.manual_seed(0)
    model = create_model("dust3r_tiny_linear").eval()
    img1, img2 = _img(3, 32, 32), _img(3, 32, 32, seed=1)
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(perm_seed))
    with torch.no_grad():
        out = model(img1, img2)
        enc = model.encoder(img1)
        enc_p = model.encoder(img1[perm])
        out_p = model(img1[perm], img2[perm])
    torch.testing.assert_close(enc_p.tokens, enc.tokens[perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_p.view2.pts3d, out.view2.pts3d[perm], atol=1e-4, rtol=1e-4)


def test_portrait_transpose_mode_equals_transposed_landscape(tiny: DUSt3R) -> None:
    land1, land2 = _img(1, 32, 48), _img(1, 32, 48, seed=1)
    with torch.no_grad():
        ref = tiny(land1, land2)
        port = tiny(land1.transpose(-1, -2), land2.transpose(-1, -2))
    assert port.view1.pts3d.shape == (1, 48, 32, 3)
    torch.testing.assert_close(port.view1.pts3d, ref.view1.pts3d.transpose(1, 2))
    torch.testing.assert_close(port.view2.conf, ref.view2.conf.transpose(1, 2))


def test_portrait_native_and_legacy_modes_differ_but_keep_shapes(tiny: DUSt3R) -> None:
    img1, img2 = _img(1, 48, 32), _img(1, 48, 32, seed=1)
    outs = {}
    for mode in ("native", "legacy_reshape"):
        torch.manual_seed(0)
        model = create_model("dust3r_tiny_dpt", portrait=mode).eval()
        with torch.no_grad():
            outs[mode] = model(img1, img2)
        assert outs[mode].view1.pts3d.shape == (1, 48, 32, 3)
    assert not torch.allclose(outs["native"].view1.pts3d, outs["legacy_reshape"].view1.pts3d)


@pytest.mark.usefixtures("without_typecheck")
@pytest.mark.parametrize(
    ("img1", "img2", "match"),
    [
        (torch.zeros(1, 3, 30, 32), torch.zeros(1, 3, 32, 32), "img1.*multiples of the patch"),
        (torch.zeros(1, 1, 32, 32), torch.zeros(1, 3, 32, 32), "img1.*size 3 in dimension 1"),
        (torch.zeros(3, 32, 32), torch.zeros(1, 3, 32, 32), "img1.*4 dimensions"),
        (torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 32, 32), "same batch size"),
        (torch.zeros(1, 3, 32, 32), torch.full((1, 3, 32, 32), math.inf), "img2.*NaN/Inf"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.int64), torch.zeros(1, 3, 32, 32), "floating"),
    ],
)
def test_bad_inputs_raise_clear_errors(
    tiny: DUSt3R, img1: torch.Tensor, img2: torch.Tensor, match: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        tiny(img1, img2)


def test_value_checks_can_be_switched_off(tiny: DUSt3R) -> None:
    img = torch.zeros(1, 3, 32, 32)
    img[0, 0, 0, 0] = math.nan
    with spatialmem.value_checks(False), torch.no_grad():
        out = tiny(img, img)
    assert torch.isnan(out.view1.pts3d).any()
    assert spatialmem._checks.value_checks_enabled()


def test_bf16_autocast_keeps_float32_heads(tiny: DUSt3R) -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(_img(1, 32, 32), _img(1, 32, 32, seed=1))
    assert out.view1.pts3d.dtype == torch.float32
    with torch.no_grad():
        ref = tiny(_img(1, 32, 32), _img(1, 32, 32, seed=1))
    # bf16 trunk: same predictions to bf16 precision.
    assert (out.view1.conf - ref.view1.conf).abs().max() < 0.25 * ref.view1.conf.abs().max()
