"""Input checks shared by the metrics: bad input gets a clear error naming the problem."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def check_maps(maps: object, batch: int | None = None, name: str = "maps") -> Tensor:
    """Saliency maps (B, h, w): floating, finite, matching the batch size when given."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(maps).__name__}")
    if maps.dim() != 3:
        raise ValueError(f"{name} must be (B, H, W), got shape {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {maps.dtype}")
    if batch is not None and maps.shape[0] != batch:
        raise ValueError(f"{name} has {maps.shape[0]} maps for a batch of {batch} images")
    if maps.shape[0] == 0 or maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(maps.shape)}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} contain NaN or Inf values")
    return maps


def check_masks(masks: object, batch: int) -> Tensor:
    """Ground-truth masks (B, H, W): bool, or numbers where nonzero means 'in the region'; none empty."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor of shape (B, H, W), got {type(masks).__name__}")
    if masks.dim() != 3:
        raise ValueError(f"masks must be (B, H, W), got shape {tuple(masks.shape)}")
    if masks.shape[0] != batch:
        raise ValueError(f"got {masks.shape[0]} masks for {batch} maps")
    masks = masks != 0
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"masks of images {empty} are empty: localisation metrics are undefined there "
                         "(leave those images out)")
    return masks


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear (align_corners=False) resize of (B, h, w) maps to `size`; a no-op when already that size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
