"""pytorch-grad-cam's `pytorch_grad_cam.utils.image`: `show_cam_on_image`, `preprocess_image`,
`deprocess_image`, `scale_cam_image`, and `pgc_maps`, its map scaling over fastcam's maps.

pytorch-grad-cam scales maps differently from fastcam (fastcam: $U(L) / \\max U(L)$, `fastcam.ops`):
each layer's ReLU'd map is min-max scaled, $(x - \\min x) / (\\max(x - \\min x) + 10^{-7})$, at the
layer's resolution, resized to the input (OpenCV's bilinear `INTER_LINEAR`, the half-pixel grid of
torch's `align_corners=False`), averaged over the layers and min-max scaled again. `show_cam_on_image`
colours with OpenCV's JET (`opencv-python-headless`, imported when called), as pytorch-grad-cam does.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastcam.ops import upsample

__all__ = ["deprocess_image", "pgc_maps", "preprocess_image", "scale_cam_image", "show_cam_on_image"]

#: pytorch-grad-cam's stabiliser in `scale_cam_image`'s min-max scaling
MINMAX_EPS = 1e-7


def _minmax(maps: Tensor) -> Tensor:
    """Per-map $(x - \\min x) / (\\max(x - \\min x) + 10^{-7})$ of (B, ...) maps."""
    shifted = maps - maps.flatten(1).amin(dim=1).view(-1, *([1] * (maps.dim() - 1)))
    return shifted / (MINMAX_EPS + shifted.flatten(1).amax(dim=1).view(-1, *([1] * (maps.dim() - 1))))


def _resize(maps: Tensor, size: Sequence[int]) -> Tensor:
    """(B, h, w) maps resized to `size` (H, W) as OpenCV's INTER_LINEAR does; volumes as scipy's `zoom`."""
    if maps.dim() == 3:
        return upsample(maps, size)
    from scipy.ndimage import zoom

    volumes = maps.detach().cpu().numpy().astype(np.float32)
    return torch.from_numpy(np.stack([zoom(v, [t / s for s, t in zip(v.shape, size)]) for v in volumes])).to(maps.device)


def pgc_maps(lowres: Sequence[Tensor], size: Sequence[int]) -> Tensor:
    """pytorch-grad-cam's maps from each target layer's ReLU'd map: (B, *size) float32 in [0, 1].

    Args:
        lowres: per layer, the (B, h, w) (or (B, d, h, w)) non-negative map at the layer's resolution, as
            fastcam computes it (`Explanation.lowres`).
        size: the input's spatial size (H, W) (or (D, H, W)).

    Returns:
        `compute_cam_per_layer` + `aggregate_multi_layers`: each map min-max scaled and resized to `size`,
        the mean over the layers min-max scaled.
    """
    per_layer = torch.stack([_resize(_minmax(low.float()), size) for low in lowres])
    return _minmax(torch.relu(per_layer).mean(dim=0))


def scale_cam_image(cam: Any, target_size: Sequence[int] | None = None) -> np.ndarray:
    """Min-max scale each map of `cam` (N, h, w) and resize it to `target_size` = (width, height).

    Args:
        cam: maps as a numpy array (or a tensor).
        target_size: OpenCV's (width, height) order, (depth, width, height) for volumes; None keeps the size.

    Returns:
        float32 (N, height, width) maps.
    """
    maps = _minmax(torch.as_tensor(np.asarray(cam, dtype=np.float32)))
    if target_size is not None:
        maps = _resize(maps, tuple(target_size)[::-1])
    return maps.numpy().astype(np.float32)


def preprocess_image(img: np.ndarray, mean: Sequence[float] = (0.5, 0.5, 0.5),
                     std: Sequence[float] = (0.5, 0.5, 0.5)) -> Tensor:
    """An (H, W, C) image as a normalised (1, C, H, W) tensor (torchvision's ToTensor + Normalize).

    Args:
        img: uint8 (scaled to [0, 1]) or float (taken as is) numpy image.
        mean: per-channel mean subtracted.
        std: per-channel std divided by.

    Returns:
        (1, C, H, W), float32 for uint8 input, else in the array's dtype.
    """
    array = np.asarray(img).copy()
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    tensor = tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return ((tensor - mean_t) / std_t).unsqueeze(0)


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """A gradient image as a viewable uint8 image: standardised, scaled by 0.1, centred on 0.5, clipped."""
    img = img - np.mean(img)
    img = img / (np.std(img) + 1e-5)
    img = np.clip(img * 0.1 + 0.5, 0, 1)
    return np.uint8(img * 255)


def show_cam_on_image(img: np.ndarray, mask: np.ndarray, use_rgb: bool = False, colormap: int | None = None,
                      image_weight: float = 0.5) -> np.ndarray:
    """The map `mask` coloured (OpenCV's JET by default) and blended over `img`: uint8 (H, W, 3).

    Args:
        img: float32 image in [0, 1], RGB or BGR.
        mask: (H, W) map in [0, 1].
        use_rgb: colour the map in RGB (else BGR, OpenCV's order).
        colormap: an OpenCV colormap id (None: `cv2.COLORMAP_JET`).
        image_weight: the image's share; the map gets 1 - image_weight.

    Raises:
        ValueError: for an image above 1 or an image_weight outside [0, 1].
        ImportError: without OpenCV (`pip install opencv-python-headless`).
    """
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("show_cam_on_image colours with OpenCV: pip install opencv-python-headless "
                          "(fastcam's own overlays: fastcam.io.overlay)") from exc
    heatmap = cv2.applyColorMap(np.uint8(255 * mask), cv2.COLORMAP_JET if colormap is None else colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    heatmap = np.float32(heatmap) / 255
    if np.max(img) > 1:
        raise ValueError("The input image should np.float32 in the range [0, 1]")
    if image_weight < 0 or image_weight > 1:
        raise ValueError(f"image_weight should be in the range [0, 1]. Got: {image_weight}")
    cam = (1 - image_weight) * heatmap + image_weight * img
    cam = cam / np.max(cam)
    return np.uint8(255 * cam)
