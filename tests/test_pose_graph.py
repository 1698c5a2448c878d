"""The similarity pose graph: exact recovery from consistent correspondences, equivariance,
robustness to outliers, the fixed node, and its argument errors."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor

from conftest import random_similarity
from spatialmem.geometry import (
    PointEdges,
    edge_residuals,
    invert_sim3,
    optimize_similarities,
    sim3,
    skew,
    transform_points,
    trimmed_umeyama,
)


def _rotation(w: Tensor) -> Tensor:
    return torch.linalg.matrix_exp(skew(w))


def _graph(
    truth: Tensor, pairs: list[tuple[int, int]], gen: torch.Generator, points: int = 64
) -> PointEdges:
    """Edges whose correspondences are world points seen exactly by both nodes."""
    ref, other, ref_pts, other_pts = [], [], [], []
    for a, b in pairs:
        world = torch.randn(1, points, 3, generator=gen) * 2
        ref_pts.append(transform_points(invert_sim3(truth[a])[None], world)[0])
        other_pts.append(transform_points(invert_sim3(truth[b])[None], world)[0])
        ref.append(a)
        other.append(b)
    return PointEdges(
        torch.tensor(ref),
        torch.tensor(other),
        torch.stack(ref_pts),
        torch.stack(other_pts),
        torch.ones(len(pairs), points),
    )


def _chain_with_loops(num: int) -> list[tuple[int, int]]:
    shortcut = [(1, num - 2)] if num - 2 > 1 else []
    return [(i, i + 1) for i in range(num - 1)] + [(num - 1, 0), *shortcut]


@given(seed=st.integers(0, 2**16), num=st.integers(3, 7))
def test_consistent_correspondences_are_recovered_from_a_perturbed_start(
    seed: int, num: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    truth = torch.stack([random_similarity(gen) for _ in range(num)])
    edges = _graph(truth, _chain_with_loops(num), gen)
    start = torch.stack([truth[0]] + [t @ random_similarity(gen, 0.1) for t in truth[1:]])
    got = optimize_similarities(start, edges)
    assert torch.equal(got[0], truth[0])  # the fixed node is untouched
    torch.testing.assert_close(got, truth, atol=2e-3, rtol=2e-3)


@given(seed=st.integers(0, 2**16))
def test_a_global_similarity_of_the_start_carries_through(seed: int) -> None:
    """Residuals in each reference node's coordinates: moving, turning or scaling the whole
    world (start poses included) moves the solution the same way. Without trimming: with it, a
    correspondence whose residual sits at its edge's quantile can fall on either side after
    rounding, and the two solves then trim different points."""
    gen = torch.Generator().manual_seed(seed)
    truth = torch.stack([random_similarity(gen) for _ in range(5)])
    edges = _graph(truth, _chain_with_loops(5), gen)
    # Noisy correspondences, so that the solution is a compromise, not the truth.
    noisy = PointEdges(
        edges.ref,
        edges.other,
        edges.ref_points + 0.05 * torch.randn(edges.ref_points.shape, generator=gen),
        edges.other_points,
        edges.weights,
    )
    start = torch.stack([truth[0]] + [t @ random_similarity(gen, 0.1) for t in truth[1:]])
    world = sim3(torch.tensor(3.0), _rotation(torch.tensor([0.3, -1.0, 0.5])), torch.ones(3))
    plain = optimize_similarities(start, noisy, trim=0.0)
    moved = optimize_similarities(world @ start, noisy, trim=0.0)
    torch.testing.assert_close(moved, world @ plain, atol=1e-3, rtol=1e-3)


def test_a_loop_spreads_the_drift_over_the_chain() -> None:
    """A chain whose last edge says the last node is where the first is: the closing error is
    shared along the chain instead of left on the last link."""
    gen = torch.Generator().manual_seed(0)
    num = 6
    # Nodes on a circle; the chain's start drifts: every link a little too short.
    angles = torch.arange(num) * (2 * torch.pi / num)
    truth = torch.stack(
        [
            sim3(torch.tensor(1.0), _rotation(torch.tensor([0.0, a, 0.0])), torch.zeros(3))
            for a in angles
        ]
    )
    edges = _graph(truth, [(i, (i + 1) % num) for i in range(num)], gen)
    drift = sim3(torch.tensor(1.0), _rotation(torch.tensor([0.0, -0.05, 0.0])), torch.zeros(3))
    start = [truth[0]]
    for _ in range(num - 1):
        start.append(start[-1] @ (invert_sim3(truth[0]) @ truth[1]) @ drift)
    got = optimize_similarities(torch.stack(start), edges)
    torch.testing.assert_close(got, truth, atol=2e-3, rtol=2e-3)


def test_trimming_ignores_a_few_wild_correspondences() -> None:
    gen = torch.Generator().manual_seed(1)
    truth = torch.stack([random_similarity(gen) for _ in range(4)])
    edges = _graph(truth, _chain_with_loops(4), gen, points=100)
    bad = edges.ref_points.clone()
    bad[:, :10] += 50.0  # 10 % of every edge far off
    wild = PointEdges(edges.ref, edges.other, bad, edges.other_points, edges.weights)
    start = torch.stack([truth[0]] + [t @ random_similarity(gen, 0.05) for t in truth[1:]])
    torch.testing.assert_close(optimize_similarities(start, wild), truth, atol=2e-3, rtol=2e-3)
    untrimmed = optimize_similarities(start, wild, trim=0.0)
    assert (untrimmed - truth).abs().max() > 0.1  # the outliers do pull a plain solve


def test_zero_weights_are_padding_and_nodes_without_edges_stay() -> None:
    gen = torch.Generator().manual_seed(2)
    truth = torch.stack([random_similarity(gen) for _ in range(4)])
    edges = _graph(truth, [(0, 1), (1, 2)], gen)
    padded = PointEdges(
        edges.ref,
        edges.other,
        torch.cat([edges.ref_points, torch.full((2, 5, 3), 1e6)], 1),
        torch.cat([edges.other_points, torch.zeros(2, 5, 3)], 1),
        torch.cat([edges.weights, torch.zeros(2, 5)], 1),
    )
    lonely = random_similarity(gen)
    start = torch.stack([truth[0], truth[1] @ random_similarity(gen, 0.05), truth[2], lonely])
    got = optimize_similarities(start, padded)
    torch.testing.assert_close(got[:3], truth[:3], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(got[3], lonely)


def test_no_edges_returns_the_start_and_fixed_picks_the_gauge() -> None:
    gen = torch.Generator().manual_seed(3)
    truth = torch.stack([random_similarity(gen) for _ in range(3)])
    empty = PointEdges(
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, 4, 3),
        torch.zeros(0, 4, 3),
        torch.zeros(0, 4),
    )
    assert torch.equal(optimize_similarities(truth, empty), truth)
    edges = _graph(truth, [(0, 1), (1, 2)], gen)
    start = torch.stack([truth[0] @ random_similarity(gen, 0.05), truth[1], truth[2]])
    got = optimize_similarities(start, edges, fixed=2)
    assert torch.equal(got[2], truth[2])
    torch.testing.assert_close(got, truth, atol=2e-3, rtol=2e-3)


def _edges(**changes: Tensor) -> PointEdges:
    fields = {
        "ref": torch.tensor([0]),
        "other": torch.tensor([1]),
        "ref_points": torch.zeros(1, 4, 3),
        "other_points": torch.zeros(1, 4, 3),
        "weights": torch.ones(1, 4),
    }
    fields.update(changes)
    return PointEdges(**fields)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ref": torch.tensor([2])}, "edges.ref"),
        ({"other": torch.tensor([-1])}, "edges.other"),
        ({"other": torch.tensor([0])}, "itself"),
        ({"weights": -torch.ones(1, 4)}, "edges.weights"),
        ({"weights": torch.ones(1, 3)}, "edges.weights"),
        ({"other_points": torch.zeros(1, 4, 2)}, "edges.other_points"),
        ({"ref": torch.tensor([0.0])}, "edges.ref"),
        ({"ref_points": torch.full((1, 4, 3), float("nan"))}, "edges.ref_points"),
        ({"other_points": torch.full((1, 4, 3), float("inf"))}, "edges.other_points"),
    ],
)
@pytest.mark.usefixtures("without_typecheck")
def test_bad_edges_are_named(changes: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        optimize_similarities(torch.eye(4).expand(2, 4, 4), _edges(**changes))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poses": torch.zeros(2, 3, 4)}, "poses"),
        ({"poses": torch.full((2, 4, 4), float("nan"))}, "poses"),
        ({"fixed": 2}, "fixed"),
        ({"fixed": True}, "fixed"),
        ({"trim": 1.0}, "trim"),
        ({"rounds": 0}, "rounds"),
        ({"iterations": 0}, "iterations"),
    ],
)
@pytest.mark.usefixtures("without_typecheck")
def test_bad_settings_are_named(kwargs: dict, match: str) -> None:
    args = {"poses": torch.eye(4).expand(2, 4, 4).clone(), "edges": _edges()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        optimize_similarities(**args)


@pytest.mark.usefixtures("without_typecheck")
def test_edge_residuals_are_what_the_solve_minimises_and_check_their_arguments() -> None:
    gen = torch.Generator().manual_seed(4)
    truth = torch.stack([random_similarity(gen) for _ in range(3)])
    edges = _graph(truth, [(0, 1), (1, 2)], gen)
    torch.testing.assert_close(
        edge_residuals(truth, edges), torch.zeros(2, 64, 3), atol=1e-4, rtol=0
    )
    with pytest.raises(ValueError, match=r"edges\.ref"):
        edge_residuals(truth[:1], edges)
    with pytest.raises(ValueError, match="poses"):
        edge_residuals(truth[:, :3], edges)


@pytest.mark.usefixtures("without_typecheck")
def test_skew_and_trimmed_umeyama_name_their_bad_arguments() -> None:
    with pytest.raises(ValueError, match="vectors"):
        skew(torch.zeros(2, 4))
    points = torch.randn(1, 10, 3)
    with pytest.raises(ValueError, match="trim"):
        trimmed_umeyama(points, points, torch.ones(1, 10), 1.0)
    with pytest.raises(ValueError, match="rounds"):
        trimmed_umeyama(points, points, torch.ones(1, 10), 0.3, rounds=-1)
    u = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[-0.5, 0.25, 2.0]])
    torch.testing.assert_close((skew(v) @ u[..., None])[..., 0], torch.linalg.cross(v, u))
