"""XGrad-CAM (Fu et al., BMVC 2020): axiom-based Grad-CAM."""
from __future__ import annotations

from torch import Tensor

from fastcam.methods.base import CallContext, GradientCAM
from fastcam.ops import accumulation

#: added to the channel sums, as pytorch-grad-cam (torchcam adds 1e-8)
EPS = 1e-7


class XGradCAM(GradientCAM):
    r"""XGrad-CAM: gradients weighted by the activations' share of their channel's total.

    From [Fu et al., Axiom-based Grad-CAM, BMVC 2020](https://arxiv.org/abs/2008.02312).

    $$ w_c = \frac{\sum_{i,j} g_c(i,j)\, A_c(i,j)}{\sum_{i,j} A_c(i,j) + \epsilon}, \qquad
       L = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big) $$

    with $g = \partial y^t / \partial A$ and $\epsilon = 10^{-7}$ (pytorch-grad-cam; torchcam: $10^{-8}$).
    A channel whose activations sum to about zero (possible only for signed layers) gets a large weight,
    as in both peers. Runs on the fused combine path, like Grad-CAM.

    Example:
        >>> with fastcam.XGradCAM(model, "layer4") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "xgradcam"

    def _get_weights(self, ctx: CallContext) -> Tensor:
        g, a = accumulation(ctx.gradients), accumulation(ctx.activations)
        return (g * a).sum(dim=ctx.spatial_dims) / (a.sum(dim=ctx.spatial_dims) + EPS)
