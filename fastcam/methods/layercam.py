"""Layer-CAM (Jiang et al., IEEE TIP 2021)."""
from __future__ import annotations

import torch
from torch import Tensor

from fastcam.methods.base import CallContext, GradientCAM
from fastcam.ops import accumulation, channel_map


class LayerCAM(GradientCAM):
    r"""Layer-CAM: every activation weighted by its own positive gradient (no spatial averaging).

    From [Jiang et al., LayerCAM, IEEE TIP 2021](https://doi.org/10.1109/TIP.2021.3089943).

    $$ L = \mathrm{ReLU}\Big(\sum_c \mathrm{ReLU}(g_c) \odot A_c\Big), \qquad g = \partial y^t / \partial A $$

    As torchcam's and pytorch-grad-cam's `LayerCAM`; `eigen_smooth` takes the first principal component of
    $\mathrm{ReLU}(g) \odot A$ instead of the channel sum. (torchcam fuses several layers' Layer-CAMs after
    $\tanh(2L)$ scaling, the paper's eq. 9; fastcam fuses every method's layers as pytorch-grad-cam does,
    see `BaseCAM._fuse`.)

    Example:
        >>> with fastcam.LayerCAM(model, ["layer3", "layer4"]) as cam:  # several layers, fused
        ...     maps = cam(images)
    """

    name = "layercam"

    def _get_lowres(self, ctx: CallContext) -> Tensor:
        return channel_map(torch.relu(accumulation(ctx.gradients)) * ctx.activations, eigen=self.eigen_smooth)
