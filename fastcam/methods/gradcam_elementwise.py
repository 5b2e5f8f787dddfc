"""Grad-CAM element-wise (pytorch-grad-cam's `GradCAMElementWise`)."""
from __future__ import annotations

import torch
from torch import Tensor

from fastcam.methods.base import CallContext, GradientCAM
from fastcam.ops import accumulation, channel_map


class GradCAMElementWise(GradientCAM):
    r"""Grad-CAM element-wise: HiResCAM with every element-wise product ReLU'd before the channel sum.

    From [pytorch-grad-cam's GradCAMElementWise (Gildenblat et al.)](https://github.com/jacobgil/pytorch-grad-cam).

    $$ L = \sum_c \mathrm{ReLU}(g_c \odot A_c), \qquad g = \partial y^t / \partial A $$

    (non-negative already; the shared ReLU is a no-op). `eigen_smooth` projects
    $\mathrm{ReLU}(g \odot A)$ on its first principal component, as pytorch-grad-cam.

    Example:
        >>> with fastcam.GradCAMElementWise(model, "layer4") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "gradcamelementwise"

    def _get_lowres(self, ctx: CallContext) -> Tensor:
        return channel_map(torch.relu(accumulation(ctx.gradients) * ctx.activations), eigen=self.eigen_smooth)
