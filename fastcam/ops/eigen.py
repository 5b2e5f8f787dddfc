r"""Channel reductions of per-channel contribution maps: their sum, or their first principal component.

A method whose map is not a per-channel weighted sum hands its per-channel contributions
$X \in \mathbb{R}^{B \times C \times \text{spatial}}$ (e.g. $g \odot A$ for HiResCAM) to `channel_map`,
which returns $\mathrm{ReLU}(\sum_c X_c)$, or with ``eigen=True`` the ReLU of the projection on the first
principal component (Eigen-CAM; pytorch-grad-cam's ``eigen_smooth``):

$$ \tilde X = X^\top - \mathbf{1}\mu^\top \in \mathbb{R}^{hw \times C}, \qquad
   \tilde X = U \Sigma V^\top, \qquad p = s\, \tilde X v_1, \qquad
   s = \operatorname{sign}(\mu^\top v_1) \ (+1 \text{ if } 0) $$

with $\mu$ the per-channel spatial mean. The centring and the projection are pytorch-grad-cam's
(`get_2d_projection`); a singular vector's sign is arbitrary (LAPACK's choice differs between machines,
libraries and batch sizes), and pytorch-grad-cam keeps whatever sign the SVD returns, so its map is
sometimes the other half of the projection. Here the sign is fixed: $s$ makes the *uncentred* projection
$X^\top v_1$ sum to a non-negative value, i.e. the component points along the mean activation — where the
layer is, on average, active. (The centred projection sums to zero whatever the sign, so it cannot decide.)
Computed in float64 per batch with one batched `torch.linalg.svd` (no per-image loop, no host sync).
"""
from __future__ import annotations

import torch
from torch import Tensor

from fastcam.ops._checks import check_activations


def first_component(contributions: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, *spatial) float32: the projection on the first principal component over
    channels, sign fixed as in the module docstring (not ReLU'd)."""
    check_activations(contributions, "contributions")
    batch, channels = contributions.shape[:2]
    spatial = contributions.shape[2:]
    # float64: the SVD of nearly degenerate spectra is where float32 loses the first component's direction
    x = contributions.detach().to(torch.float64).flatten(2).transpose(1, 2)  # (B, hw, C)
    x = torch.nan_to_num(x)  # pytorch-grad-cam sets NaN to 0 before its SVD; the callers check finiteness
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, C)
    centred = x - mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    v = vh[:, 0, :]  # (B, C): first right singular vector
    sign = torch.where((mean.squeeze(1) * v).sum(dim=1) < 0, -1.0, 1.0).to(v.dtype)  # (B,)
    projection = torch.bmm(centred, (v * sign[:, None]).unsqueeze(2)).squeeze(2)  # (B, hw)
    return projection.view(batch, *spatial).float()


def channel_map(contributions: Tensor, *, eigen: bool = False) -> Tensor:
    r"""$\mathrm{ReLU}(\sum_c X_c)$, or $\mathrm{ReLU}(p)$ with $p$ the first-component projection
    (`first_component`) when `eigen`: (B, C, *spatial) -> (B, *spatial) float32, summed in at least float32."""
    if eigen:
        return torch.relu(first_component(contributions))
    check_activations(contributions, "contributions")
    x = contributions.to(torch.promote_types(contributions.dtype, torch.float32))
    return torch.relu(x.sum(dim=1)).float()
