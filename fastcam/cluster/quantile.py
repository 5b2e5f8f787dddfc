"""Batched quantile of pairwise distances (CF-CAM's eps rule), exact in float64."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastcam.cluster._gemm import approximate_squared_distances
from fastcam.cluster._inputs import ArrayLike, check_points, check_quantile, chunks, memory_budget


def numpy_pairwise_sum(values: Tensor) -> Tensor:
    """Sum over the last dim of a (K, n) tensor in numpy's exact order (`pairwise_sum` in numpy's loops).

    numpy adds n < 8 terms left to right; up to 128 terms it keeps 8 running partial sums over strided
    lanes, combines them as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) and adds the tail; beyond 128 it splits
    in two halves (the first a multiple of 8) and recurses. Reproducing the order reproduces numpy's
    float64 `((x[:, None] - x[None]) ** 2).sum(-1)` bit for bit.
    """
    count = values.shape[-1]
    if count < 8:
        total = torch.zeros(values.shape[:-1], dtype=values.dtype, device=values.device)
        for k in range(count):
            total = total + values[..., k]
        return total
    if count <= 128:
        body = count - count % 8
        lanes = values[..., :8].clone()
        for first in range(8, body, 8):
            lanes += values[..., first : first + 8]
        r = lanes.unbind(-1)
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for k in range(body, count):
            total = total + values[..., k]
        return total
    half = count // 2
    half -= half % 8
    return numpy_pairwise_sum(values[..., :half]) + numpy_pairwise_sum(values[..., half:])


def _to_float32_rounded(values: Tensor, toward: float) -> Tensor:
    """float64 -> float32 rounded down (toward=-inf) or up (toward=+inf), so a bracket only widens."""
    rounded = values.to(torch.float32)
    target = torch.full_like(rounded, toward)
    overshoot = rounded.double() > values if toward < 0 else rounded.double() < values
    return torch.where(overshoot, torch.nextafter(rounded, target), rounded)


def _sqrt_correctly_rounded(values: Tensor) -> Tensor:
    """IEEE (correctly rounded) float64 square root, like numpy's.

    PyTorch's vectorised CPU float64 sqrt (AVX-512 builds) is off by one ulp for ~0.5% of inputs
    (e.g. sqrt(2)); CUDA's double sqrt is IEEE-exact. On the CPU the B values go through numpy.
    """
    if values.device.type == "cpu":
        return torch.from_numpy(np.sqrt(values.numpy()))
    return values.sqrt()


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
    (numpy's two-sided lerp formula). The result equals, bit for bit,
    ``numpy.quantile(np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))[~np.eye(n, dtype=bool)], q)`` on the
    float64 points: distances near the wanted ranks are summed in numpy's own order, and a float64 GEMM
    with a rigorous error bound rules out all the others (the N×N×D array is never built).
    Because d_ij = d_ji, the sorted list holds every unordered pair twice, so s_k is the ⌊k/2⌋-th smallest
    upper-triangle distance.

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
    # per problem: the float32 (N, N) GEMM result, its upper triangle, kthvalue's working copy, masks
    per_problem = 4 * count * count + 4 * 3 * pairs + 3 * pairs + 16 * count
    budget = memory_budget(x.device, memory_budget_bytes)
    for start, stop in chunks(batch, per_problem, budget):
        result[start:stop] = _exact_quantile(x[start:stop], mask[start:stop], rows, cols, level)
    return problem.give_back(result)


def _exact_quantile(x: Tensor, mask: Tensor, rows: Tensor, cols: Tensor, level: float) -> Tensor:
    """Order statistics of the exact distances from a float32 GEMM plus a rigorous error bound.

    s̃ (float32 GEMM, scaled units, see `fastcam.cluster._gemm`) is within T = max_i row_bound_i of
    scale²·s for numpy's float64 s. If ṽ_r is the r-th smallest s̃, the exact r-th smallest lies in
    [ṽ_r − T, ṽ_r + T]; so pairs with s̃ < ṽ_lo − 2T are certainly below both wanted ranks (they are only
    counted), pairs with s̃ > ṽ_hi + 2T certainly above, and only the pairs in between (ties and
    near-ties: a few parts per ten thousand of the pairs) get their exact s (numpy's summation order),
    are sorted, and the wanted ranks are read off after the counted ones.
    """
    batch = x.shape[0]
    device = x.device
    approx_full, row_bound, _ = approximate_squared_distances(x, mask)
    approx = approx_full.view(batch, -1)[:, rows * x.shape[1] + cols]
    del approx_full
    both = mask[:, rows] & mask[:, cols]
    approx.masked_fill_(~both, float("inf"))
    margin = row_bound.amax(1).to(torch.float64)  # T, (b,)

    valid_counts = mask.sum(1)
    n = valid_counts.to(torch.float64)
    total = n * (n - 1)  # M: ordered off-diagonal pairs
    virtual = (total - 1) * level  # numpy: (n - 1) * quantiles
    previous = torch.floor(virtual)
    gamma = virtual - previous
    at_end = virtual >= total - 1
    low_rank = (torch.where(at_end, total - 1, previous).to(torch.int64)) // 2  # both orders -> each pair twice
    high_rank = (torch.where(at_end, total - 1, previous + 1).to(torch.int64)) // 2

    # approximate order statistics: one batched kthvalue per distinct rank (one group unless ragged) ...
    approx_low = torch.empty(batch, dtype=torch.float32, device=device)
    groups, inverse = torch.unique(low_rank, return_inverse=True)
    if groups.numel() == 1:
        approx_low = torch.kthvalue(approx, int(groups[0]) + 1, dim=1).values
    else:
        for group, low in enumerate(groups.tolist()):
            members = torch.nonzero(inverse == group).squeeze(1)
            approx_low[members] = torch.kthvalue(approx[members], low + 1, dim=1).values
    # ... and the next one up without a second selection: ṽ_lo again if it is tied, else the next value
    approx_high = approx_low
    if bool((high_rank > low_rank).any()):
        at_or_below = (approx <= approx_low.unsqueeze(1)).sum(1, dtype=torch.int32)
        next_above = torch.where(approx > approx_low.unsqueeze(1), approx, float("inf")).amin(1)
        tied = at_or_below >= low_rank + 2
        approx_high = torch.where((high_rank > low_rank) & ~tied, next_above, approx_low)

    approx_low = approx_low.to(torch.float64)
    approx_high = approx_high.to(torch.float64)
    lower = _to_float32_rounded(approx_low - 2 * margin, toward=-float("inf")).unsqueeze(1)
    upper = _to_float32_rounded(approx_high + 2 * margin, toward=float("inf")).unsqueeze(1)
    below = (approx < lower).sum(1, dtype=torch.int32)  # certainly smaller than both wanted values
    problem, pair = torch.nonzero((approx >= lower) & (approx <= upper), as_tuple=True)
    del approx
    exact = numpy_pairwise_sum((x[problem, rows[pair]] - x[problem, cols[pair]]).square())
    # sort candidates by (problem, exact value): value sort, then a stable sort by problem
    exact, order = torch.sort(exact, stable=True)
    problem = problem[order]
    problem, order = torch.sort(problem, stable=True)
    exact = exact[order]
    per_problem = torch.bincount(problem, minlength=batch)
    offsets = torch.cumsum(per_problem, 0) - per_problem
    low_at = low_rank - below
    high_at = high_rank - below
    if bool(((low_at < 0) | (high_at >= per_problem)).any()):  # cannot happen if the error bound holds
        raise RuntimeError("pairwise_quantile: exact order-statistic bracket failed (please report this bug)")
    low_value = _sqrt_correctly_rounded(exact[offsets + low_at])
    high_value = _sqrt_correctly_rounded(exact[offsets + high_at])
    return _numpy_lerp(low_value, high_value, gamma)
