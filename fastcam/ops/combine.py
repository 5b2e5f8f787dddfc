r"""The shared combine: weighted channel sum + ReLU, then upsampling and per-image max-normalisation.

$$ L_b = \mathrm{ReLU}\Big(\sum_c w_{bc} A_{bc}\Big), \qquad
   M_b = \frac{U(L_b)}{\max(\max U(L_b),\ \text{tiny})} $$

with $U$ PyTorch's bilinear (2-D maps) or trilinear (3-D volumes) upsampling, ``align_corners=False``.
These are the torch references of `fastcam.kernels.cam_combine` and `fastcam.kernels.upsample_normalize`,
and the product backend on CPU and in exported graphs.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcam.ops._checks import check_activations, check_size

_MODES = {2: "bilinear", 3: "trilinear"}


def accumulation(x: Tensor) -> Tensor:
    """`x` in its accumulation dtype: at least float32 (half inputs are promoted), float64 kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)


def weighted_sum_relu(activations: Tensor, weights: Tensor) -> Tensor:
    r"""$L_b = \mathrm{ReLU}(\sum_c w_{bc} A_{bc})$, accumulated in at least float32.

    activations: (B, C, *spatial) any float dtype; weights: (B, C) -> (B, *spatial) float32.
    """
    acts, w = accumulation(activations), accumulation(weights)
    if acts.dtype != w.dtype:  # float64 on either side: the sum in float64
        acts, w = acts.double(), w.double()
    summed = torch.bmm(w.unsqueeze(1), acts.flatten(2)).squeeze(1)  # (B, 1, C) @ (B, C, P)
    return torch.relu(summed).view(activations.shape[0], *activations.shape[2:]).float()


def upsample(lowres: Tensor, size: Sequence[int]) -> Tensor:
    """Upsampling (bilinear for (B, h, w), trilinear for (B, d, h, w); align_corners=False) of maps to
    `size`, in float32, not normalised."""
    size = check_size(size)
    if lowres.dim() - 1 != len(size):
        raise ValueError(f"lowres {tuple(lowres.shape)} and size {tuple(size)} disagree on the number of spatial dims")
    return F.interpolate(lowres.float().unsqueeze(1), size=size, mode=_MODES[len(size)], align_corners=False).squeeze(1)


def max_normalize(maps: Tensor) -> Tensor:
    """Each non-negative map (B, ...) divided by its max; an all-zero map stays zero (the max is clamped
    to the smallest normal float: no division by zero, no NaN)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / peak.view(-1, *([1] * (maps.dim() - 1)))


def upsample_normalize(lowres: Tensor, size: Sequence[int]) -> Tensor:
    """`upsample` of non-negative maps to `size`, then `max_normalize`."""
    return max_normalize(upsample(lowres, size))


def combine(activations: Tensor, weights: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Weighted sum + ReLU + upsample + normalise -> (lowres (B, *spatial), maps (B, *size)), both float32."""
    check_activations(activations)
    lowres = weighted_sum_relu(activations, weights)
    return lowres, upsample_normalize(lowres, size)
