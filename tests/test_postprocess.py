"""Depth/confidence modes: parsing, validation, mapping semantics and exact inverses."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spatialmem.heads import (
    ConfMode,
    DepthMode,
    HeadOutput,
    map_conf,
    map_depth,
    postprocess,
    unmap_conf,
    unmap_depth,
)
from spatialmem.interop import conf_mode_from_official, depth_mode_from_official

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3)
dtypes = st.sampled_from([torch.float32, torch.float64])


def _randn(seed: int, *shape: int, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(tuple(shape), generator=g, dtype=torch.float64)).to(dtype)


# --- modes -----------------------------------------------------------------------------------


def test_defaults_are_the_published_modes() -> None:
    assert DepthMode() == DepthMode("exp", -math.inf, math.inf)
    assert ConfMode() == ConfMode("exp", 1.0, math.inf)


@pytest.mark.parametrize(
    ("seq", "want"),
    [
        (["exp", "-inf", "inf"], DepthMode("exp")),
        (("linear", -2, 3.5), DepthMode("linear", -2.0, 3.5)),
        (["square", "-inf", " INF "], DepthMode("square")),
    ],
)
def test_depth_mode_from_official(seq, want) -> None:
    got = depth_mode_from_official(seq)
    assert got == want
    assert isinstance(got.vmin, float) and isinstance(got.vmax, float)


@pytest.mark.parametrize(
    ("seq", "want"),
    [
        (["exp", 1, "inf"], ConfMode("exp", 1.0, math.inf)),
        (["exp", "0.5", "inf"], ConfMode("exp", 0.5)),
        (["sigmoid", 0, 2], ConfMode("sigmoid", 0.0, 2.0)),
    ],
)
def test_conf_mode_from_official(seq, want) -> None:
    assert conf_mode_from_official(seq) == want


@pytest.mark.parametrize(
    ("cls", "seq", "match"),
    [
        (DepthMode, ["exp", "-inf"], "3-element"),
        (DepthMode, "exp", "3-element"),
        (DepthMode, ["cubic", "-inf", "inf"], "kind must be one of"),
        (DepthMode, ["linear", 1, 1], "vmin must be < vmax"),
        (DepthMode, ["exp", "-inf", "lots"], "vmax"),
        (DepthMode, ["exp", "-inf", -1], "vmax must be > 0"),
        (ConfMode, ["exp", "-inf", "inf"], "vmin must be finite"),
        (ConfMode, ["sigmoid", 0, "inf"], "finite bounds"),
        (ConfMode, ["tanh", 1, "inf"], "kind must be one of"),
        (ConfMode, ["exp", "nan", "inf"], "NaN"),
    ],
)
def test_bad_modes_raise(without_typecheck, cls, seq, match) -> None:
    with pytest.raises(ValueError, match=match):
        {DepthMode: depth_mode_from_official, ConfMode: conf_mode_from_official}[cls](seq)


def test_bad_mode_constructor_raises(without_typecheck) -> None:
    with pytest.raises(ValueError, match="kind"):
        DepthMode("log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vmin must be < vmax"):
        ConfMode("sigmoid", 2.0, 1.0)
    with pytest.raises(TypeError, match="vmin"):
        conf_mode_from_official(["exp", None, "inf"])


def test_modes_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DepthMode().kind = "linear"  # type: ignore[misc]


# --- depth -----------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**16),
    shape=shapes,
    kind=st.sampled_from(["linear", "square", "exp"]),
    dtype=dtypes,
)
def test_depth_unmap_inverts_map(seed: int, shape: list[int], kind: str, dtype) -> None:
    mode = DepthMode(kind)  # type: ignore[arg-type]
    xyz = _randn(seed, *shape, 3, scale=2.0, dtype=dtype)
    back = unmap_depth(map_depth(xyz, mode), mode)
    assert back.shape == xyz.shape and back.dtype == dtype
    torch.testing.assert_close(back, xyz, atol=1e-4, rtol=1e-4)
    # and the other way round: map(unmap(p)) == p
    pts = _randn(seed + 1, *shape, 3, scale=5.0, dtype=dtype)
    torch.testing.assert_close(map_depth(unmap_depth(pts, mode), mode), pts, atol=1e-4, rtol=1e-4)


@given(seed=st.integers(0, 2**16), shape=shapes, kind=st.sampled_from(["square", "exp"]))
def test_depth_keeps_direction(seed: int, shape: list[int], kind: str) -> None:
    xyz = _randn(seed, *shape, 3, dtype=torch.float64)
    pts = map_depth(xyz, DepthMode(kind))  # type: ignore[arg-type]
    d = xyz.norm(dim=-1)
    want = torch.expm1(d) if kind == "exp" else d.square()
    torch.testing.assert_close(pts.norm(dim=-1), want)
    cos = torch.nn.functional.cosine_similarity(pts, xyz, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos))


def test_depth_zero_vector_maps_to_zero() -> None:
    for kind in ("linear", "square", "exp"):
        mode = DepthMode(kind)  # type: ignore[arg-type]
        assert torch.equal(map_depth(torch.zeros(2, 3), mode), torch.zeros(2, 3))
        assert torch.equal(unmap_depth(torch.zeros(2, 3), mode), torch.zeros(2, 3))


def test_depth_bounds() -> None:
    xyz = torch.tensor([[3.0, -4.0, 0.0], [0.03, 0.0, -0.04], [1.0, 2.0, 2.0]])
    linear = map_depth(xyz, DepthMode("linear", -1.0, 2.5))
    assert torch.equal(linear, xyz.clamp(-1.0, 2.5))
    # distance modes clamp the distance to [max(vmin, 0), vmax] and keep the direction
    for kind in ("square", "exp"):
        pts = map_depth(xyz, DepthMode(kind, 0.5, 10.0))  # type: ignore[arg-type]
        dist = pts.norm(dim=-1)
        assert float(dist.min()) >= 0.5 - 1e-6 and float(dist.max()) <= 10.0 + 1e-5
        cos = torch.nn.functional.cosine_similarity(pts, xyz, dim=-1)
        torch.testing.assert_close(cos, torch.ones_like(cos))
    # a negative lower bound is no bound on a distance
    torch.testing.assert_close(
        map_depth(xyz, DepthMode("exp", -5.0, 1000.0)), map_depth(xyz, DepthMode("exp"))
    )


@given(seed=st.integers(0, 2**16), shape=shapes)
def test_depth_bounded_inverse_inside_bounds(seed: int, shape: list[int]) -> None:
    mode = DepthMode("exp", 0.01, 50.0)
    xyz = _randn(seed, *shape, 3, dtype=torch.float64)
    d = xyz.norm(dim=-1, keepdim=True)
    xyz = xyz / d.clamp(min=1e-8) * d.clamp(0.05, 3.5)  # expm1 of [0.05, 3.5] is inside bounds
    torch.testing.assert_close(unmap_depth(map_depth(xyz, mode), mode), xyz)


# --- confidence ------------------------------------------------------------------------------


conf_modes = st.one_of(
    st.builds(ConfMode, st.just("exp"), st.floats(-3.0, 3.0), st.just(math.inf)),
    st.builds(
        lambda lo, span: ConfMode("sigmoid", lo, lo + span),
        st.floats(-3.0, 3.0),
        st.floats(0.5, 10.0),
    ),
)


@given(seed=st.integers(0, 2**16), shape=shapes, mode=conf_modes, dtype=dtypes)
def test_conf_unmap_inverts_map(seed: int, shape: list[int], mode: ConfMode, dtype) -> None:
    x = _randn(seed, *shape, scale=2.0, dtype=dtype).clamp(-5.0, 5.0)
    back = unmap_conf(map_conf(x, mode), mode)
    assert back.shape == x.shape and back.dtype == dtype
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(back, x, atol=tol, rtol=tol)


@given(seed=st.integers(0, 2**16), shape=shapes, mode=conf_modes, scale=st.floats(0.1, 100.0))
def test_conf_bounds(seed: int, shape: list[int], mode: ConfMode, scale: float) -> None:
    x = _randn(seed, *shape, scale=scale)
    conf = map_conf(x, mode)
    assert bool((conf >= mode.vmin).all())
    assert bool((conf <= mode.vmax).all())
    if mode.kind == "sigmoid":
        moderate = map_conf(x.clamp(-10.0, 10.0), mode)
        assert bool((moderate > mode.vmin).all()) and bool((moderate < mode.vmax).all())


def test_conf_formulas() -> None:
    x = torch.tensor([-2.0, 0.0, 1.0, 30.0])
    torch.testing.assert_close(map_conf(x, ConfMode()), 1.0 + x.exp())
    capped = map_conf(x, ConfMode("exp", 1.0, 5.0))
    torch.testing.assert_close(capped, 1.0 + x.exp().clamp(max=4.0))
    sig = map_conf(x, ConfMode("sigmoid", -1.0, 3.0))
    torch.testing.assert_close(sig, 4.0 * torch.sigmoid(x) - 1.0)


# --- postprocess -----------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**16),
    b=st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    depth=st.sampled_from([DepthMode(), DepthMode("linear"), DepthMode("square")]),
    conf=st.sampled_from([ConfMode(), ConfMode("sigmoid", 0.0, 1.0)]),
)
def test_postprocess_layout(
    seed: int, b: int, h: int, w: int, depth: DepthMode, conf: ConfMode
) -> None:
    raw = _randn(seed, b, 4, h, w)
    out = postprocess(raw, depth, conf)
    assert isinstance(out, HeadOutput)
    assert out.pts3d.shape == (b, h, w, 3) and out.conf.shape == (b, h, w)
    i, y, x = b - 1, h // 2, w - 1
    torch.testing.assert_close(out.pts3d[i, y, x], map_depth(raw[i, :3, y, x], depth))
    torch.testing.assert_close(out.conf[i, y, x], map_conf(raw[i, 3, y, x], conf))


def test_postprocess_rejects_bad_raw(without_typecheck) -> None:
    with pytest.raises(ValueError, match=r"`raw`.*B 4 H W"):
        postprocess(torch.zeros(1, 3, 2, 2), DepthMode(), ConfMode())
    with pytest.raises(ValueError, match="`raw`"):
        postprocess(torch.zeros(4, 2, 2), DepthMode(), ConfMode())
    with pytest.raises(TypeError, match="`raw`"):
        postprocess(torch.zeros(1, 4, 2, 2, dtype=torch.int64), DepthMode(), ConfMode())
    with pytest.raises(ValueError, match="`xyz`"):
        map_depth(torch.zeros(2, 2), DepthMode())


def test_head_output_shapes_are_checked_in_tests() -> None:
    HeadOutput(pts3d=torch.zeros(1, 2, 3, 3), conf=torch.zeros(1, 2, 3))
    with pytest.raises(TypeError):
        HeadOutput(pts3d=torch.zeros(1, 2, 3, 3), conf=torch.zeros(1, 3, 2))
