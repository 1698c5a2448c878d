"""A similarity pose graph over point correspondences: the global step of loop closure.

Nodes are pieces of one reconstruction, each in its own coordinates (the segments of a
segmented stream, a pair of frames predicted together), with a similarity ``T_n`` (``[4, 4]``,
node -> world) each. Edges are points seen by two nodes: the same pixels of a frame that both
predicted. [`optimize_similarities`][spatialmem.geometry.pose_graph.optimize_similarities]
moves every node but one so that the nodes agree wherever they overlap; a loop of edges (a
place seen again late in a stream) spreads the drift accumulated along the loop over all the
nodes on it instead of leaving it at the place where the loop closes.

**Residuals in the reference node's coordinates.** Edge ``e`` between nodes ``a`` (its
reference) and ``b`` measures ``T_a^-1 T_b q - p`` for the pair of points ``p`` (in ``a``'s
coordinates) and ``q`` (in ``b``'s), rather than ``T_b q - T_a p`` in world coordinates. The
world-coordinate residual scales with ``T_a``'s scale, so a least-squares solution would shrink
every node far from the fixed one; in ``a``'s own coordinates the size of a residual is the
size of the disagreement as the network predicted it, whatever the node's scale in the world.

**Why hand-rolled.** No runtime dependency of the package solves Sim(3) graphs (``scipy`` is
an optional extra, and its ``least_squares`` knows no manifolds); the problem is small (7
unknowns per node, a few hundred points per edge) and dense Levenberg-Marquardt on the normal
equations, with closed-form per-edge Jacobians, is about eighty lines.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from spatialmem._checks import check_finite, check_tensor, value_checks_enabled
from spatialmem._typing import Float, Int
from spatialmem.geometry.transforms import sim3, skew, transform_points

__all__ = ["PointEdges", "edge_residuals", "optimize_similarities"]

_PARAMS = 7  # rotation vector, translation, log scale


@dataclass(frozen=True)
class PointEdges:
    """``E`` edges of a pose graph, ``M`` corresponding points each (pad with zero weights and
    finite points).

    Edge ``e`` says that point ``ref_points[e, m]`` of node ``ref[e]`` and point
    ``other_points[e, m]`` of node ``other[e]`` are the same world point, with confidence
    ``weights[e, m]`` (``0``: padding, ignored).
    """

    ref: Int[Tensor, "E"]
    """Reference node of every edge: its residuals are measured in this node's coordinates."""
    other: Int[Tensor, "E"]
    """The other node of every edge."""
    ref_points: Float[Tensor, "E M 3"]
    """Points in the reference node's coordinates."""
    other_points: Float[Tensor, "E M 3"]
    """The same points in the other node's coordinates."""
    weights: Float[Tensor, "E M"]
    """Non-negative weight of every correspondence."""

    def check(self, num_nodes: int) -> None:
        """Raise a ``ValueError`` naming the field when the edges do not fit ``num_nodes``."""
        ref = check_tensor("edges.ref", self.ref, ndim=1, floating=False, expected="E")
        num = ref.shape[0]
        check_tensor("edges.other", self.other, ndim=1, floating=False, dims={0: num})
        pts = check_tensor(
            "edges.ref_points", self.ref_points, ndim=3, floating=True, dims={0: num, 2: 3}
        )
        shape = {0: num, 1: pts.shape[1], 2: 3}
        check_tensor("edges.other_points", self.other_points, ndim=3, floating=True, dims=shape)
        check_tensor(
            "edges.weights", self.weights, ndim=2, floating=True, dims={0: num, 1: pts.shape[1]}
        )
        if not value_checks_enabled() or num == 0:
            return
        for name, nodes in (("ref", self.ref), ("other", self.other)):
            low, high = int(nodes.min()), int(nodes.max())
            if low < 0 or high >= num_nodes:
                raise ValueError(
                    f"`edges.{name}` must index the {num_nodes} nodes, "
                    f"got values in [{low}, {high}]"
                )
        if bool((self.ref == self.other).any()):
            raise ValueError("`edges` joins a node to itself (ref == other)")
        if bool((self.weights < 0).any()) or not bool(torch.isfinite(self.weights).all()):
            raise ValueError("`edges.weights` must be finite and non-negative")
        check_finite("edges.ref_points", self.ref_points)
        check_finite("edges.other_points", self.other_points)


def _increments(x: Float[Tensor, "N 7"]) -> Float[Tensor, "N 4 4"]:
    """The similarities of steps: scale ``exp(x[:, 6])``, rotation ``exp([x[:, :3]]_x)``,
    translation ``x[:, 3:6]``."""
    return sim3(x[:, 6].exp(), torch.linalg.matrix_exp(skew(x[:, :3])), x[:, 3:6])


def _linearised(
    relative: Tensor, ref_points: Tensor, other_points: Tensor
) -> tuple[Tensor, Tensor]:
    """Residuals ``[E, M, 3]`` and their Jacobians ``[E, M, 3, 14]`` with respect to steps of
    the two nodes at zero.

    With ``y = G q`` (``G = T_a^-1 T_b``, linear part ``A``) the residual after steps is
    ``D(x_a)^-1 G D(x_b) q - p``; to first order ``D(x) u = u + w x u + t + sigma u``, so the
    Jacobian is ``[[y]_x, -I, -y]`` for ``x_a`` and ``[-A [q]_x, A, A q]`` for ``x_b``.
    """
    linear = relative[:, None, :3, :3]  # [E, 1, 3, 3]
    y = transform_points(relative, other_points)  # [E, M, 3]
    eye = torch.eye(3, dtype=y.dtype, device=y.device).expand(*y.shape[:2], 3, 3)
    jac_ref = torch.cat([skew(y), -eye, -y[..., None]], dim=-1)
    aq = linear @ other_points[..., None]  # [E, M, 3, 1]
    jac_other = torch.cat([-linear @ skew(other_points), linear.expand_as(eye), aq], dim=-1)
    return y - ref_points, torch.cat([jac_ref, jac_other], dim=-1)


def optimize_similarities(
    poses: Float[Tensor, "N 4 4"],
    edges: PointEdges,
    *,
    fixed: int = 0,
    trim: float = 0.3,
    rounds: int = 3,
    iterations: int = 15,
) -> Float[Tensor, "N 4 4"]:
    """Refine node similarities so that the nodes agree on their shared points.

    Minimises ``sum_e sum_m w_em |T_a^-1 T_b q_em - p_em|^2`` (``a = edges.ref[e]``,
    ``b = edges.other[e]``; see the module's description for why in ``a``'s coordinates) over
    every node's similarity except node ``fixed``'s, by Levenberg-Marquardt with steps
    ``T_n <- T_n D(x_n)`` (rotation vector, translation and log scale ``x_n``, so the solution
    stays a similarity). Each of ``rounds`` rounds first drops, per edge, the ``trim`` fraction
    of correspondences with the largest residuals under the current poses (badly predicted
    pixels, the far side of a wrong match), so a few bad points do not bend the graph. The
    trimmed set can change with rounding (a point at its edge's quantile), so with ``trim > 0``
    the solution is equivariant under a change of world coordinates only up to such flips;
    with ``trim=0`` it is equivariant to float precision.

    Example:
        ```python
        poses = optimize_similarities(initial, edges)   # initial [N, 4, 4]; node 0 stays
        world = transform_points(poses[n], points_of_node_n)
        ```

    Args:
        poses: ``[N, 4, 4]`` initial node -> world similarities (e.g. chained fits).
        edges: the correspondences (see [`PointEdges`][spatialmem.geometry.pose_graph.PointEdges]).
        fixed: the node whose pose is kept (it sets the world's coordinates, scale included).
        trim: fraction of each edge's correspondences left out in every round, in ``[0, 1)``.
        rounds: trimming rounds (at least 1; with ``trim=0`` one round is done).
        iterations: Levenberg-Marquardt iterations per round at most.

    Returns:
        ``[N, 4, 4]`` refined similarities, in float32 (float64 for float64 poses). A node
        without edges keeps its pose.

    Raises:
        ValueError: ``poses`` is not ``[N, 4, 4]`` or holds NaN/Inf, ``fixed`` is not a node,
            the settings are out of range, or the edges do not fit the nodes or hold NaN/Inf.
    """
    poses = check_tensor("poses", poses, ndim=3, floating=True, dims={1: 4, 2: 4}, expected="N 4 4")
    num = poses.shape[0]
    if isinstance(fixed, bool) or not isinstance(fixed, int) or not 0 <= fixed < num:
        raise ValueError(f"`fixed` must be a node index in [0, {num}), got {fixed!r}")
    if not isinstance(trim, int | float) or not 0.0 <= trim < 1.0:
        raise ValueError(f"`trim` must be a number in [0, 1), got {trim!r}")
    for name, value in (("rounds", rounds), ("iterations", iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    check_finite("poses", poses)
    edges.check(num)
    dtype = torch.float64 if poses.dtype == torch.float64 else torch.float32
    poses = poses.to(dtype).clone()
    if edges.ref.numel() == 0 or num == 1:
        return poses
    ref, other = edges.ref.to(poses.device), edges.other.to(poses.device)
    p = edges.ref_points.to(dtype)
    q = edges.other_points.to(dtype)
    base = edges.weights.to(dtype)
    free = torch.ones(num, dtype=torch.bool, device=poses.device)
    free[fixed] = False
    keep = base > 0
    for _ in range(rounds):
        if trim > 0:
            keep = _trimmed(_edge_residuals_at(poses, ref, other, p, q), base, trim)
        weights = base * keep
        poses = _levenberg_marquardt(poses, ref, other, p, q, weights, free, iterations)
        if trim <= 0:
            break
    return poses


def edge_residuals(poses: Float[Tensor, "N 4 4"], edges: PointEdges) -> Float[Tensor, "E M 3"]:
    """What every correspondence misses under ``poses``: ``T_a^-1 T_b q - p`` in the reference
    node ``a``'s coordinates (the residual that
    [`optimize_similarities`][spatialmem.geometry.pose_graph.optimize_similarities] minimises,
    before weighting).

    Args:
        poses: ``[N, 4, 4]`` node -> world similarities.
        edges: the correspondences.

    Returns:
        ``[E, M, 3]`` residuals (padding included).

    Raises:
        ValueError: ``poses`` is not ``[N, 4, 4]`` or not finite, or the edges do not fit it.
    """
    poses = check_tensor("poses", poses, ndim=3, floating=True, dims={1: 4, 2: 4}, expected="N 4 4")
    check_finite("poses", poses)
    edges.check(poses.shape[0])
    return _edge_residuals_at(poses, edges.ref, edges.other, edges.ref_points, edges.other_points)


def _edge_residuals_at(poses: Tensor, ref: Tensor, other: Tensor, p: Tensor, q: Tensor) -> Tensor:
    """``[E, M, 3]`` residuals of every edge under ``poses`` (no step)."""
    relative = torch.linalg.inv(poses[ref]) @ poses[other]
    return transform_points(relative, q) - p


def _trimmed(residuals: Tensor, weights: Tensor, trim: float) -> Tensor:
    """``[E, M]``: the correspondences of each edge at or below its ``1 - trim`` quantile of
    residual length (padding, with zero weight, is never kept)."""
    length = residuals.norm(dim=-1).masked_fill(weights <= 0, float("nan"))
    bound = torch.nanquantile(length, 1.0 - trim, dim=1, keepdim=True)
    return (length <= bound) & (weights > 0)


def _levenberg_marquardt(
    poses: Tensor,
    ref: Tensor,
    other: Tensor,
    p: Tensor,
    q: Tensor,
    weights: Tensor,
    free: Tensor,
    iterations: int,
) -> Tensor:
    """Levenberg-Marquardt on the weighted residuals of every edge, the ``free`` nodes moving;
    stops when a step no longer lowers the cost by a millionth."""
    num, device, dtype = poses.shape[0], poses.device, poses.dtype
    sqrt_w = weights.sqrt()[..., None]  # [E, M, 1]

    def cost_of(candidate: Tensor) -> Tensor:
        return (_edge_residuals_at(candidate, ref, other, p, q) * sqrt_w).square().sum()

    cost = cost_of(poses)
    damping = 1e-3
    for _ in range(iterations):
        relative = torch.linalg.inv(poses[ref]) @ poses[other]
        residual, jac = _linearised(relative, p, q)
        residual = residual * sqrt_w  # [E, M, 3]
        jac = (jac * sqrt_w[..., None]).flatten(1, 2)  # [E, 3M, 14]
        blocks = jac.transpose(1, 2) @ jac  # [E, 14, 14]
        grads = jac.transpose(1, 2) @ residual.flatten(1)[..., None]  # [E, 14, 1]
        hessian = torch.zeros(num * _PARAMS, num * _PARAMS, dtype=dtype, device=device)
        gradient = torch.zeros(num * _PARAMS, dtype=dtype, device=device)
        index = _param_index(ref, other)  # [E, 14]
        rows = index[:, :, None].expand_as(blocks)
        cols = index[:, None, :].expand_as(blocks)
        hessian.index_put_(
            (rows.reshape(-1), cols.reshape(-1)), blocks.reshape(-1), accumulate=True
        )
        gradient.index_add_(0, index.reshape(-1), grads.reshape(-1))
        mask = free.repeat_interleave(_PARAMS)
        h, g = hessian[mask][:, mask], gradient[mask]
        # A node without edges has zero rows: the tiny floor keeps the system solvable and
        # its step zero.
        diagonal = h.diagonal().clamp_min(1e-9 * float(h.diagonal().max().clamp_min(1e-30)))
        improved = False
        while damping < 1e10:
            step = torch.linalg.solve(h + torch.diag(damping * diagonal), -g)
            full = torch.zeros(num * _PARAMS, dtype=dtype, device=device)
            full[mask] = step
            candidate = poses @ _increments(full.view(num, _PARAMS))
            new_cost = cost_of(candidate)
            if bool(new_cost < cost):
                relative_gain = float((cost - new_cost) / cost.clamp_min(1e-30))
                poses, cost, damping = candidate, new_cost, max(damping / 3.0, 1e-9)
                improved = relative_gain > 1e-6
                break
            damping *= 10.0
        if not improved:
            break
    return poses


def _param_index(ref: Tensor, other: Tensor) -> Tensor:
    """``[E, 14]`` positions of the two nodes' parameters in the stacked unknowns."""
    offsets = torch.arange(_PARAMS, device=ref.device)
    return torch.cat([ref[:, None] * _PARAMS + offsets, other[:, None] * _PARAMS + offsets], 1)
