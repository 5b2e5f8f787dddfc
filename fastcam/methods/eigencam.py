"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020)."""
from __future__ import annotations

from torch import Tensor

from fastcam.methods.base import BaseCAM, CallContext
from fastcam.ops import channel_map


class EigenCAM(BaseCAM):
    r"""Eigen-CAM: the activations projected on their first principal component (no gradient, no target).

    From [Muhammad & Yeasin, Eigen-CAM, IJCNN 2020](https://arxiv.org/abs/2008.00299).

    $$ L = \mathrm{ReLU}\big(s\,(A^\top - \mathbf 1\mu^\top) v_1\big) $$

    with $A$ as (hw, C), $\mu$ its per-channel mean, $v_1$ the first right singular vector of the
    centred matrix (pytorch-grad-cam's `get_2d_projection`) and $s$ the sign convention of
    `fastcam.ops.eigen` (the component points along the mean activation; pytorch-grad-cam keeps the SVD's
    arbitrary sign). The map does not depend on the target: `targets` only set the reported classes.
    One batched SVD for the whole batch.

    Example:
        >>> with fastcam.EigenCAM(model, "layer4") as cam:
        ...     maps = cam(images)            # no gradient, no target needed
    """

    name = "eigencam"

    is_principal_component = True

    def _get_lowres(self, ctx: CallContext) -> Tensor:
        return channel_map(ctx.activations, eigen=True)
