"""pytorch-grad-cam's `pytorch_grad_cam.utils.reshape_transforms`, as `fastcam.reshape` layouts."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from fastcam import reshape

__all__ = ["fasterrcnn_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def vit_reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """(B, 1 + height·width, C) ViT tokens -> (B, C, height, width) maps (the CLS token dropped)."""
    return reshape.vit(prefix_tokens=1, grid=(height, width))(tensor)


def swinT_reshape_transform(tensor: Tensor, height: int = 7, width: int = 7) -> Tensor:
    """(B, height·width, C) Swin tokens -> (B, C, height, width) maps."""
    return reshape.swin(grid=(height, width))(tensor)


def fasterrcnn_reshape_transform(x: Any) -> Tensor:
    """Not available: fastcam does not explain detectors (see `model_targets.FasterRCNNBoxScoreTarget`)."""
    raise NotImplementedError("fasterrcnn_reshape_transform (object detection) is not implemented in fastcam")
