"""The batched torch DBSCAN backend (CPU and CUDA): every step vectorised over a chunk of problems.

Per chunk of problems (sized by a memory budget, so B·N² never sits in memory at once):

1. ε-graph. Points are centred and scaled by a power of two (exact in float64; keeps float32 in range),
   then squared distances s̃_ij = ‖x_i‖² + ‖x_j‖² − 2 x_i·x_j come from one batched float32 GEMM.
   A rigorous float32 error bound t (below) splits the pairs: s̃_ij < ε² − t are neighbours,
   s̃_ij > ε² + t are not, and the few pairs inside the band |s̃_ij − ε²| <= t are re-decided in
   float64 from the *original* coordinates as s_ij <= fl(ε·ε) — scikit-learn's own comparison (squared
   distance against ε² rounded in float64), with s_ij rounded the way scikit-learn's neighbour search
   rounds it (`_squared_distance_like_sklearn`); exact for integer coordinates.
2. Core mask: row counts of the ε-graph (the point itself included) >= min_samples.
3. Connected components of the core graph, all problems at once: labels start as the point's own
   index; each round takes the minimum label over core neighbours (a dense masked min), hooks the
   old parent to it (scatter-min) and shortcuts by pointer jumping (L <- L[L]) until nothing changes.
   Labels converge to the smallest core index of each component.
4. Border points take the smallest root among their core neighbours; roots are ranked in index
   order, which is exactly scikit-learn's numbering (clusters are started in index order, and a
   border point joins the first, i.e. lowest-numbered, cluster that reaches it).

Error bound for step 1: see `fastcam.cluster._gemm` (one augmented GEMM gives s̃ − ε² directly; the
bound is t_i = 2(3D + 12)·u·(n_i + max_j n_j) + 2(D + 4)·u·ε² per row). The band is a few parts per
million of ε² wide, so the float64 re-check touches only a tiny fraction of the pairs on real data (but
all of them on adversarial integer grids, where it is still exact).

Host syncs: two per chunk for the band pairs (`nonzero`), one or two per propagation round (convergence).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fastcam.cluster._gemm import approximate_squared_distances
from fastcam.cluster._inputs import chunks, memory_budget


def _bytes_per_problem(count: int, dims: int) -> int:
    """Peak temporaries per problem: the float32 GEMM key (4N²), three bool N² masks, int16/32 masked min."""
    return 8 * count * count + 24 * count * dims + 64 * count


def dbscan_torch(
    points: Tensor,
    valid: Tensor,
    radii: np.ndarray,
    thresholds: np.ndarray,
    *,
    memory_budget_bytes: int | None = None,
) -> Tensor:
    """(B, N, D) float64 points, (B, N) bool valid, (B,) eps, (B,) min_samples -> (B, N) int64 labels."""
    batch, count, dims = points.shape
    device = points.device
    labels = torch.empty(batch, count, dtype=torch.int64, device=device)
    eps = torch.as_tensor(radii, dtype=torch.float64).to(device)
    min_samples = torch.as_tensor(thresholds, dtype=torch.int64).to(device)
    budget = memory_budget(device, memory_budget_bytes)
    for start, stop in chunks(batch, _bytes_per_problem(count, dims), budget):
        adjacency = _epsilon_graph(points[start:stop], valid[start:stop], eps[start:stop], budget)
        labels[start:stop] = _label(adjacency, valid[start:stop], min_samples[start:stop])
        del adjacency
    return labels


def _epsilon_graph(points: Tensor, valid: Tensor, eps: Tensor, budget: int) -> Tensor:
    """(b, N, N) bool: A_ij = valid_i ∧ valid_j ∧ s_ij <= fl(ε_b²), s_ij rounded as scikit-learn rounds it."""
    eps2 = eps * eps  # float64, rounded exactly as scikit-learn rounds its radius
    key, bound, _ = approximate_squared_distances(points, valid, shift=eps2)  # key ≈ s − ε² (scaled)
    bound = bound.unsqueeze(2)  # per row, broadcast along the row without materialising N²
    adjacency = key < -bound
    band = key <= bound
    band ^= adjacency  # |key| <= bound: too close to ε to call in float32
    del key

    # band pairs (two host syncs): rows with any band pair first (a cheap byte max), then their columns;
    # each unordered pair is decided once (i < j) and mirrored, so the graph stays symmetric
    rows = torch.nonzero(band.view(torch.uint8).amax(-1))  # (R, 2): problem, i
    columns = torch.nonzero(band[rows[:, 0], rows[:, 1]])  # (K, 2): row of `rows`, j
    del band
    pairs = torch.cat([rows[columns[:, 0]], columns[:, 1:]], 1)  # (K, 3): problem, i, j
    pairs = pairs[pairs[:, 1] < pairs[:, 2]]
    if pairs.shape[0]:
        counts = valid.sum(1)
        step = max(1, budget // (32 * points.shape[-1] + 64))  # float64 re-check in slices that respect the budget
        for first in range(0, pairs.shape[0], step):
            b, i, j = pairs[first : first + step].unbind(1)
            decided = _squared_distance_like_sklearn(points, b, i, j, counts) <= eps2[b]
            adjacency[b, i, j] = decided
            adjacency[b, j, i] = decided
    # a point is always its own neighbour (distance 0 <= ε); padding is nobody's neighbour
    adjacency.diagonal(dim1=1, dim2=2).fill_(True)
    adjacency &= valid.unsqueeze(2)
    adjacency &= valid.unsqueeze(1)
    return adjacency


def _squared_distance_like_sklearn(points: Tensor, b: Tensor, i: Tensor, j: Tensor, counts: Tensor) -> Tensor:
    """Float64 squared distances of the pairs (b, i, j), rounded the way scikit-learn's DBSCAN rounds them.

    `DBSCAN(algorithm="auto")` asks `NearestNeighbors` for a KD-tree when D <= 15 and n >= 12: its
    distance is the sequential float64 sum Σ_d (x_id − x_jd)², reproduced here term by term. Otherwise
    (D > 15 or n <= 11) it takes the brute-force path, max(0, (‖x_i‖² − 2 x_i·x_j) + ‖x_j‖²) from BLAS
    dot products and a GEMM, reproduced with the same formula and addition order. Both are exact for
    integer coordinates. For real-valued points that lie *exactly* at ε (e.g. ε taken from the pairwise
    distances themselves) scikit-learn's brute-force verdict depends on its BLAS's summation order, which
    no other library reproduces bit for bit: there the verdicts agree for most, not all, tie pairs.
    """
    first, second = points[b, i], points[b, j]
    dims = points.shape[-1]
    norms_first = first.square().sum(-1)
    norms_second = second.square().sum(-1)
    brute = (norms_first + (-2.0) * (first * second).sum(-1) + norms_second).clamp_min_(0.0)
    if dims > 15:
        return brute
    tree = torch.zeros_like(brute)
    for d in range(dims):  # sequential, like the KD-tree's distance loop
        tree = tree + (first[:, d] - second[:, d]).square()
    return torch.where(counts[b] <= 11, brute, tree)


def _label(adjacency: Tensor, valid: Tensor, min_samples: Tensor) -> Tensor:
    """Core mask, connected components of the core graph, border assignment, scikit-learn numbering."""
    batch, count, _ = adjacency.shape
    device = adjacency.device
    core = (adjacency.sum(-1, dtype=torch.int32) >= min_samples.unsqueeze(1)) & valid  # (b, N)
    adjacency &= core.unsqueeze(1)  # keep only edges *to* core points: what both CC and borders need

    none = count  # sentinel label: "no core neighbour"
    # int16 labels halve the traffic of the dense masked min, the hot loop, whenever N allows
    label_dtype = torch.int16 if count < 2**15 - 1 else torch.int32
    index = torch.arange(count, dtype=label_dtype, device=device).expand(batch, count)
    parent = torch.where(core, index, torch.full_like(index, none))
    sentinel = torch.full((), none, dtype=label_dtype, device=device)
    while True:
        # smallest label among core neighbours (the point itself included when core)
        neighbour_min = torch.where(adjacency, parent.unsqueeze(1), sentinel).amin(-1)
        updated = torch.where(core, torch.minimum(parent, neighbour_min), parent)
        # hook: the old parent learns the smaller label too (index `none` lands in a discarded pad column)
        # (the (b, N) scatter runs in int32: CUDA scatter-min atomics are not guaranteed for int16)
        padded = torch.cat([updated, torch.full((batch, 1), none, dtype=label_dtype, device=device)], 1).int()
        hook_at = torch.where(core, parent, sentinel).long()
        padded.scatter_reduce_(1, hook_at, torch.where(core, neighbour_min, sentinel).int(), reduce="amin")
        updated = torch.where(core, padded[:, :count].to(label_dtype), updated)
        # shortcut: pointer jumping until every core point points at a root
        while True:
            jumped = torch.where(core, updated.gather(1, torch.where(core, updated, 0).long()), updated)
            if torch.equal(jumped, updated):
                break
            updated = jumped
        if torch.equal(updated, parent):
            break
        parent = updated

    # converged: parent = smallest core index of the component; neighbour_min (from the same labels)
    # is, for a border point, the smallest root among its core neighbours
    is_root = core & (parent == index)
    rank = torch.cumsum(is_root, dim=1, dtype=torch.int64) - 1  # clusters numbered by smallest core index
    target = torch.where(core, parent, neighbour_min)
    found = valid & (target < none)
    cluster = rank.gather(1, torch.where(found, target, 0).long())
    return torch.where(found, cluster, torch.full_like(cluster, -1))
