"""SS-CAM (Wang, Naidu et al., arXiv 2006.14255, 2020): Score-CAM with noise-smoothed masks."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fastcam.methods._smoothing import ImageNoise, check_generator
from fastcam.methods.base import OutputFn, ReshapeTransform, TargetLayers
from fastcam.methods.scorecam import ScoreCAM
from fastcam.ops import check_int, check_real


class SSCAM(ScoreCAM):
    r"""SS-CAM: Score-CAM scores averaged over noisy copies of every mask (torchcam's `SSCAM`).

    From [Wang, Naidu et al., SS-CAM, arXiv 2006.14255](https://arxiv.org/abs/2006.14255).

    $$ w = \mathrm{softmax}_c\Big(\frac1N \sum_{n=1}^N f^t\big(x \odot (M_c + \delta_{n,c})\big) - f^t(x)\Big),
       \qquad \delta_{n,c} \sim \mathcal N(0, \sigma^2)^{H \times W} $$

    with $M_c$ Score-CAM's min-max normalised, upsampled mask; the noise is drawn at the input's
    resolution, independently per sample, image and channel. torchcam's defaults: N = `num_samples` = 35,
    $\sigma$ = `std` = 2.0; torchcam scores logits (`score="logit"`), fastcam's Score-CAM family scores
    probabilities by default (see `ScoreCAM`).

    The N·B·C masked inputs of the batch are packed into forwards of `batch_size`, sample-major, and the
    noise is drawn chunk by chunk in that order. With an int seed each image has its own generator,
    seeded with seed + its index in the call (`fastcam.methods._smoothing.ImageNoise`), so an image's map
    does not depend on its batch-mates (it equals the image explained alone with seed + i). With a
    `torch.Generator` (or None) the batch draws one stream: with torch's CPU generator and H·W a multiple
    of 16, the very numbers torchcam draws (one (B, C, H, W) tensor per sample) after
    `torch.manual_seed(seed)` for a generator seeded so (for one image, an int seed gives them too).

    Args:
        num_samples: N, noisy copies of each mask.
        std: $\sigma$, the noise std (in mask units: masks lie in [0, 1]).
        generator: the noise's source: a `torch.Generator` on the images' device, an int seed (per image,
            the same noise every call) or None (torch's global RNG, as torchcam).

    The other arguments (batch_size, score, progress and `BaseCAM`'s) are `ScoreCAM`'s.

    Example:
        >>> with fastcam.SSCAM(model, "layer4", num_samples=35, generator=0) as cam:
        ...     maps = cam(images)            # (B, H, W) in [0, 1]
    """

    name = "sscam"
    zero_masks_give_zero_images = False  # a noisy zero mask is not zero

    def __init__(
        self,
        model: nn.Module,
        target_layer: TargetLayers,
        *,
        num_samples: int = 35,
        std: float = 2.0,
        generator: torch.Generator | int | None = None,
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
        self.std = check_real("std", std, low=0, low_inclusive=True)
        self.generator = check_generator(generator)

    @property
    def samples(self) -> int:
        return self.num_samples

    def _masked_inputs(self, images: Tensor, masks: Tensor, sample: Tensor, owners: Sequence[int] | None,
                       noise: ImageNoise) -> Tensor:
        assert owners is not None  # zero_masks_give_zero_images is False: the owners are given
        delta = noise.randn(owners, masks.shape[1:], masks.dtype)
        return images * (masks + self.std * delta).to(images.dtype)
