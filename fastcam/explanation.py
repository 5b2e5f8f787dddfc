"""The result type every method returns from `explain`."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Explanation:
    """One batch of explanations, all tensors on the input's device.

    Attributes:
        maps: (B, H, W) float32 in [0, 1]: ReLU, bilinear upsampling to the input size, divided by the
            per-image max (an all-zero map stays zero).
        lowres: (B, h, w) float32 at the target layer's resolution, after ReLU, not normalised.
        logits: (B, K) the model's class scores for the batch (detached).
        targets: (B,) int64 class explained for each image.
    """

    maps: Tensor
    lowres: Tensor
    logits: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.maps.shape[0]

    def to(self, *args, **kwargs) -> "Explanation":
        return Explanation(*(t.to(*args, **kwargs) for t in (self.maps, self.lowres, self.logits, self.targets)))
