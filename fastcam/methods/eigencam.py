"""Eigen-CAM (Muhammad & Yeasin, IJCNN 2020)."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from fastcam.methods.base import BaseCAM, CallContext
from fastcam.ops import channel_map


def refuse_eigen_smooth(method: str, eigen_smooth: bool) -> None:
    """Eigen methods are a principal component already: `eigen_smooth=True` is refused, not ignored."""
    if eigen_smooth:
        raise ValueError(f"{method} already projects on the first principal component; eigen_smooth does not apply")


class EigenCAM(BaseCAM):
    r"""Eigen-CAM: the activations projected on their first principal component (no gradient, no target).

    $$ L = \mathrm{ReLU}\big(s\,(A^\top - \mathbf 1\mu^\top) v_1\big) $$

    with $A$ as (hw, C), $\mu$ its per-channel mean, $v_1$ the first right singular vector of the
    centred matrix (pytorch-grad-cam's `get_2d_projection`) and $s$ the sign convention of
    `fastcam.ops.eigen` (the component points along the mean activation; pytorch-grad-cam keeps the SVD's
    arbitrary sign). The map does not depend on the target: `targets` only set the reported classes.
    One batched SVD for the whole batch.
    """

    name = "eigencam"

    def __init__(self, model: nn.Module, target_layer: Any, **kwargs: Any) -> None:
        super().__init__(model, target_layer, **kwargs)
        refuse_eigen_smooth("Eigen-CAM", self.eigen_smooth)

    def _get_lowres(self, ctx: CallContext) -> Tensor:
        return channel_map(ctx.activations, eigen=True)
