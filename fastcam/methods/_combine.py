"""The shared combine path: weighted channel sum + ReLU, then upsample and per-image max-normalise.

These are the torch reference implementations; `backend="triton"` routes the same maths to the fused
kernels in `fastcam.kernels` (see the kernels' own torch references beside them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def accumulation(x: Tensor) -> Tensor:
    """`x` in its accumulation dtype: at least float32 (half inputs are promoted), float64 kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def weighted_sum_relu(activations: Tensor, weights: Tensor) -> Tensor:
    r"""$L_b = \mathrm{ReLU}(\sum_c w_{bc} A_{bc})$, accumulated in at least float32.

    activations: (B, C, h, w) any float dtype; weights: (B, C) -> (B, h, w) float32.
    """
    return torch.relu(torch.einsum("bc,bchw->bhw", accumulation(weights), accumulation(activations))).float()


def upsample_normalize(lowres: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling (align_corners=False) of non-negative (B, h, w) maps to `size`, divided by
    each map's max. An all-zero map stays zero: the max is clamped to the smallest normal float, so
    no division by zero and no NaN.
    """
    maps = F.interpolate(lowres.float().unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
    maps = maps.squeeze(1)
    peak = maps.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / peak


def combine(activations: Tensor, weights: Tensor, size: tuple[int, int], backend: str) -> tuple[Tensor, Tensor]:
    """Weighted sum + ReLU + upsample + normalise -> (lowres (B,h,w), maps (B,H,W)), both float32."""
    if backend == "triton":
        from fastcam.kernels import cam_combine  # imported lazily: triton is optional

        return cam_combine.combine(activations, weights, size)
    lowres = weighted_sum_relu(activations, weights)
    return lowres, upsample_normalize(lowres, size)
