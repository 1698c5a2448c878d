"""Exact nearest-neighbour search between point clouds: a SciPy k-d tree or chunked brute force.

Two backends give the same answers (up to ties between equidistant points):

* ``"kdtree"``: ``scipy.spatial.cKDTree``, ``O(M log M)`` to build and about ``O(log M)`` per
  query, on the CPU (tensors on another device are copied to the host and the results copied
  back). SciPy is an optional dependency, installed with the ``eval`` extra
  (``pip install "spatialmem[eval]"``); it is imported only when this backend runs.
* ``"torch"``: brute force in float64 with the reference cloud centred on its mean, in blocks of
  ``chunk`` query points against ``chunk`` reference points, so memory stays bounded (about
  ``8 chunk²`` bytes per block) whatever the cloud sizes; it runs on the tensors' device.
  Neighbours are ranked by ``|r|² - 2 q·r`` (one matrix product per block), then the returned
  distances are recomputed as ``|q - r|`` for the chosen pairs.
  Its cost is ``O(N M)``: fine for clouds of a few ten thousand points, slow beyond.
* ``"auto"``: the k-d tree when SciPy is installed, else the torch backend.
"""

from typing import Literal

import torch
from torch import Tensor

from spatialmem._checks import check_finite, check_tensor
from spatialmem._typing import Float, Int

__all__ = ["Backend", "NeighborIndex", "has_scipy", "knn", "nearest_neighbors"]

Backend = Literal["auto", "kdtree", "torch"]
"""Nearest-neighbour backend name: ``"auto"``, ``"kdtree"`` (SciPy) or ``"torch"``."""

_BACKENDS = ("auto", "kdtree", "torch")
_SCIPY_HINT = (
    "backend='kdtree' needs SciPy, an optional dependency of spatialmem: install the `eval` "
    "extra (pip install 'spatialmem[eval]') or scipy itself, or use backend='torch'"
)


def has_scipy() -> bool:
    """Whether ``scipy.spatial`` can be imported (what ``backend="auto"`` uses to choose)."""
    try:
        import scipy.spatial  # noqa: F401
    except ImportError:
        return False
    return True


def _ckdtree() -> type:
    try:
        from scipy.spatial import cKDTree
    except ImportError as err:
        raise ImportError(_SCIPY_HINT) from err
    return cKDTree


def _resolve_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"`backend` must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "kdtree" if has_scipy() else "torch"
    if backend == "kdtree":
        _ckdtree()  # fail early, with the hint
    return backend


def _check_cloud(name: str, x: object, dim: str) -> Tensor:
    x = check_tensor(name, x, ndim=2, floating=True, dims={-1: 3}, expected=f"{dim} 3")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: it must hold at least one point, got shape (0, 3)")
    check_finite(name, x)
    return x


def _check_chunk(chunk: int) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"`chunk` must be a positive integer, got {chunk!r}")


class NeighborIndex:
    """A search structure over a reference cloud, built once and queried many times.

    [`nearest_neighbors`][spatialmem.metrics.nearest_neighbors] and
    [`knn`][spatialmem.metrics.knn] build one per call; build it yourself to query the same
    reference repeatedly (ICP iterations, normal estimation in chunks). See the module
    description for the backends; the ``"kdtree"`` backend needs SciPy (the ``eval`` extra).

    Args:
        reference: ``[M, 3]`` points to search, finite, ``M >= 1``.
        backend: ``"auto"`` (k-d tree if SciPy is installed, else torch), ``"kdtree"`` or
            ``"torch"``.
        chunk: block size of the torch backend (queries and references per block).
        workers: threads of the k-d tree queries (``-1``: all cores).

    Raises:
        TypeError: ``reference`` is not a floating tensor.
        ValueError: ``reference`` is not ``[M, 3]``, is empty or holds NaN/Inf; unknown
            ``backend``; non-positive ``chunk``.
        ImportError: ``backend="kdtree"`` without SciPy (the message names the ``eval`` extra).
    """

    def __init__(
        self,
        reference: Float[Tensor, "M 3"],
        *,
        backend: Backend = "auto",
        chunk: int = 2048,
        workers: int = -1,
    ) -> None:
        _check_cloud("reference", reference, "M")
        _check_chunk(chunk)
        self.backend: str = _resolve_backend(backend)
        """The backend in use, ``"kdtree"`` or ``"torch"`` (``"auto"`` resolved)."""
        self.chunk = chunk
        self.workers = workers
        self.num_points: int = int(reference.shape[0])
        """``M``, the number of reference points."""
        self._device = reference.device
        if self.backend == "kdtree":
            data = reference.detach().to("cpu", torch.float64).numpy()
            self._tree = _ckdtree()(data)
        else:
            ref = reference.detach().to(torch.float64)
            self._center = ref.mean(0)
            self._ref = ref - self._center
            self._ref_sq = self._ref.square().sum(-1)

    def query(
        self, points: Float[Tensor, "N 3"], k: int = 1
    ) -> tuple[Float[Tensor, "N k"], Int[Tensor, "N k"]]:
        """The ``k`` nearest reference points of every query point.

        Args:
            points: ``[N, 3]`` query points (finite; ``N = 0`` gives empty results).
            k: neighbours per query, ``1 <= k <= M``.

        Returns:
            ``(dist [N, k], index [N, k])``: Euclidean distances in float64, sorted ascending
            per row, and the reference indices (int64), on the device of ``points``.

        Raises:
            ValueError: ``points`` not ``[N, 3]`` or not finite, or ``k`` out of range.
        """
        check_tensor("points", points, ndim=2, floating=True, dims={-1: 3}, expected="N 3")
        check_finite("points", points)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.num_points:
            raise ValueError(
                f"`k` must be an integer in [1, {self.num_points}] (the number of reference "
                f"points), got {k!r}"
            )
        n = points.shape[0]
        if n == 0:
            empty = torch.empty(0, k, device=points.device)
            return empty.double(), empty.long()
        if self.backend == "kdtree":
            return self._query_kdtree(points, k)
        return self._query_torch(points, k)

    def _query_kdtree(self, points: Tensor, k: int) -> tuple[Tensor, Tensor]:
        query = points.detach().to("cpu", torch.float64).numpy()
        dist, idx = self._tree.query(query, k=k, workers=self.workers)
        dist_t = torch.as_tensor(dist, dtype=torch.float64).reshape(-1, k)
        idx_t = torch.as_tensor(idx, dtype=torch.int64).reshape(-1, k)
        return dist_t.to(points.device), idx_t.to(points.device)

    def _query_torch(self, points: Tensor, k: int) -> tuple[Tensor, Tensor]:
        device = points.device
        if self._ref.device != device:
            self._ref, self._ref_sq = self._ref.to(device), self._ref_sq.to(device)
            self._center = self._center.to(device)
        ref = self._ref
        # one product ranks the references: [-2q, 1] . [r, |r|^2] = |q - r|^2 - |q|^2
        ref_aug = torch.cat([ref, self._ref_sq[:, None]], dim=1)
        query = points.detach().to(device=device, dtype=torch.float64) - self._center
        q_aug = torch.cat([-2.0 * query, torch.ones_like(query[:, :1])], dim=1)
        n, m, c = query.shape[0], ref.shape[0], self.chunk
        out_d = torch.empty(n, k, dtype=torch.float64, device=device)
        out_i = torch.empty(n, k, dtype=torch.int64, device=device)
        for qs in range(0, n, c):
            q = q_aug[qs : qs + c]
            best_d = torch.empty(q.shape[0], 0, dtype=torch.float64, device=device)
            best_i = torch.empty(q.shape[0], 0, dtype=torch.int64, device=device)
            for rs in range(0, m, c):
                score = q @ ref_aug[rs : rs + c].T
                if k == 1:
                    d, i = score.min(dim=1, keepdim=True)
                else:
                    d, i = score.topk(min(k, score.shape[1]), dim=1, largest=False)
                best_d = torch.cat([best_d, d], dim=1)
                best_i = torch.cat([best_i, i + rs], dim=1)
                if best_d.shape[1] > k:
                    if k == 1:
                        best_d, sel = best_d.min(dim=1, keepdim=True)
                    else:
                        best_d, sel = best_d.topk(k, dim=1, largest=False)
                    best_i = best_i.gather(1, sel)
            # exact distances of the chosen pairs, re-sorted (the product only ranks them)
            exact = torch.linalg.vector_norm(query[qs : qs + c, None, :] - ref[best_i], dim=-1)
            if k > 1:
                exact, order = exact.sort(dim=1)
                best_i = best_i.gather(1, order)
            out_d[qs : qs + c] = exact
            out_i[qs : qs + c] = best_i
        return out_d, out_i


def knn(
    query: Float[Tensor, "N 3"],
    reference: Float[Tensor, "M 3"],
    k: int,
    *,
    backend: Backend = "auto",
    chunk: int = 2048,
    workers: int = -1,
) -> tuple[Float[Tensor, "N k"], Int[Tensor, "N k"]]:
    """The ``k`` nearest points of ``reference`` for every point of ``query``.

    Exact search; the backends (SciPy k-d tree or chunked torch brute force, see
    [`NeighborIndex`][spatialmem.metrics.NeighborIndex]) agree up to ties. The ``"kdtree"``
    backend needs SciPy (the ``eval`` extra).

    Args:
        query: ``[N, 3]`` query points.
        reference: ``[M, 3]`` points searched, ``M >= k``.
        k: neighbours per query point.
        backend: ``"auto"``, ``"kdtree"`` or ``"torch"``.
        chunk: block size of the torch backend (bounds its memory to ``O(chunk²)``).
        workers: threads of the k-d tree queries (``-1``: all cores).

    Returns:
        ``(dist [N, k], index [N, k])``: float64 distances sorted ascending per row and int64
        indices into ``reference``, on the device of ``query``.

    Raises:
        TypeError: non-floating inputs.
        ValueError: inputs not ``[*, 3]``, an empty ``reference``, NaN/Inf, ``k`` outside
            ``[1, M]``, an unknown backend.
        ImportError: ``backend="kdtree"`` without SciPy.
    """
    check_tensor("query", query, ndim=2, floating=True, dims={-1: 3}, expected="N 3")
    check_finite("query", query)
    index = NeighborIndex(reference, backend=backend, chunk=chunk, workers=workers)
    return index.query(query, k)


def nearest_neighbors(
    query: Float[Tensor, "N 3"],
    reference: Float[Tensor, "M 3"],
    *,
    backend: Backend = "auto",
    chunk: int = 2048,
    workers: int = -1,
) -> tuple[Float[Tensor, "N"], Int[Tensor, "N"]]:
    """The nearest point of ``reference`` for every point of ``query``.

    The building block of accuracy (predicted points to ground truth) and completion (ground
    truth to predicted points). The ``"kdtree"`` backend needs SciPy (the ``eval`` extra);
    ``"auto"`` falls back to the chunked torch brute force without it.

    Args:
        query: ``[N, 3]`` query points.
        reference: ``[M, 3]`` points searched (at least one).
        backend: ``"auto"``, ``"kdtree"`` or ``"torch"``.
        chunk: block size of the torch backend (bounds its memory to ``O(chunk²)``).
        workers: threads of the k-d tree queries (``-1``: all cores).

    Returns:
        ``(dist [N], index [N])``: float64 Euclidean distance to the nearest reference point and
        its int64 index, on the device of ``query``.

    Raises:
        TypeError: non-floating inputs.
        ValueError: inputs not ``[*, 3]``, an empty ``reference``, NaN/Inf, an unknown backend.
        ImportError: ``backend="kdtree"`` without SciPy.

    Example:
        ```python
        import torch
        from spatialmem.metrics import nearest_neighbors

        ref = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
        dist, idx = nearest_neighbors(torch.tensor([[0.9, 0.0, 0.0]]), ref)
        assert idx.tolist() == [1] and abs(dist.item() - 0.1) < 1e-6
        ```
    """
    dist, idx = knn(query, reference, 1, backend=backend, chunk=chunk, workers=workers)
    return dist[:, 0], idx[:, 0]
