"""Float32 GEMM squared distances with a rigorous error bound, shared by dbscan and pairwise_quantile.

The points are centred on the mean of the valid points and scaled by a power of two (both in float64),
then s̃_ij = n_i + n_j − 2 a_i·a_j comes from one batched float32 GEMM on the scaled points a
(n = float32 squared norms). With u the unit roundoff of float32 matmuls as PyTorch is configured
(IEEE 2⁻²⁴, or TF32/bf16's when allowed), every error source is bounded by a multiple of u·(n_i + n_j):
each length-D dot product by γ_D‖a‖‖b‖ <= D·u·(n_i + n_j)/2 (any summation order, FMA or not), each
norm by D·u·n, rounding the centred float64 points to float32 by 6u(n_i + n_j), the final additions
by a few u(n_i + n_j), and the float64 centring itself by far less. So

    |s̃_ij − scale²·s_ij| <= bound_factor · (n_i + n_j) + 2⁻¹⁰⁰,   bound_factor = 2·(2D + 16)·u

(a factor-2 margin; 2⁻¹⁰⁰ covers subnormal flushing) for s_ij the exact squared distance, or any
float64 rounding of it (scikit-learn's, numpy's), which is far closer than the bound.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import Tensor

TINY = 2.0 ** -100


class ApproxDistances(NamedTuple):
    squared: Tensor  # (b, N, N) float32, s̃ in scaled units
    norms: Tensor  # (b, N) float32, n_i of the scaled points
    scale: Tensor  # (b,) float64 power of two: s̃ ≈ scale² · s
    bound_factor: float  # |s̃ − scale²·s| <= bound_factor·(n_i + n_j) + TINY


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


def approximate_squared_distances(points: Tensor, valid: Tensor) -> ApproxDistances:
    """(b, N, D) float64 points, (b, N) bool valid -> float32 GEMM squared distances and their bound.

    Invalid points are zeroed after centring (their rows/columns are meaningless; callers mask them).
    """
    dims = points.shape[-1]
    weight = valid.to(points.dtype).unsqueeze(-1)
    mean = (points * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1)
    centred = (points - mean) * weight
    largest = centred.abs().amax(dim=(1, 2))
    _, exponent = torch.frexp(torch.where(largest > 0, largest, torch.ones_like(largest)))
    scale = torch.ldexp(torch.ones_like(largest), -exponent)  # 2^-e, so every |scaled coordinate| < 1
    scaled = (centred * scale.view(-1, 1, 1)).to(torch.float32)
    norms = scaled.square().sum(-1)
    squared = torch.baddbmm(norms.unsqueeze(2) + norms.unsqueeze(1), scaled, scaled.transpose(1, 2), alpha=-2.0)
    unit = matmul_unit_roundoff(points.device)
    return ApproxDistances(squared, norms, scale, 2.0 * (2 * dims + 16) * unit)
