"""A Hugging Face model's own image preprocessing: its `AutoImageProcessor`, read from the model's local
folder (nothing is downloaded), applied as it is rather than re-implemented.

`HFImageProcessor` wraps the processor for fastcam's image readers: it takes the (C, H, W) float image in
[0, 1] that `fastcam.io.images.read_image` gives, hands the processor the 8-bit (H, W, 3) array the file
held (8-bit sources round-trip exactly), and returns its `pixel_values` (C, H, W) float32: the model input,
pixel for pixel what `processor(images=PIL.Image.open(file))` gives.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["HFImageProcessor", "hf_image_processor"]

#: the probe images whose outputs tell whether the processor gives one fixed input size
_PROBES = ((48, 64), (64, 48))


class HFImageProcessor:
    """A Hugging Face image processor as a (C, H, W) [0, 1] float image -> model input function.

    Attributes:
        processor: the `transformers` image processor.
        size: (H, W) of every output when the processor gives one fixed size (resize and/or crop to a
            fixed shape), else None.
        mean, std: its normalisation (None without `do_normalize`), to map inputs back to [0, 1].
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        shapes = {tuple(self._run(np.zeros((h, w, 3), dtype=np.uint8)).shape[-2:]) for h, w in _PROBES}
        self.size: tuple[int, int] | None = shapes.pop() if len(shapes) == 1 else None  # type: ignore[assignment]
        normalizes = bool(getattr(processor, "do_normalize", False))
        self.mean = tuple(float(v) for v in processor.image_mean) if normalizes else None
        self.std = tuple(float(v) for v in processor.image_std) if normalizes else None

    def _run(self, array: np.ndarray) -> Tensor:
        pixels = self.processor(images=array, return_tensors="np")["pixel_values"]
        return torch.from_numpy(np.ascontiguousarray(pixels[0], dtype=np.float32))

    def __call__(self, image: Tensor) -> Tensor:
        """The model input of a (C, H, W) float image in [0, 1] (C = 1 is repeated to RGB)."""
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"a Hugging Face image processor takes (1 or 3, H, W) images, got {tuple(image.shape)}")
        rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        array = (rgb.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        return self._run(array)

    def describe(self) -> dict[str, Any]:
        """The processor's class and configuration, as JSON (recorded in a run's settings)."""
        return {"class": type(self.processor).__name__,
                "config": json.loads(json.dumps(self.processor.to_dict(), sort_keys=True, default=str))}

    def __repr__(self) -> str:
        return f"HFImageProcessor({type(self.processor).__name__}, size={self.size})"


def hf_image_processor(folder: str | Path, transformers: Any = None) -> HFImageProcessor | None:
    """The image processor of a local Hugging Face model folder (`preprocessor_config.json`), loaded with
    `AutoImageProcessor.from_pretrained(local_files_only=True, trust_remote_code=False)`; None when the
    folder has none."""
    folder = Path(folder)
    if not (folder / "preprocessor_config.json").is_file():
        return None
    if transformers is None:
        import transformers
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True,
                                                                    trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise ValueError(f"cannot load the image processor of {str(folder)!r} (preprocessor_config.json): "
                         f"{type(exc).__name__}: {exc}") from exc
    return HFImageProcessor(processor)
