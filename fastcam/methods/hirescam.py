"""HiResCAM (Draelos & Carin, arXiv 2011.08891, 2020)."""
from __future__ import annotations

from torch import Tensor

from fastcam.methods.base import CallContext, GradientCAM
from fastcam.ops import accumulation, channel_map


class HiResCAM(GradientCAM):
    r"""HiResCAM: Grad-CAM without the spatial averaging of the gradients.

    From [Draelos & Carin, HiResCAM, arXiv 2011.08891](https://arxiv.org/abs/2011.08891).

    $$ L = \mathrm{ReLU}\Big(\sum_c g_c \odot A_c\Big), \qquad g = \partial y^t / \partial A $$

    For a model whose head is global average pooling + a linear layer, this is exactly the part of the
    score each location contributes (the paper's faithfulness guarantee; `eigen_smooth`, which projects
    $g \odot A$ on its first principal component, gives it up, as pytorch-grad-cam warns).

    Example:
        >>> with fastcam.HiResCAM(model, "layer4") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "hirescam"

    def _get_lowres(self, ctx: CallContext) -> Tensor:
        return channel_map(accumulation(ctx.gradients) * ctx.activations, eigen=self.eigen_smooth)
