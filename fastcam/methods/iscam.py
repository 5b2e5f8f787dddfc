"""IS-CAM (Naidu et al., arXiv 2010.03023, 2020): Score-CAM integrated along scaled masks."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fastcam.methods._smoothing import ImageNoise
from fastcam.methods.base import OutputFn, ReshapeTransform, TargetLayers
from fastcam.methods.scorecam import ScoreCAM
from fastcam.ops import check_int


def integration_coefficients(num_samples: int) -> list[float]:
    r"""torchcam's IS-CAM scale of sample i = 1..N: the running sum $k_i = \sum_{j=1}^{i} j/N = i(i+1)/(2N)$,
    accumulated in Python floats as torchcam does (so 1/N, 3/N, 6/N, ..., up to (N+1)/2 — not the
    straight path i/N of integrated gradients)."""
    coeffs, running = [], 0.0
    for i in range(num_samples):
        running += (i + 1) / num_samples
        coeffs.append(running)
    return coeffs


class ISCAM(ScoreCAM):
    r"""IS-CAM: Score-CAM scores averaged over scaled copies of every masked input (torchcam's `ISCAM`).

    From [Naidu et al., IS-CAM, arXiv 2010.03023](https://arxiv.org/abs/2010.03023).

    $$ w = \mathrm{softmax}_c\Big(\frac1N \sum_{i=1}^N f^t\big(k_i\,(x \odot M_c)\big) - f^t(x)\Big) $$

    with $M_c$ Score-CAM's mask and $k_i$ torchcam's coefficients (`integration_coefficients`; torchcam's
    default N = `num_samples` = 10). Deterministic. The N·B·C masked inputs are packed into forwards of
    `batch_size`; constant channels share one forward of the zero image, as in Score-CAM (k·0 = 0).
    torchcam scores logits (`score="logit"`); fastcam's Score-CAM family scores probabilities by default.

    Example:
        >>> with fastcam.ISCAM(model, "layer4", num_samples=10) as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "iscam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: TargetLayers,
        *,
        num_samples: int = 10,
        batch_size: int = 32,
        score: str = "probability",
        progress: bool = False,
        backend: str | None = None,
        reshape_transform: ReshapeTransform | None = None,
        output_fn: OutputFn | None = None,
        allow_train_mode: bool = False,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> None:
        super().__init__(model, target_layer, batch_size=batch_size, score=score, progress=progress, backend=backend, reshape_transform=reshape_transform,
                         output_fn=output_fn, allow_train_mode=allow_train_mode, aug_smooth=aug_smooth,
                         eigen_smooth=eigen_smooth)
        self.num_samples = check_int("num_samples", num_samples, low=1)

    @property
    def samples(self) -> int:
        return self.num_samples

    def _masked_inputs(self, images: Tensor, masks: Tensor, sample: Tensor, owners: Sequence[int] | None,
                       noise: ImageNoise) -> Tensor:
        coeffs = torch.tensor(integration_coefficients(self.num_samples), dtype=images.dtype, device=images.device)
        scale = coeffs.index_select(0, sample).view(-1, *([1] * (images.dim() - 1)))
        return scale * (images * masks.to(images.dtype))
