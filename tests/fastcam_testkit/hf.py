"""Small random-init Hugging Face image classifiers saved as local model folders (config.json,
model.safetensors, preprocessor_config.json as the Hub's folders hold them): what `hf:FOLDER` specs load."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


@dataclass(frozen=True)
class HFCase:
    """One kind of model: its processor config, how to build it, its target layer and layout."""

    processor: dict[str, Any]
    make: Callable[[Any], torch.nn.Module]
    layer: str
    reshape: str | None
    size: int


HF_CASES: dict[str, HFCase] = {
    "vit": HFCase({"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 32, "width": 32},
                   "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                   "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
                  lambda t: t.ViTForImageClassification(t.ViTConfig(
                      image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"})),
                  "vit.layers.-1.layernorm_before", "vit", 32),
    "convnext": HFCase({"image_processor_type": "ConvNextImageProcessor", "do_resize": True,
                        "size": {"shortest_edge": 32}, "crop_pct": 0.875, "resample": 3, "do_rescale": True,
                        "rescale_factor": 1 / 255, "do_normalize": True, **IMAGENET},
                       lambda t: t.ConvNextForImageClassification(t.ConvNextConfig(
                           hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)),
                       "convnext.encoder.stages.-1", None, 32),
    # microsoft/resnet-50's config: the legacy feature-extractor form, an int size
    "resnet": HFCase({"feature_extractor_type": "ConvNextFeatureExtractor", "image_processor_type": "ConvNextImageProcessor",
                      "do_resize": True, "size": 40, "crop_pct": 0.875, "resample": 3, "do_normalize": True, **IMAGENET},
                     lambda t: t.ResNetForImageClassification(t.ResNetConfig(
                         embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)),
                     "resnet.encoder.stages.-1", None, 40),
}


def save_hf_folder(path: Path, kind: str, seed: int = 0) -> Path:
    """A seeded random-init model of `kind` (`HF_CASES`) saved under `path` with its processor config."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    HF_CASES[kind].make(transformers).eval().save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(HF_CASES[kind].processor))
    return path
