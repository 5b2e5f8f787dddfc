"""Eigen-Grad-CAM (pytorch-grad-cam's `EigenGradCAM`: Eigen-CAM of the gradient-weighted activations)."""
from __future__ import annotations

from torch import Tensor

from fastcam.methods.base import CallContext, GradientCAM
from fastcam.ops import accumulation, channel_map


class EigenGradCAM(GradientCAM):
    r"""Eigen-Grad-CAM: Eigen-CAM of $g \odot A$, $g = \partial y^t / \partial A$ (class-discriminative).

    From [pytorch-grad-cam's EigenGradCAM (Gildenblat et al.)](https://github.com/jacobgil/pytorch-grad-cam).

    $$ L = \mathrm{ReLU}\big(s\,(X - \mathbf 1\mu^\top) v_1\big), \qquad X = (g \odot A)^\top \in \mathbb R^{hw \times C} $$

    with the centring, $v_1$ and the sign convention $s$ of `fastcam.ops.eigen` (pytorch-grad-cam keeps the
    SVD's arbitrary sign).

    Example:
        >>> with fastcam.EigenGradCAM(model, "layer4") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "eigengradcam"

    is_principal_component = True

    def _get_lowres(self, ctx: CallContext) -> Tensor:
        return channel_map(accumulation(ctx.gradients) * ctx.activations, eigen=True)
