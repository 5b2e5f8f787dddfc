"""Grad-CAM (Selvaraju et al., ICCV 2017)."""
from __future__ import annotations

from torch import Tensor

from fastcam.methods.base import CallContext, GradientCAM
from fastcam.ops import accumulation


class GradCAM(GradientCAM):
    r"""Grad-CAM: channel weights are the spatially averaged gradients of the target score.

    From [Selvaraju et al., Grad-CAM, ICCV 2017](https://arxiv.org/abs/1610.02391).

    $$ w_{c} = \frac{1}{hw}\sum_{i,j} \frac{\partial y^{t}}{\partial A_{c}(i,j)}, \qquad
       L = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big) $$

    Example:
        >>> with fastcam.GradCAM(model, "layer4") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "gradcam"

    def _get_weights(self, ctx: CallContext) -> Tensor:
        return accumulation(ctx.gradients).mean(dim=ctx.spatial_dims)
