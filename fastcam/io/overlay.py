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
    """Relative PNG path of a sample's overlay/input image, one-to-one with the sample ids.

    A path id gets ".png" appended to its whole name ("a/x.jpg" -> "a/x.jpg.png", "x.png" -> "x.png.png"),
    so two different ids never share a file ("x.jpg" and "x.jpg.png" write "x.jpg.png" and
    "x.jpg.png.png"); a dataset index is "000042.png". Every name ends in ".png", so other files of an
    overlay folder (`OVERLAY_INFO`) cannot collide with one. Runs written before this naming used
    `legacy_output_name`; readers fall back to it (`find_output`).
    """
    if isinstance(sample_id, (int, np.integer)):
        return f"{int(sample_id):06d}.png"
    return str(sample_id) + ".png"


def legacy_output_name(sample_id: Any) -> str:
    """The name fastcam 0.1 runs used: the id itself when it ended in .png (not one-to-one: "x.jpg" and
    "x.jpg.png" shared "x.jpg.png"). Read only, for runs written before `output_name`."""
    if isinstance(sample_id, (int, np.integer)):
        return f"{int(sample_id):06d}.png"
    name = str(sample_id)
    return name if name.lower().endswith(".png") else name + ".png"


def find_output(folder: str | Path, sample_id: Any) -> Path | None:
    """The PNG of `sample_id` under `folder` (overlays/ or inputs/): its `output_name`, else, for a run
    written before that naming, its `legacy_output_name`; None when neither exists."""
    for name in dict.fromkeys((output_name(sample_id), legacy_output_name(sample_id))):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


#: written beside the overlay PNGs: the colormap and alpha they were drawn with (the report's colour bar)
OVERLAY_INFO = "overlay.json"


def read_overlay_info(folder: str | Path) -> dict[str, Any]:
    """{"colormap", "alpha"} of an overlay folder; the defaults ("jet", 0.5) for one written before the
    file existed or with an unreadable one."""
    import json

    info: dict[str, Any] = {"colormap": "jet", "alpha": 0.5}
    try:
        data = json.loads((Path(folder) / OVERLAY_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return info
    if isinstance(data, dict):
        if isinstance(data.get("colormap"), str):
            info["colormap"] = data["colormap"]
        if isinstance(data.get("alpha"), (int, float)) and not isinstance(data.get("alpha"), bool):
            info["alpha"] = float(data["alpha"])
    return info


def _colormap(name: str) -> Any:
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {name!r}") from None


def colormap_stops(name: str, n: int = 11) -> list[str]:
    """`n` evenly spaced colours of a matplotlib colormap as "#rrggbb", from map value 0 to 1 (the
    report's colour bar is a CSS gradient through them)."""
    if n < 2:
        raise ValueError(f"a colour bar needs at least 2 stops, got {n}")
    cmap = _colormap(name)
    rgb = np.round(np.asarray([cmap(i / (n - 1))[:3] for i in range(n)]) * 255).astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*c) for c in rgb]


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
    """Overlay PNGs of a batch under `folder`, named after the samples' ids; `OVERLAY_INFO` records the
    colormap and alpha (for the report's colour bar)."""
    paths = save_pngs(overlay_rgb(images, maps, colormap, alpha), folder, ids)
    _write_overlay_info(Path(folder), colormap, alpha)
    return paths


def _write_overlay_info(folder: Path, colormap: str, alpha: float) -> None:
    import json

    payload = {"colormap": colormap, "alpha": float(alpha)}
    path = folder / OVERLAY_INFO
    try:
        if json.loads(path.read_text(encoding="utf-8")) == payload:
            return
    except (OSError, ValueError):
        pass
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)


__all__ = ["OVERLAY_INFO", "colormap_stops", "find_output", "legacy_output_name", "output_name", "overlay_rgb",
           "read_overlay_info", "save_overlays", "save_pngs", "to_uint8"]
