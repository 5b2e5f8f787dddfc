"""`export_spec`: export from a model spec and a weights file (what `fastcam export` runs).

The model is built and its weights loaded as `fastcam explain` does (`fastcam.models.load_model`:
safetensors, or `torch.load(weights_only=True)`; nothing read from disk is executed), the explainer made,
and `fastcam.deploy.export` checks it on seeded random example images before writing the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from fastcam.deploy.exporter import ExportInfo, export
from fastcam.methods.registry import get_method
from fastcam.models import load_model

__all__ = ["export_spec"]

DEFAULT_SIZE = (224, 224)


def _in_channels(model: nn.Module) -> int:
    """The channels the model's first convolution takes (the example images' C)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if conv is None:
        raise ValueError("the model has no convolution: cannot tell its input channels; pass in_channels")
    return int(conv.in_channels)


def export_spec(
    spec: str,
    out: str | Path,
    *,
    method: str,
    weights: str | Path | None = None,
    layer: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    size: int | Sequence[int] | None = None,
    batch: int = 2,
    format: str = "onnx",
    targets: str = "predicted",
    dtype: str = "float32",
    seed: int = 0,
) -> ExportInfo:
    """Build `spec` (+ `weights`), wrap it in `method`'s explainer and `export` it to `out`.

    Args:
        spec: a `fastcam.models` builder name, `module:factory`, or a torchvision name (when importable).
        method: "softcam" (the weights are a SoftCAM network's: the spec is converted first) or "gradcam"
            (needs `layer`); other methods are refused by `export` with the reason.
        size: the example images' H, W (an int for squares; default the spec's size, else 224).
        batch: how many example images the checks run on.
        seed: of the example images (standard normal pixels).
    Other arguments: see `fastcam.deploy.export` and `fastcam.models.load_model`.
    """
    info = get_method(method)
    if info.post_hoc and layer is None:
        raise ValueError(f"{info.display_name} needs a target layer (e.g. 'layer4' for a ResNet)")
    if not info.post_hoc and layer is not None:
        raise ValueError(f"{info.display_name} explains its own evidence maps and takes no target layer")
    model, defaults = load_model(spec, weights, num_classes=num_classes, in_channels=in_channels,
                                 softcam=method == "softcam")
    model.eval()
    explainer = info.load()(model) if not info.post_hoc else info.load()(model, layer)
    height, width = (size, size) if isinstance(size, int) else tuple(size or defaults.get("size", DEFAULT_SIZE))
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, in_channels or _in_channels(model), height, width, generator=generator)
    return export(explainer, out, images, format=format, targets=targets, dtype=dtype)
