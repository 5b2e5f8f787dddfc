"""PNG overlays: a map coloured with a matplotlib colormap, alpha-blended over its image.

`overlay = (1 - alpha * m) * image + alpha * m * colormap(m)` per pixel, with m the [0, 1] map: where
the map is zero the image shows through unchanged, where it peaks the colour covers `alpha` of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import Tensor


def output_name(sample_id: Any) -> str:
    """Relative PNG path of a sample's overlay/input image: the id itself when it is a .png path, the id
    plus ".png" otherwise (so "a.png" and "a.jpg" never collide), and "000042.png" for an index."""
    if isinstance(sample_id, (int, np.integer)):
        return f"{int(sample_id):06d}.png"
    name = str(sample_id)
    return name if name.lower().endswith(".png") else name + ".png"


def _colormap(name: str) -> Any:
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {name!r}") from None


def overlay_rgb(images: Tensor, maps: Tensor, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend (B, H, W) maps in [0, 1] over (B, C, H, W) images in [0, 1] -> (B, H, W, 3) uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if images.dim() != 4 or maps.dim() != 3 or images.shape[0] != maps.shape[0] \
            or images.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"images (B, C, H, W) and maps (B, H, W) must match, got {tuple(images.shape)} "
                         f"and {tuple(maps.shape)}")
    rgb = images.detach().float().cpu()
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    rgb = rgb.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    m = maps.detach().float().cpu().clamp(0, 1).numpy()
    colour = _colormap(colormap)(m)[..., :3]
    weight = (alpha * m)[..., None]
    blended = (1.0 - weight) * rgb + weight * colour
    return np.round(blended * 255.0).astype(np.uint8)


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W, 3) uint8 RGB for saving."""
    x = images.detach().float().cpu().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return np.round(x.permute(0, 2, 3, 1).numpy() * 255.0).astype(np.uint8)


def save_pngs(arrays: np.ndarray, folder: str | Path, ids: Sequence[Any]) -> list[Path]:
    """Save (B, H, W, 3) uint8 arrays as PNG files named after the samples' ids under `folder`."""
    from PIL import Image

    paths = []
    for array, sample_id in zip(arrays, ids):
        path = Path(folder) / output_name(sample_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        Image.fromarray(array).save(tmp, format="PNG")
        tmp.replace(path)  # never a half-written PNG after a kill
        paths.append(path)
    return paths


def save_overlays(images: Tensor, maps: Tensor, folder: str | Path, ids: Sequence[Any],
                  colormap: str = "jet", alpha: float = 0.5) -> list[Path]:
    """Overlay PNGs of a batch under `folder`, named after the samples' ids."""
    return save_pngs(overlay_rgb(images, maps, colormap, alpha), folder, ids)


__all__ = ["output_name", "overlay_rgb", "save_overlays", "save_pngs", "to_uint8"]
