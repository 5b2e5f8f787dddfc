"""Grad-CAM++ (Chattopadhay et al., WACV 2018), closed-form alphas."""
from __future__ import annotations

import torch
from torch import Tensor

from fastcam.methods._combine import accumulation
from fastcam.methods.base import BaseCAM


def gradcampp_weights(activations: Tensor, grad: Tensor) -> Tensor:
    r"""Closed-form Grad-CAM++ weights (exponential-output assumption of the paper, eq. 19):

    $$ \alpha_c(i,j) = \frac{g_c(i,j)^2}{2 g_c(i,j)^2 + \sum_{a,b} A_c(a,b)\, g_c(i,j)^3}, \qquad
       w_c = \sum_{i,j} \alpha_c(i,j)\, \mathrm{ReLU}(g_c(i,j)) $$

    with $\alpha = 0$ where the denominator vanishes (which covers g = 0). Computed in at least float32.
    (torchcam 0.5 divides a masked copy, so its alphas stay g²; pytorch-grad-cam follows this formula.)
    """
    g = accumulation(grad)
    g2 = g * g
    denom = 2 * g2 + accumulation(activations).sum(dim=(2, 3), keepdim=True) * g2 * g
    nonzero = denom != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    return (alpha * torch.relu(g)).sum(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: pixel-wise weighted positive gradients (see `gradcampp_weights`)."""

    def _get_weights(self, *, images: Tensor, activations: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        grad = self._gradients(logits, activations, targets)
        return gradcampp_weights(activations.detach(), grad)
