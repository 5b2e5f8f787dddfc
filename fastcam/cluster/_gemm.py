"""One float32 GEMM of squared distances with a rigorous error bound, shared by every clustering step.

The points are centred on the mean of the valid points and scaled by a power of two (both in float64),
rounded to float32 (a), and one batched float32 GEMM of augmented rows gives, with no extra N² pass,

    key_ij = [−2a_i, n_i, 1] · [a_j, 1, n_j] = n_i + n_j − 2 a_i·a_j  ≈  scale²·s_ij

(n = float32 squared norms of a). With u the unit roundoff of float32 matmuls as PyTorch is configured
(IEEE 2⁻²⁴, or TF32/bf16's when allowed): the length-(D+2) dot product errs by at most
γ_{D+2}·Σ|terms| <= (D+2)·u·(2n_i + 2n_j) in any summation order (FMA or not), the norms by D·u·n, and
rounding the centred points to float32 moves s by at most 6u(n_i + n_j). So, with a factor-2 margin,

    |key_ij − scale²·s_ij| <= c·(n_i + n_j) + 2⁻¹⁰⁰,    c = 2(3D + 12)·u

(2⁻¹⁰⁰ covers subnormal flushing) for s_ij the exact squared distance or any float64 rounding of it
(scikit-learn's, numpy's), which is far closer than the bound. The bound is symmetric in (i, j), but
key_ij and key_ji are different float32 computations: two rows may see one pair differently.

Rows or columns of invalid (padding) points, and the diagonal, hold +inf: the augmented entry n_i (or n_j)
is +inf there and only ever meets the constant 1, so no inf·0 arises. An +inf key is never a neighbour and
sorts after every pair.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, NamedTuple

import torch
from torch import Tensor

TINY = 2.0 ** -100


class PairKeys(NamedTuple):
    """The float32 squared-distance keys of a chunk of problems, with what their error bound needs."""

    key: Tensor  # (b, N, N) float32 ≈ scale²·s; +inf on the diagonal and for invalid points
    norms: Tensor  # (b, N) float32 squared norms n of the scaled points (0 for invalid points)
    scale: Tensor  # (b,) float64 power of two
    coefficient: float  # c: |key_ij − scale²·s_ij| <= c·(n_i + n_j) + TINY

    @property
    def coefficient_up(self) -> float:
        """c·(1 + 2⁻²⁰): float32 arithmetic (n_i + n_j)·c_up + TINY (three roundings of at most 2⁻²⁴ each)
        then stays >= c(n_i + n_j) + TINY."""
        return self.coefficient * (1 + 2.0**-20)

    def row_bound(self) -> Tensor:
        """(b, N) float64 c·(n_i + max_j n_j) + TINY: bounds the error of every key in row i."""
        norms = self.norms.double()
        return (norms + norms.amax(1, keepdim=True)) * self.coefficient + TINY

    def threshold_bound(self, sigma: Tensor) -> Tensor:
        r"""(b, N) float64 t_i such that, for every j, key_ij < σ − t_i implies s_ij < σ and key_ij > σ + t_i
        implies s_ij > σ (σ: (b,) float64 threshold in scaled units).

        t_i = c·(n_i + min(max_j n_j, (√n_i + 2√σ)²)) + TINY. Pairs with n_j <= (√n_i + 2√σ)² have
        error <= c(n_i + n_j) <= t_i. Any other j is farther than σ and its key says so: with
        τ = √n_j − √n_i > 2√σ, the scaled distance is >= τ² up to O(u) relative terms (|a_i − a_j| >=
        |a_j| − |a_i|, plus the float32 rounding of the points and norms), so
        key_ij >= τ²(1 − 2c) − 3c·n_i − O(u)(n_i + τ²) > σ + t_i whenever n_i <= σ/(64c) and c <= 1/64
        and σ > 2⁻⁹⁰ (4σ(1 − 2c) > σ + c(3n_i + 8σ) + 3c·n_i + 2·TINY with room to spare). Rows that miss
        these conditions (an
        outlier row, TF32/bf16's large c) keep the plain row bound. Outlying points (large n) then no
        longer widen every row's band: on real activations this shrinks the band ~4-8×.
        """
        norms = self.norms.double()
        largest = norms.amax(1, keepdim=True)
        sigma = sigma.unsqueeze(1)
        reach = (norms.sqrt() + 2 * sigma.sqrt()).square()
        local = (norms <= sigma / (64 * self.coefficient)) & (sigma > 2.0**-90) & (self.coefficient <= 1 / 64)
        return (norms + torch.where(local, torch.minimum(reach, largest), largest)) * self.coefficient + TINY


def matmul_unit_roundoff(device: torch.device) -> float:
    """Unit roundoff of float32 matmuls as PyTorch is currently configured (IEEE, TF32 or bf16)."""
    precision = torch.get_float32_matmul_precision()
    tf32 = False
    if device.type == "cuda":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
            except Exception:  # pragma: no cover - API drift
                tf32 = False
    if precision == "medium":
        return 2.0 ** -8
    if precision == "high" or tf32:
        return 2.0 ** -11
    return 2.0 ** -24


@contextlib.contextmanager
def ieee_float32_matmul() -> Iterator[None]:
    """Run float32 matmuls in full IEEE precision (no TF32/bf16), restoring the caller's setting after.

    With TF32 (u = 2⁻¹¹) the error bound would send most pairs to the float64 re-check; IEEE float32
    keeps the band at a few parts per million. The setting is process-global while the block runs.
    """
    precision = torch.get_float32_matmul_precision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.set_float32_matmul_precision(precision)
            torch.backends.cuda.matmul.allow_tf32 = cuda_tf32


def pair_keys(points: Tensor, valid: Tensor) -> PairKeys:
    """(b, N, D) float64 points (invalid ones zeroed), (b, N) bool valid -> float32 GEMM keys (module doc)."""
    dims = points.shape[-1]
    weight = valid.unsqueeze(-1).to(points.dtype)
    mean = (points * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1)
    centred = (points - mean) * weight
    largest = centred.abs().amax(dim=(1, 2))
    _, exponent = torch.frexp(torch.where(largest > 0, largest, 1.0))
    scale = torch.ldexp(torch.ones_like(largest), -exponent)  # 2^-e, so every |scaled coordinate| < 1
    scaled = (centred * scale.view(-1, 1, 1)).to(torch.float32)
    norms = scaled.square().sum(-1)
    augmented = torch.where(valid, norms, float("inf")).unsqueeze(-1)
    ones = torch.ones_like(augmented)
    left = torch.cat([scaled * -2.0, augmented, ones], -1)
    right = torch.cat([scaled, ones, augmented], -1)
    with ieee_float32_matmul():
        key = torch.bmm(left, right.transpose(1, 2))
        unit = matmul_unit_roundoff(points.device)  # read inside: rigorous even if the switch failed
    key.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    return PairKeys(key, norms, scale, 2.0 * (3 * dims + 12) * unit)
