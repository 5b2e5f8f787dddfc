"""Exact float64 arithmetic that reproduces the oracles bit for bit: numpy's and scikit-learn's squared
distances, IEEE square root and numpy's quantile interpolation. All on the points' device, fixed shapes.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

#: the float64 exact checks run on at most this many pairs at once (memory: 16·D bytes a pair)
SLICE = 1 << 16
SPLIT = 134217729.0  # 2^27 + 1: Veltkamp's splitter for float64


def numpy_pairwise_sum(values: Tensor) -> Tensor:
    """Sum over the last dim of a (..., n) tensor in numpy's exact order (`pairwise_sum` in numpy's loops).

    numpy adds n < 8 terms left to right; up to 128 terms it keeps 8 running partial sums over strided
    lanes, combines them as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)) and adds the tail; beyond 128 it splits
    in two halves (the first a multiple of 8) and recurses. Reproducing the order reproduces numpy's
    float64 `((x[:, None] - x[None]) ** 2).sum(-1)` bit for bit.
    """
    count = values.shape[-1]
    if count < 8:
        total = values[..., 0] if count else values.sum(-1)
        for k in range(1, count):
            total = total + values[..., k]
        return total
    if count <= 128:
        body = count - count % 8
        lanes = values[..., :8]
        for first in range(8, body, 8):
            lanes = lanes + values[..., first : first + 8]
        r = lanes.unbind(-1)
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for k in range(body, count):
            total = total + values[..., k]
        return total
    half = count // 2
    half -= half % 8
    return numpy_pairwise_sum(values[..., :half]) + numpy_pairwise_sum(values[..., half:])


def _sliced(function: Callable[..., Tensor], points: Tensor, problem: Tensor, first: Tensor, second: Tensor,
            with_index: bool = False) -> Tensor:
    """function(points[problem, first], points[problem, second] (, first, second)) for (b, 1) problem and
    (b, K) point indices, in slices of `SLICE` pairs along K so that big candidate sets respect memory."""
    step = max(1, SLICE // max(1, first.shape[0]))
    parts = []
    for s in range(0, first.shape[1], step):
        i, j = first[:, s : s + step], second[:, s : s + step]
        extra = (i, j) if with_index else ()
        parts.append(function(points[problem, i], points[problem, j], *extra))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)


def squared_distance_like_numpy(points: Tensor, problem: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """Float64 Σ_d (x_id − x_jd)² of the pairs (problem, first, second), in numpy's summation order."""

    def numpy_order(a: Tensor, b: Tensor) -> Tensor:
        difference = a - b
        return numpy_pairwise_sum(difference * difference)

    return _sliced(numpy_order, points, problem, first, second)


def squared_distance_like_sklearn(points: Tensor, problem: Tensor, first: Tensor, second: Tensor, counts: Tensor) -> Tensor:
    """Float64 squared distances of the pairs (problem, first, second), rounded the way scikit-learn's
    DBSCAN rounds them. Callers pass each pair in one canonical order, so both rows get one verdict.

    `DBSCAN(algorithm="auto")` asks `NearestNeighbors` for a KD-tree when D <= 15 and n >= 12: its
    distance is the sequential float64 sum Σ_d (x_id − x_jd)², reproduced here term by term. Otherwise
    (D > 15 or n <= 11) it takes the brute-force path, max(0, (‖x_i‖² − 2 x_i·x_j) + ‖x_j‖²) from BLAS
    dot products and a GEMM, reproduced with the same formula and addition order. Both are exact for
    integer coordinates. For real-valued points that lie *exactly* at ε (e.g. ε taken from the pairwise
    distances themselves) scikit-learn's brute-force verdict depends on its BLAS's summation order, which
    no other library reproduces bit for bit: there the verdicts agree for most, not all, tie pairs.
    """
    dims = points.shape[-1]
    norms = (points * points).sum(-1)  # (b, N), once: gathered per pair below

    def brute(a: Tensor, b: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return (norms[problem, i] + (-2.0) * (a * b).sum(-1) + norms[problem, j]).clamp_min_(0.0)

    def tree(a: Tensor, b: Tensor, i: Tensor, j: Tensor) -> Tensor:
        total = (a[..., 0] - b[..., 0]).square()
        for d in range(1, dims):  # sequential, like the KD-tree's distance loop
            total = total + (a[..., d] - b[..., d]).square()
        return total

    if dims > 15:
        return _sliced(brute, points, problem, first, second, with_index=True)
    small = counts.gather(0, problem.reshape(-1)).view_as(problem) <= 11
    return torch.where(small, _sliced(brute, points, problem, first, second, with_index=True),
                       _sliced(tree, points, problem, first, second, with_index=True))


def _square_split(value: Tensor) -> tuple[Tensor, Tensor]:
    """value² = product + error exactly (Dekker's two-product with Veltkamp's split; no FMA needed)."""
    product = value * value
    t = value * SPLIT
    high = t - (t - value)
    low = value - high
    return product, ((high * high - product) + 2.0 * high * low) + low * low


def sqrt_correctly_rounded(x: Tensor) -> tuple[Tensor, Tensor]:
    """IEEE (correctly rounded) float64 √x for finite x >= 0, like numpy's -> (root, decided).

    torch's vectorised CPU float64 sqrt (Sleef, AVX2/AVX-512 builds) is within one ulp but off by one
    for ~0.7% of inputs (e.g. √2); CUDA's is IEEE-exact. With r = sqrt(x): the sign of x − r² (exact as
    (x − p) − e with r² = p + e, x − p exact by Sterbenz) says on which side of r √x lies; with c the
    lower of r and that neighbour and g the gap to c's successor, √x rounds up from c iff
    Δ = (x − c²) − c·g − g²/4 > 0 (x above the squared midpoint; c·g exact, g a power of two).
    d = fl(fl(x − p_c − e_c) − c·g) errs by at most 2⁻⁵²(|x − p_c| + |e_c| + |d|); where |d| is within
    that plus g²/4 of 0 (√x within ~2⁻¹⁰⁵ of a midpoint: vanishingly rare) `decided` is False and the
    caller falls back to the host's IEEE sqrt. Tiny x (subnormal squares) are scaled by 2¹⁰⁴ first, which
    commutes with IEEE rounding (√(x·2¹⁰⁴) = √x·2⁵², and √x is a normal number).
    """
    tiny = x < 2.0**-900
    x = torch.where(tiny, x * 2.0**104, x)
    root = x.sqrt()
    product, error = _square_split(root)
    below = torch.nextafter(root, x.new_zeros(()))
    low = torch.where((x - product) - error > 0, root, below)  # √x lies in [low, successor(low)]
    product, error = _square_split(low)
    gap = torch.nextafter(low, x.new_full((), float("inf"))) - low
    exact_part = x - product
    d = (exact_part - error) - low * gap
    slack = 2.0**-52 * (exact_part.abs() + error.abs() + d.abs()) + 0.25 * gap * gap
    root = torch.where(x == 0, x, torch.where(d > 0, low + gap, low))
    return torch.where(tiny, root * 2.0**-52, root), (d.abs() > slack) | (x == 0)


def numpy_lerp(low: Tensor, high: Tensor, gamma: Tensor) -> Tensor:
    """numpy's `_lerp` bit for bit: a + (b−a)·t, or b − (b−a)·(1−t) where t >= 0.5."""
    diff = high - low
    return torch.where(gamma >= 0.5, high - diff * (1 - gamma), low + diff * gamma)
