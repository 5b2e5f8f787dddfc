"""Grad-CAM (Selvaraju et al., ICCV 2017)."""
from __future__ import annotations

from torch import Tensor

from fastcam.methods._combine import accumulation
from fastcam.methods.base import BaseCAM


class GradCAM(BaseCAM):
    r"""Grad-CAM: channel weights are the spatially averaged gradients of the target score.

    $$ w_{c} = \frac{1}{hw}\sum_{i,j} \frac{\partial y^{t}}{\partial A_{c}(i,j)}, \qquad
       L = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big) $$

    Example:
        >>> with fastcam.GradCAM(model, "layer4") as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    def _get_weights(self, *, images: Tensor, activations: Tensor, logits: Tensor, targets: Tensor) -> Tensor:
        grad = self._gradients(logits, activations, targets)
        return accumulation(grad).mean(dim=(2, 3))
