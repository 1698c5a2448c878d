"""Reconstruction metrics: nearest neighbours, accuracy/completion/NC, alignment, pointmaps."""

import math
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

from spatialmem.geometry import points_in_camera, rigid, sim3, transform_points
from spatialmem.metrics import (
    NeighborIndex,
    ReconstructionMetrics,
    accuracy,
    aligned_point_error,
    bounding_box_diagonal,
    chamfer_distance,
    completion,
    completion_ratio,
    estimate_normals,
    evaluate_pointclouds,
    evaluate_pointmaps,
    format_table,
    has_scipy,
    icp,
    knn,
    mean_metrics,
    nearest_neighbors,
    normal_consistency,
    random_subset_indices,
    voxel_downsample_indices,
)

needs_scipy = pytest.mark.skipif(not has_scipy(), reason="scipy (the `eval` extra) not installed")


def _cloud(n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _plane(n_side: int, z: float = 0.0, spacing: float = 0.01) -> torch.Tensor:
    ax = torch.arange(n_side, dtype=torch.float64) * spacing
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return torch.stack([x, y, torch.full_like(x, z)], dim=-1).reshape(-1, 3)


def _scene(t: int = 2, h: int = 12, w: int = 16) -> torch.Tensor:
    """``[T, H, W, 3]`` pointmaps of a curved surface seen from slightly moving cameras."""
    v, u = torch.meshgrid(
        torch.linspace(-1, 1, h, dtype=torch.float64),
        torch.linspace(-1, 1, w, dtype=torch.float64),
        indexing="ij",
    )
    frames = []
    for i in range(t):
        depth = 2.0 + 0.3 * u + 0.2 * v.square() + 0.1 * i
        frames.append(torch.stack([u * depth + 0.1 * i, v * depth, depth], dim=-1))
    return torch.stack(frames)


# ------------------------------------------------------------------------------------------------
# nearest neighbours


@needs_scipy
@pytest.mark.parametrize("chunk", [7, 97, 4096])
def test_backends_agree_nearest(chunk: int) -> None:
    query, ref = _cloud(300, 0, torch.float32), _cloud(250, 1, torch.float32)
    d_kd, i_kd = nearest_neighbors(query, ref, backend="kdtree")
    d_t, i_t = nearest_neighbors(query, ref, backend="torch", chunk=chunk)
    assert torch.equal(i_kd, i_t)
    torch.testing.assert_close(d_t, d_kd, atol=1e-12, rtol=0)
    brute = torch.cdist(query.double(), ref.double()).min(dim=1)
    torch.testing.assert_close(d_kd, brute.values, atol=1e-12, rtol=0)
    assert d_kd.dtype == torch.float64 and i_kd.dtype == torch.int64


@needs_scipy
def test_backends_agree_knn_and_metrics() -> None:
    query, ref = _cloud(200, 2), _cloud(180, 3)
    d_kd, i_kd = knn(query, ref, 8, backend="kdtree")
    d_t, i_t = knn(query, ref, 8, backend="torch", chunk=50)
    assert torch.equal(i_kd, i_t)
    torch.testing.assert_close(d_t, d_kd, atol=1e-12, rtol=0)
    assert bool((d_kd[:, 1:] >= d_kd[:, :-1]).all())  # sorted per row
    m_kd = evaluate_pointclouds(query, ref, backend="kdtree").as_dict()
    m_t = evaluate_pointclouds(query, ref, backend="torch", chunk=64).as_dict()
    assert m_kd.keys() == m_t.keys()
    for key, value in m_kd.items():
        assert value == pytest.approx(m_t[key], abs=1e-9), key


def test_kdtree_without_scipy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy.spatial", None)  # import now fails
    assert not has_scipy()
    with pytest.raises(ImportError, match=r"spatialmem\[eval\]"):
        nearest_neighbors(_cloud(5, 0), _cloud(5, 1), backend="kdtree")
    index = NeighborIndex(_cloud(5, 1), backend="auto")  # falls back
    assert index.backend == "torch"
    dist, _ = nearest_neighbors(_cloud(5, 0), _cloud(5, 1))
    torch.testing.assert_close(dist, torch.cdist(_cloud(5, 0), _cloud(5, 1)).min(1).values)


def test_neighbor_index_reuse_and_empty_query() -> None:
    index = NeighborIndex(_cloud(20, 0), backend="torch")
    d, i = index.query(_cloud(0, 1))
    assert d.shape == (0, 1) and i.shape == (0, 1)
    d, i = index.query(_cloud(20, 0), k=2)
    assert torch.equal(i[:, 0], torch.arange(20)) and bool((d[:, 0] == 0).all())


# ------------------------------------------------------------------------------------------------
# known answers


def test_parallel_planes() -> None:
    d = 0.03
    lower, upper = _plane(20), _plane(20, z=d)
    m = evaluate_pointclouds(upper, lower, threshold=0.05)
    for value in (m.acc, m.acc_med, m.comp, m.comp_med, m.chamfer):
        assert value == pytest.approx(d, abs=1e-12)
    assert m.nc == pytest.approx(1.0, abs=1e-9) and m.nc_med == pytest.approx(1.0, abs=1e-9)
    assert m.nc_acc == pytest.approx(1.0, abs=1e-9) and m.nc_comp == pytest.approx(1.0, abs=1e-9)
    assert m.completion_ratio == 1.0 and (m.num_pred, m.num_gt) == (400, 400)
    assert accuracy(upper, lower) == pytest.approx((d, d), abs=1e-12)
    assert completion(upper, lower) == pytest.approx((d, d), abs=1e-12)
    assert chamfer_distance(upper, lower) == pytest.approx(d, abs=1e-12)


def test_completion_ratio_steps_at_the_threshold() -> None:
    d = 0.03
    lower, upper = _plane(10), _plane(10, z=d)
    assert completion_ratio(upper, lower, d - 1e-9) == 0.0
    assert completion_ratio(upper, lower, d) == 0.0  # strict, as the official code
    assert completion_ratio(upper, lower, d + 1e-9) == 1.0
    # half of the ground truth far away: the ratio is the near half
    far = _plane(10, z=1.0)
    assert completion_ratio(upper, torch.cat([lower, far]), d + 1e-9) == 0.5


def test_translated_grid_distances_are_the_shift() -> None:
    ax = torch.arange(6, dtype=torch.float64) * 0.1
    grid = torch.cartesian_prod(ax, ax, ax)
    v = torch.tensor([0.01, -0.02, 0.015], dtype=torch.float64)  # |v| < half the spacing
    dist, idx = nearest_neighbors(grid + v, grid)
    assert torch.equal(idx, torch.arange(grid.shape[0]))
    torch.testing.assert_close(dist, torch.full_like(dist, float(v.norm())), atol=1e-12, rtol=0)
    m = evaluate_pointclouds(grid + v, grid, normals=False)
    assert m.acc == pytest.approx(float(v.norm()), abs=1e-12)
    assert math.isnan(m.nc)
    aligned = evaluate_pointclouds(grid + v, grid, align="sim3", normals=False)
    assert aligned.acc < 1e-9 and aligned.comp < 1e-9


def test_normal_consistency_known_answers() -> None:
    pts = _cloud(50, 0)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(50, 3)
    x = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(50, 3)
    assert normal_consistency(pts, pts, z, -3.0 * z) == (1.0, 1.0)  # unoriented, any length
    assert normal_consistency(pts, pts, z, x) == (0.0, 0.0)
    # a zero normal means "no normal": those pairs are left out
    partial = z.clone()
    partial[:25] = 0.0
    assert normal_consistency(pts, pts, partial, z) == (1.0, 1.0)
    mean, med = normal_consistency(pts, pts, torch.zeros_like(z), z)
    assert math.isnan(mean) and math.isnan(med)


def test_nc_is_the_average_of_both_directions() -> None:
    pred = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [1.1, 0, 0]], dtype=torch.float64)
    gt = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    side = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    pred_n = torch.stack([up, up, side])
    gt_n = torch.stack([up, up])
    m = evaluate_pointclouds(pred, gt, pred_normals=pred_n, gt_normals=gt_n)
    assert m.nc_acc == pytest.approx(2 / 3) and m.nc_acc_med == 1.0  # NC1: pred -> gt
    assert m.nc_comp == 1.0 and m.nc_comp_med == 1.0  # NC2: gt -> pred
    assert m.nc == pytest.approx((2 / 3 + 1) / 2) and m.nc_med == 1.0


def test_numpy_median_for_even_counts() -> None:
    gt = torch.zeros(1, 3, dtype=torch.float64)
    pred = torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [10.0, 0, 0]], dtype=torch.float64)
    assert accuracy(pred, gt) == (4.0, 2.5)


# ------------------------------------------------------------------------------------------------
# properties


clouds = st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(0, 10_000))


@given(clouds)
def test_chamfer_symmetric_and_zero_on_identical(spec: tuple[int, int, int]) -> None:
    n, m, seed = spec
    a, b = _cloud(n, seed), _cloud(m, seed + 1)
    assert chamfer_distance(a, b) == chamfer_distance(b, a)
    assert chamfer_distance(a, a) == 0.0
    assert accuracy(a, b)[0] == completion(b, a)[0]


@given(clouds)
def test_chamfer_invariant_to_order_and_rigid_motion(spec: tuple[int, int, int]) -> None:
    n, m, seed = spec
    a, b = _cloud(n, seed), _cloud(m, seed + 1)
    base = chamfer_distance(a, b)
    g = torch.Generator().manual_seed(seed)
    perm_a, perm_b = torch.randperm(n, generator=g), torch.randperm(m, generator=g)
    assert chamfer_distance(a[perm_a], b[perm_b]) == pytest.approx(base, abs=1e-12)
    motion = rigid(_rotation(seed), torch.randn(3, generator=g, dtype=torch.float64))
    moved = chamfer_distance(transform_points(motion, a), transform_points(motion, b))
    assert moved == pytest.approx(base, abs=1e-9)


@given(clouds, st.floats(0, 2), st.floats(0, 2))
def test_completion_ratio_monotone(spec: tuple[int, int, int], t1: float, t2: float) -> None:
    n, m, seed = spec
    a, b = _cloud(n, seed), _cloud(m, seed + 1)
    lo, hi = sorted((t1, t2))
    r_lo, r_hi = completion_ratio(a, b, lo), completion_ratio(a, b, hi)
    assert 0.0 <= r_lo <= r_hi <= 1.0
    assert completion_ratio(a, b, 0.0) == 0.0


# ------------------------------------------------------------------------------------------------
# normals, subsampling, ICP


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_estimate_normals_plane_and_sphere(backend: str) -> None:
    plane = _plane(12) @ _rotation(0).T
    normals = estimate_normals(plane, k=8, backend=backend)
    cos = (normals @ _rotation(0)[:, 2]).abs()
    torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-9, rtol=0)
    sphere = torch.nn.functional.normalize(torch.randn(2000, 3, dtype=torch.float64), dim=-1)
    normals = estimate_normals(sphere, k=10, backend=backend)
    assert float((normals * sphere).sum(-1).abs().min()) > 0.99
    assert estimate_normals(plane.float(), k=8).dtype == torch.float32


def test_voxel_downsample_keeps_first_point_per_voxel() -> None:
    pts = torch.tensor(
        [[0.05, 0.05, 0.05], [0.5, 0.5, 0.5], [0.06, 0.01, 0.09], [1.5, 0.2, 0.2], [0.55, 0.9, 0.1]]
    )
    assert voxel_downsample_indices(pts, 1.0).tolist() == [0, 3]
    assert voxel_downsample_indices(pts, 0.1).tolist() == [0, 1, 3, 4]
    assert voxel_downsample_indices(pts[:0], 0.1).shape == (0,)


def test_random_subset_is_deterministic() -> None:
    a = random_subset_indices(1000, 50, seed=3)
    assert torch.equal(a, random_subset_indices(1000, 50, seed=3))
    assert not torch.equal(a, random_subset_indices(1000, 50, seed=4))
    assert a.shape == (50,) and bool((a[1:] > a[:-1]).all())
    assert torch.equal(random_subset_indices(10, 50), torch.arange(10))


def test_icp_recovers_a_small_motion() -> None:
    target = _cloud(800, 0)
    c, s = math.cos(0.04), math.sin(0.04)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    truth = rigid(rot, torch.tensor([0.02, -0.01, 0.015], dtype=torch.float64))
    moved = transform_points(truth, target)
    result = icp(moved, target, max_distance=0.2)
    torch.testing.assert_close(result.transform @ truth, torch.eye(4, dtype=torch.float64))
    assert result.fitness == 1.0 and result.inlier_rmse < 1e-6 and result.iterations >= 1


# ------------------------------------------------------------------------------------------------
# alignment and pointmaps


def test_sim3_alignment_rotates_given_normals() -> None:
    gt = _plane(10)
    motion = sim3(torch.tensor(2.0, dtype=torch.float64), _rotation(5), torch.ones(3).double())
    pred = transform_points(motion, gt)
    gt_n = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(gt)
    pred_n = gt_n @ _rotation(5).T  # the normals in the prediction's frame
    m = evaluate_pointclouds(pred, gt, pred_normals=pred_n, gt_normals=gt_n, align="sim3")
    assert m.acc < 1e-9 and m.comp < 1e-9 and m.nc == pytest.approx(1.0, abs=1e-9)
    unaligned = evaluate_pointclouds(pred, gt, pred_normals=pred_n, gt_normals=gt_n)
    assert unaligned.acc > 0.1


@pytest.mark.parametrize("normals", ["cloud", "pointmap"])
def test_pointmaps_sim3_and_median_recover_the_scene(normals: str) -> None:
    gt = _scene()
    motion = sim3(torch.tensor(0.5, dtype=torch.float64), _rotation(1), torch.ones(3).double())
    pred = transform_points(motion, gt.reshape(-1, 3)).reshape(gt.shape)
    m = evaluate_pointmaps(pred, gt, align="sim3", normals=normals)
    assert m.acc < 1e-9 and m.comp < 1e-9 and m.nc > 0.999
    assert (m.num_pred, m.num_gt) == (gt.numel() // 3, gt.numel() // 3)
    # the median alignment handles scale and a depth shift (no rotation)
    shifted = 0.5 * gt + torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64)
    m = evaluate_pointmaps(shifted[None], gt[None], align="median", normals=normals)
    assert m.acc < 1e-9 and m.comp < 1e-9
    assert evaluate_pointmaps(shifted, gt, normals=normals).acc > 0.1


def test_pointmaps_official_protocol_with_icp() -> None:
    gt = _scene()
    c, s = math.cos(0.03), math.sin(0.03)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)
    pred = 1.7 * (gt @ rot.T)
    median = evaluate_pointmaps(pred, gt, align="median", normals="none")
    refined = evaluate_pointmaps(pred, gt, align="median", icp_threshold=0.1, normals="none")
    assert refined.acc < 0.5 * median.acc


def test_pointmaps_masks_conf_and_subsampling() -> None:
    gt = _scene(t=2, h=16, w=16)
    valid = torch.ones(gt.shape[:-1], dtype=torch.bool)
    valid[:, :4] = False
    gt_nan = gt.clone()
    gt_nan[~valid] = float("nan")  # invalid pixels may hold anything
    pred = gt + 0.01
    m = evaluate_pointmaps(pred, gt_nan, valid, normals="none")
    assert m.num_gt == int(valid.sum()) == m.num_pred
    conf = torch.rand(
        gt.shape[:-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    m_conf = evaluate_pointmaps(pred, gt_nan, valid, conf, conf_threshold=0.5, normals="none")
    assert m_conf.num_pred == int((valid & (conf >= 0.5)).sum()) and m_conf.num_gt == m.num_gt
    sub = evaluate_pointmaps(pred, gt_nan, valid, voxel_size=0.2, max_points=60, normals="none")
    again = evaluate_pointmaps(pred, gt_nan, valid, voxel_size=0.2, max_points=60, normals="none")
    assert repr(sub) == repr(again) and sub.num_pred <= 60 and sub.num_gt <= 60


# ------------------------------------------------------------------------------------------------
# results


def test_metrics_dict_table_and_mean() -> None:
    a = evaluate_pointclouds(_plane(8, z=0.01), _plane(8))
    b = evaluate_pointclouds(_plane(8, z=0.03), _plane(8))
    d = a.as_dict()
    assert list(d)[:11] == [
        "acc",
        "acc_med",
        "comp",
        "comp_med",
        "nc",
        "nc_med",
        "chamfer",
        "completion_ratio",
        "threshold",
        "num_pred",
        "num_gt",
    ]
    mean = mean_metrics([a, b])
    assert mean.acc == pytest.approx(0.02) and mean.num_pred == 128
    lines = format_table({"near": a, "far": b}, digits=3).splitlines()
    assert lines[0].split("|")[1].strip() == "scene" and len(lines) == 5
    assert lines[-1].startswith("| mean") and "0.020" in lines[-1]
    assert len(format_table(a, columns=["acc", "num_gt"]).splitlines()) == 3
    assert isinstance(a, ReconstructionMetrics)


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.usefixtures("without_typecheck")
@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: evaluate_pointclouds(_cloud(0, 0), _cloud(5, 0)), ValueError, "`pred` is empty"),
        (lambda: evaluate_pointclouds(_cloud(5, 0), _cloud(0, 0)), ValueError, "`gt` is empty"),
        (lambda: chamfer_distance(torch.rand(5, 2), _cloud(5, 0)), ValueError, r"`pred`.*\(5, 2\)"),
        (lambda: accuracy(_cloud(5, 0), torch.rand(2, 5, 3)), ValueError, r"`gt`.*\(2, 5, 3\)"),
        (lambda: completion([[0.0, 0.0, 0.0]], _cloud(5, 0)), TypeError, "`pred`.*torch.Tensor"),
        (
            lambda: nearest_neighbors(torch.ones(4, 3, dtype=torch.long), _cloud(3, 0)),
            TypeError,
            "`query`.*floating",
        ),
        (
            lambda: evaluate_pointclouds(_cloud(5, 0) * torch.nan, _cloud(5, 0)),
            ValueError,
            "`pred` contains 15 NaN",
        ),
        (
            lambda: evaluate_pointclouds(_cloud(5, 0), _cloud(5, 0), gt_normals=_cloud(4, 0)),
            ValueError,
            r"`gt_normals`.*\(5, 3\).*\(4, 3\)",
        ),
        (
            lambda: evaluate_pointclouds(_cloud(5, 0), _cloud(6, 0), align="sim3"),
            ValueError,
            "corresponding points",
        ),
        (
            lambda: evaluate_pointclouds(_cloud(5, 0), _cloud(5, 0), align="icp"),
            ValueError,
            "`align`",
        ),
        (
            lambda: evaluate_pointclouds(_cloud(5, 0), _cloud(5, 0), threshold=-1),
            ValueError,
            "`threshold`",
        ),
        (
            lambda: nearest_neighbors(_cloud(5, 0), _cloud(5, 0), backend="faiss"),
            ValueError,
            "`backend`",
        ),
        (lambda: knn(_cloud(5, 0), _cloud(3, 0), 4), ValueError, r"`k`.*\[1, 3\]"),
        (lambda: estimate_normals(_cloud(2, 0)), ValueError, "at least 3 points"),
        (
            lambda: evaluate_pointmaps(
                _scene()[None].repeat(2, 1, 1, 1, 1), _scene()[None].repeat(2, 1, 1, 1, 1)
            ),
            ValueError,
            "one scene",
        ),
        (lambda: evaluate_pointmaps(_scene(), _scene()[:1]), ValueError, "`gt`"),
        (
            lambda: evaluate_pointmaps(_scene(), _scene(), torch.ones(2, 12, 16)),
            TypeError,
            "`valid`.*bool",
        ),
        (
            lambda: evaluate_pointmaps(
                _scene(), _scene(), torch.zeros(2, 12, 16, dtype=torch.bool)
            ),
            ValueError,
            "no pixel",
        ),
        (lambda: evaluate_pointmaps(_scene() * torch.nan, _scene()), ValueError, "`pred"),
        (
            lambda: evaluate_pointmaps(_scene(), _scene(), conf_threshold=1.0),
            ValueError,
            "`conf_threshold` needs `conf`",
        ),
    ],
)
def test_bad_inputs_raise_clearly(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------------------
# documentation


def _docstring_examples() -> list[tuple[str, str]]:
    import inspect
    import re
    import textwrap

    import spatialmem.metrics as metrics

    fence = re.compile(r"```python\n(.*?)```", re.S)
    out = []
    for name in ["__module__", *metrics.__all__]:
        obj = metrics if name == "__module__" else getattr(metrics, name)
        doc = inspect.getdoc(obj) or ""
        out += [(name, textwrap.dedent(code)) for code in fence.findall(doc)]
    return out


EXAMPLES = _docstring_examples()


@pytest.mark.usefixtures("without_typecheck")
@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_docstring_examples_run(name: str, code: str) -> None:
    exec(compile(code, f"<docstring of {name}>", "exec"), {})


# --------------------------------------------------------------------------- registration error
def _posed_frames(t: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """World points of ``t`` 4x5 frames and their camera-to-world poses (moving camera)."""
    g = torch.Generator().manual_seed(0)
    world = torch.rand(1, t, 4, 5, 3, generator=g) * 4
    poses = torch.stack(
        [
            rigid(
                torch.linalg.matrix_exp(
                    torch.tensor([[0.0, -0.3 * i, 0], [0.3 * i, 0, 0], [0, 0, 0]])
                ),
                torch.tensor([0.5 * i, 0.0, 0.2 * i]),
            )
            for i in range(t)
        ]
    )[None]
    return world, poses


def test_aligned_point_error_is_zero_up_to_similarity_and_sees_misregistration() -> None:
    world, poses = _posed_frames()
    valid = torch.ones(world.shape[:-1], dtype=torch.bool)
    valid[0, 1, 0, 0] = False
    moved = transform_points(
        sim3(
            torch.tensor(2.5),
            torch.linalg.matrix_exp(torch.tensor([[0.0, 0.4, 0], [-0.4, 0, 0.1], [0, -0.1, 0]])),
            torch.tensor([1.0, -2.0, 3.0]),
        )[None],
        world,
    )
    moved[0, 1, 0, 0] = float("nan")  # an invalid pixel may hold anything
    assert aligned_point_error(moved, world, valid).item() < 1e-5
    # Every frame left in its own camera frame: no single similarity fits all of them.
    own = torch.stack([points_in_camera(world[:, i], poses[:, i]) for i in range(3)], dim=1)
    assert aligned_point_error(own, world, valid).item() > 0.02


def test_aligned_point_error_refuses_bad_input() -> None:
    world, _ = _posed_frames()
    valid = torch.ones(world.shape[:-1], dtype=torch.bool)
    # Without runtime type checking (the default) our own check names the shapes.
    with pytest.raises((ValueError, TypeCheckError), match=r"same pixels|parameters"):
        aligned_point_error(world[:, :2], world, valid)
    with pytest.raises(ValueError, match=">= 3 valid pixels"):
        aligned_point_error(world, world, torch.zeros_like(valid))
    with pytest.raises((TypeError, TypeCheckError), match=r"bool|parameters"):
        aligned_point_error(world, world, valid.float())


def test_bounding_box_diagonal_uses_only_valid_points_per_cloud() -> None:
    points = torch.tensor(
        [[[0.0, 0, 0], [3, 4, 0], [100, 100, 100]], [[1.0, 1, 1], [1, 1, 3], [0, 0, 0]]]
    )
    valid = torch.tensor([[True, True, False], [True, True, False]])
    assert torch.allclose(bounding_box_diagonal(points, valid), torch.tensor([5.0, 2.0]))
    assert torch.allclose(bounding_box_diagonal(points[0, :2]), torch.tensor(5.0))


def test_bounding_box_diagonal_refuses_bad_input() -> None:
    points = torch.rand(2, 5, 3)
    with pytest.raises((ValueError, TypeCheckError), match=r"at least one valid|parameters"):
        bounding_box_diagonal(points, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises((ValueError, TypeCheckError), match=r"must have shape|parameters"):
        bounding_box_diagonal(points, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises((TypeError, TypeCheckError), match=r"bool|parameters"):
        bounding_box_diagonal(points, torch.ones(2, 5))
    with pytest.raises((ValueError, TypeCheckError), match=r"3|parameters"):
        bounding_box_diagonal(torch.rand(5, 2))
