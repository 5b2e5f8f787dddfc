"""SS-CAM (Wang, Naidu et al., arXiv 2006.14255, 2020): Score-CAM with noise-smoothed masks."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from fastcam.methods._smoothing import ImageNoise, check_generator
from fastcam.methods.scorecam import ScoreCAM, check_positive_int
from fastcam.ops import check_real


class SSCAM(ScoreCAM):
    r"""SS-CAM: Score-CAM scores averaged over noisy copies of every mask (torchcam's `SSCAM`).

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
        Other arguments as for `ScoreCAM`.
    """

    name = "sscam"
    zero_masks_give_zero_images = False  # a noisy zero mask is not zero

    def __init__(self, model: nn.Module, target_layer: Any, *, num_samples: int = 35, std: float = 2.0,
                 generator: torch.Generator | int | None = None, **kwargs: Any) -> None:
        super().__init__(model, target_layer, **kwargs)
        self.num_samples = check_positive_int("num_samples", num_samples)
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
