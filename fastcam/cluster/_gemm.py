"""Float32 GEMM squared distances with a rigorous error bound, shared by dbscan and pairwise_quantile.

The points are centred on the mean of the valid points and scaled by a power of two (both in float64),
rounded to float32 (a), and one batched float32 GEMM of augmented rows gives, with no extra N² pass,

    key_ij = [−2a_i, n_i, 1] · [a_j, 1, n_j − σ] = n_i + n_j − 2 a_i·a_j − σ  ≈  scale²·s_ij − σ

(n = float32 squared norms, σ an optional per-problem shift such as ε², in scaled units). With u the
unit roundoff of float32 matmuls as PyTorch is configured (IEEE 2⁻²⁴, or TF32/bf16's when allowed):
the length-(D+2) dot product errs by at most γ_{D+2}·Σ|terms| <= (D+2)·u·(2n_i + 2n_j + σ) in any
summation order (FMA or not), the norms by D·u·n, rounding the centred points to float32 moves s by at
most 6u(n_i + n_j), and rounding σ and n_j − σ adds 2u(n_j + σ). So, with a factor-2 margin,

    |key_ij − (scale²·s_ij − σ)| <= 2(3D + 12)·u·(n_i + n_j) + 2(D + 4)·u·σ + 2⁻¹⁰⁰ <= row_bound_i

where row_bound_i uses max_j n_j for n_j (2⁻¹⁰⁰ covers subnormal flushing), for s_ij the exact squared
distance or any float64 rounding of it (scikit-learn's, numpy's), which is far closer than the bound.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, NamedTuple

import torch
from torch import Tensor

TINY = 2.0 ** -100


class ApproxDistances(NamedTuple):
    key: Tensor  # (b, N, N) float32: scale²·s − σ, approximately
    row_bound: Tensor  # (b, N) float32: |key_ij − (scale²·s_ij − σ)| <= row_bound_i for every j
    scale: Tensor  # (b,) float64 power of two


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


def approximate_squared_distances(points: Tensor, valid: Tensor, shift: Tensor | None = None) -> ApproxDistances:
    """(b, N, D) float64 points, (b, N) bool valid, optional (b,) float64 shift in the points' units²
    -> float32 GEMM key = squared distances − shift (scaled) and a per-row error bound (module docstring).

    Invalid points are zeroed after centring (their rows/columns are meaningless; callers mask them).
    The shift is clamped at 1e30 scaled units: scaled points have |a| < 1, so s <= 4D, and no decision
    against a larger shift can change.
    """
    batch, _, dims = points.shape
    weight = valid.to(points.dtype).unsqueeze(-1)
    mean = (points * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1)
    centred = (points - mean) * weight
    largest = centred.abs().amax(dim=(1, 2))
    _, exponent = torch.frexp(torch.where(largest > 0, largest, torch.ones_like(largest)))
    scale = torch.ldexp(torch.ones_like(largest), -exponent)  # 2^-e, so every |scaled coordinate| < 1
    scaled = (centred * scale.view(-1, 1, 1)).to(torch.float32)
    norms = scaled.square().sum(-1)
    if shift is None:
        sigma = torch.zeros(batch, dtype=torch.float32, device=points.device)
    else:
        sigma = (shift * scale * scale).clamp_max(1e30).to(torch.float32)
    ones = torch.ones_like(norms).unsqueeze(-1)
    left = torch.cat([scaled * -2.0, norms.unsqueeze(-1), ones], -1)
    right = torch.cat([scaled, ones, (norms - sigma.unsqueeze(1)).unsqueeze(-1)], -1)
    with ieee_float32_matmul():
        key = torch.bmm(left, right.transpose(1, 2))
        unit = matmul_unit_roundoff(points.device)  # read inside: rigorous even if the switch failed
    row_bound = (norms + norms.amax(1, keepdim=True)) * (2.0 * (3 * dims + 12) * unit)
    row_bound += (2.0 * (dims + 4) * unit) * sigma.unsqueeze(1) + TINY
    return ApproxDistances(key, row_bound, scale)
