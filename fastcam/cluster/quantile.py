"""Batched quantile of pairwise distances (CF-CAM's eps rule), exact in float64."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fastcam.cluster._inputs import ArrayLike, check_points, check_quantile, chunks, memory_budget


def squared_distances_exact(points: Tensor, row_block: int | None = None) -> Tensor:
    """(B, N, D) float64 -> (B, N, N) float64 squared distances Σ_d (x_id − x_jd)², by direct differences.

    Direct differences (not ‖x‖² + ‖y‖² − 2x·y) so there is no cancellation: the result is the
    correctly-rounded-per-operation float64 value, exact for integer coordinates. Rows are processed in
    blocks so the (B, rows, N, D) difference tensor stays small; the N×N×D array is never built whole.
    """
    batch, count, dims = points.shape
    out = torch.empty(batch, count, count, dtype=torch.float64, device=points.device)
    if row_block is None:
        # ~64 MiB of differences per block
        row_block = max(1, (64 << 20) // max(1, 8 * batch * count * dims))
    for start in range(0, count, row_block):
        stop = min(count, start + row_block)
        diff = points[:, start:stop, None, :] - points[:, None, :, :]
        out[:, start:stop] = diff.square_().sum(-1)
    return out


def _numpy_lerp(low: Tensor, high: Tensor, gamma: Tensor) -> Tensor:
    """numpy's `_lerp` bit for bit: a + (b−a)·t, or b − (b−a)·(1−t) where t >= 0.5."""
    diff = high - low
    return torch.where(gamma >= 0.5, high - diff * (1 - gamma), low + diff * gamma)


def pairwise_quantile(
    points: ArrayLike, q: float, valid: ArrayLike | None = None, *, memory_budget_bytes: int | None = None
) -> Any:
    r"""q-quantile of the off-diagonal pairwise Euclidean distances of each problem.

    For a problem with n valid points, the n(n−1) off-diagonal distances d_ij (i ≠ j, both orders, as in
    the explicit N×N matrix) are sorted ascending into s_0 <= ... <= s_{M−1}; with numpy's default
    "linear" method, v = (M−1)·q, k = ⌊v⌋, γ = v − k and the answer is s_k + (s_{k+1} − s_k)·γ
    (numpy's two-sided lerp formula, so results match ``numpy.quantile(D[~eye], q)`` to the last bit
    whenever the distances themselves agree; they are computed in float64 from direct differences).
    Because d_ij = d_ji, the sorted list holds every unordered pair twice, so s_k is the ⌊k/2⌋-th smallest
    upper-triangle distance; only the upper triangle is sorted.

    Args:
        points: (B, N, D) or (N, D) tensor or numpy array (float32 inputs are widened exactly to float64).
        q: quantile level in [0, 1] (a percentile p is q = p / 100).
        valid: optional (B, N) bool mask for ragged batches; only valid points are used.
        memory_budget_bytes: cap on per-chunk temporaries (default: see `memory_budget`).

    Returns:
        (B,) float64 on the points' device (torch in -> torch out, numpy in -> numpy out);
        a 0-d value for a single (N, D) problem.

    Raises:
        ValueError: a problem with fewer than 2 valid points (no pairs), NaN/Inf points, q outside [0, 1].
    """
    level = check_quantile(q)
    problem = check_points(points, valid)
    x, mask = problem.points, problem.valid
    batch, count, _ = x.shape
    counts = mask.sum(1)
    if batch and bool((counts < 2).any()):
        first = int(torch.nonzero(counts < 2)[0, 0])
        raise ValueError(
            f"pairwise_quantile needs at least 2 valid points per problem; problem {first} has {int(counts[first])}"
        )
    rows, cols = torch.triu_indices(count, count, 1, device=x.device)
    pairs = rows.numel()
    result = torch.empty(batch, dtype=torch.float64, device=x.device)
    # per problem: the (N, N) float64 matrix, its upper triangle, and the sort's copy + indices
    per_problem = 8 * count * count + 8 * 3 * pairs + 8 * count * count // 4
    budget = memory_budget(x.device, memory_budget_bytes)
    for start, stop in chunks(batch, per_problem, budget):
        sq = squared_distances_exact(x[start:stop])
        both = mask[start:stop, rows] & mask[start:stop, cols]
        upper = torch.where(both, sq[:, rows, cols], torch.full((), float("inf"), dtype=torch.float64, device=x.device))
        del sq
        upper, _ = torch.sort(upper, dim=1)
        n = counts[start:stop].to(torch.float64)
        total = n * (n - 1)  # M: ordered off-diagonal pairs
        virtual = (total - 1) * level
        previous = torch.floor(virtual)
        gamma = virtual - previous
        at_end = virtual >= total - 1
        low_rank = torch.where(at_end, total - 1, previous).to(torch.int64)
        high_rank = torch.where(at_end, total - 1, previous + 1).to(torch.int64)
        low = upper.gather(1, (low_rank // 2).unsqueeze(1)).squeeze(1).sqrt()
        high = upper.gather(1, (high_rank // 2).unsqueeze(1)).squeeze(1).sqrt()
        result[start:stop] = _numpy_lerp(low, high, gamma)
    return problem.give_back(result)
