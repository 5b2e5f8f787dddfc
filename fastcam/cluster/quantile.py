"""Batched quantile of pairwise distances (CF-CAM's eps rule), exact in float64."""
from __future__ import annotations

from typing import Any

from fastcam.cluster._inputs import ArrayLike, check_points, check_quantile, memory_budget


def pairwise_quantile(
    points: ArrayLike, q: float, valid: ArrayLike | None = None, *, memory_budget_bytes: int | None = None
) -> Any:
    r"""q-quantile of the off-diagonal pairwise Euclidean distances of each problem.

    For a problem with n valid points, the M = n(n−1) off-diagonal distances d_ij (i ≠ j, both orders, as
    in the explicit N×N matrix) are sorted ascending into s_0 <= ... <= s_{M−1}; with numpy's default
    "linear" method, v = (M−1)·q, k = ⌊v⌋, γ = v − k and the answer is s_k + (s_{k+1} − s_k)·γ
    (numpy's two-sided lerp formula). The result equals, bit for bit,
    ``numpy.quantile(np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[~np.eye(n, dtype=bool)], q)`` on the
    float64 points. Because d_ij = d_ji, every unordered (i < j) distance appears twice in that list.

    How (see `fastcam.cluster._torch_dbscan`): one float32 GEMM with a rigorous error bound gives every
    squared distance approximately; radix selection on a fixed sample, then on the keys of the sample's
    bracket, finds the float32 order statistics; only the pairs whose error interval meets the exact
    bracket are summed in float64 in numpy's own order. No N×N×D array, no sort of all pairs, fixed shapes
    and one host read per call (the input checks; a rare capacity overflow recomputes that problem).

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
    from fastcam.cluster._torch_dbscan import solve

    level = check_quantile(q)
    problem = check_points(points, valid)
    budget = memory_budget(problem.device, memory_budget_bytes)
    result = solve(problem, budget, level=level, caller="pairwise_quantile")
    return problem.give_back(result.eps)
