"""Grad-CAM++ (Chattopadhay et al., WACV 2018), closed-form alphas."""
from __future__ import annotations

import torch
from torch import Tensor

from fastcam.methods.base import CallContext, GradientCAM
from fastcam.ops import accumulation


def gradcampp_weights(activations: Tensor, grad: Tensor, samples: Tensor | None = None) -> Tensor:
    r"""Closed-form Grad-CAM++ weights (exponential-output assumption of the paper, eq. 19):

    $$ \alpha_c(i,j) = \frac{g_c(i,j)^2}{2 g_c(i,j)^2 + \sum_{a,b} A_c(a,b)\, g_c(i,j)^3}, \qquad
       w_c = \sum_{i,j} \alpha_c(i,j)\, \mathrm{ReLU}(g_c(i,j)) $$

    with $\alpha = 0$ where the denominator vanishes (which covers g = 0). Only positive gradients
    contribute, and for g ≠ 0 the fraction cancels to $\alpha = 1 / (2 + S_c\, g)$ with $S_c = \sum A_c$:
    computed that way, nothing overflows (g³ exceeds float32's range once |g| passes ~7e12), so the weights
    are finite wherever the float64 closed form is. Computed in at least float32, over any spatial rank.
    (torchcam 0.5 divides a masked copy, so its alphas stay g²; pytorch-grad-cam follows this formula.)

    With SmoothGrad `samples` (N, B, C, *spatial), Smooth Grad-CAM++ (Omeiza et al. 2019): the powers are
    averaged over the noisy copies, $\alpha = \overline{g^2} / (2\overline{g^2} + S_c\,\overline{g^3})$, and
    weight $\mathrm{ReLU}(\bar g)$ (torchcam's `SmoothGradCAMpp` weights the ReLU of the *last* copy's
    gradient instead of the mean the paper defines, and adds 1e-8 to the denominator).
    """
    g = accumulation(grad)
    spatial = tuple(range(2, g.dim()))
    total = accumulation(activations).sum(dim=spatial, keepdim=True)
    if samples is not None:
        s = accumulation(samples)
        second, third = (s * s).mean(dim=0), (s * s * s).mean(dim=0)
        denom = 2 * second + total * third
        usable = (g > 0) & (denom != 0)
        alpha = second / torch.where(usable, denom, torch.ones_like(denom))
        return torch.where(usable, alpha * g, torch.zeros_like(g)).sum(dim=spatial)
    denom = 2 + total * g
    usable = (g > 0) & (denom != 0)
    safe = torch.where(usable, denom, torch.ones_like(denom))
    return torch.where(usable, g / safe, torch.zeros_like(g)).sum(dim=spatial)


class GradCAMPlusPlus(GradientCAM):
    """Grad-CAM++: pixel-wise weighted positive gradients (see `gradcampp_weights`).

    From [Chattopadhay et al., Grad-CAM++, WACV 2018](https://arxiv.org/abs/1710.11063).

    Example:
        >>> with fastcam.GradCAMPlusPlus(model, "layer4") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "gradcampp"

    def _get_weights(self, ctx: CallContext) -> Tensor:
        return gradcampp_weights(ctx.activations, ctx.gradients, ctx.extras.get("gradient_samples"))
