"""The result type every method returns from `explain`."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Explanation:
    """One batch of explanations, all tensors on the input's device.

    Attributes:
        maps: (B, H, W) float32 in [0, 1]: ReLU, bilinear upsampling to the input size, divided by the
            per-image max (an all-zero map stays zero); (B, D, H, W) with trilinear upsampling for volumes.
        lowres: (B, h, w) float32 at the target layer's resolution, after ReLU, not normalised ((B, d, h, w)
            for volumes; for several target layers, their fusion at the finest layer's resolution).
        logits: (B, K) the model's class scores for the batch (detached); for a target on another kind of
            output (segmentation, embeddings; see `fastcam.targets`), the (B, 1) target scores.
        targets: (B,) int64 class explained for each image; -1 where the target is not one class.
    """

    maps: Tensor
    lowres: Tensor
    logits: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.maps.shape[0]

    def to(self, *args, **kwargs) -> "Explanation":
        return Explanation(*(t.to(*args, **kwargs) for t in (self.maps, self.lowres, self.logits, self.targets)))
