"""Localisation metrics against ground-truth masks, batched: (B, H, W) maps and masks -> (B,) values.

Maps of another resolution than the masks are bilinearly upsampled (align_corners=False) to the masks'
size first. An empty mask makes a localisation metric undefined: such images raise ValueError (leave
them out, e.g. negative images without a lesion).
"""
from __future__ import annotations

import torch
from torch import Tensor

from fastcam.metrics._checks import check_maps, check_masks, resize_maps


def _prepare(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    maps = check_maps(maps)
    masks = check_masks(masks, maps.shape[0]).to(maps.device)
    return resize_maps(maps.float(), tuple(masks.shape[-2:])), masks


def positive_part(maps: Tensor) -> Tensor:
    """S = max(L, 0) / max(max(L, 0)) per image, in [0, 1]; an all-non-positive map gives S = 0."""
    s = torch.relu(maps)
    return s / s.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(s.dtype).tiny)


def pointing_game(maps: Tensor, masks: Tensor, *, tolerance: float = 0.0) -> Tensor:
    r"""Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016).

    A hit when the map's maximum lies in the ground-truth region, or within `tolerance` pixels
    (Euclidean) of it (the paper used 15 px at 224 px; 0 by default). Among tied maxima the first in
    row-major order is the point. A map with no positive value points nowhere and counts as a miss.
    Returns (B,) float 1.0 / 0.0; the mean is the accuracy.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    maps, masks = _prepare(maps, masks)
    batch, height, width = maps.shape
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)                                               # (B,)
    if tolerance == 0:
        hit = masks.flatten(1).gather(1, peak.unsqueeze(1)).squeeze(1)
    else:
        rows = torch.arange(height, device=maps.device).view(1, -1, 1)
        cols = torch.arange(width, device=maps.device).view(1, 1, -1)
        d2 = (rows - (peak // width).view(-1, 1, 1)) ** 2 + (cols - (peak % width).view(-1, 1, 1)) ** 2
        hit = (masks & (d2 <= tolerance**2)).flatten(1).any(dim=1)
    return (hit & (flat.amax(dim=1) > 0)).float()


def bounding_boxes(masks: Tensor) -> Tensor:
    """(B, H, W) non-empty masks -> (B, H, W) bool filled bounding box of each mask."""
    rows_any, cols_any = masks.any(dim=2), masks.any(dim=1)                 # (B, H), (B, W)
    rows = torch.arange(masks.shape[1], device=masks.device)
    cols = torch.arange(masks.shape[2], device=masks.device)
    big = masks.shape[1] + masks.shape[2]
    top = torch.where(rows_any, rows, big).amin(dim=1)
    bottom = torch.where(rows_any, rows, -1).amax(dim=1)
    left = torch.where(cols_any, cols, big).amin(dim=1)
    right = torch.where(cols_any, cols, -1).amax(dim=1)
    in_rows = (rows >= top[:, None]) & (rows <= bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols <= right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def energy_pointing_game(maps: Tensor, masks: Tensor, *, box: bool = True) -> Tensor:
    r"""Energy-based pointing game (Wang et al., "Score-CAM", CVPR-W 2020).

    $\text{Proportion} = \sum_{(i,j) \in R} L_{ij} \,/\, \sum_{(i,j)} L_{ij}$ with $L = \max(\text{map}, 0)$
    and $R$ the bounding box of the ground-truth mask (the paper's boxes; `box=False` uses the mask
    itself). A map with no positive energy scores 0. Returns (B,) in [0, 1].
    """
    maps, masks = _prepare(maps, masks)
    region = bounding_boxes(masks) if box else masks
    energy = torch.relu(maps)
    total = energy.sum(dim=(1, 2))
    inside = (energy * region).sum(dim=(1, 2))
    return inside / total.clamp_min(torch.finfo(total.dtype).tiny)


def activation_precision(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Activation precision (Djoumessi & Berens, SoftCAM, MIDL 2026): $\sum S M / \sum S$, (B,) in [0, 1].

    S is the positive part of the map upsampled to the mask and scaled to [0, 1] by its maximum
    (`positive_part`), M the binary mask: the share of the explanation's mass inside the annotation.
    A map with no positive value scores 0.
    """
    maps, masks = _prepare(maps, masks)
    s = positive_part(maps)
    return (s * masks).sum(dim=(1, 2)) / s.sum(dim=(1, 2)).clamp_min(torch.finfo(s.dtype).tiny)


def activation_sensitivity(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Activation sensitivity (Djoumessi & Berens, SoftCAM, MIDL 2026): $\sum S M / \sum M$, (B,) in [0, 1].

    S as in `activation_precision`: how much of the annotation the explanation covers, weighted by its
    strength there.
    """
    maps, masks = _prepare(maps, masks)
    s = positive_part(maps)
    return (s * masks).sum(dim=(1, 2)) / masks.sum(dim=(1, 2)).float()
