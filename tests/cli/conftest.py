"""Fixtures of the CLI tests: a folder of mixed images and the weights of a tiny 3-class ResNet."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastcam.models import tiny_resnet


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for i in range(5):  # grayscale PNGs and RGB JPEGs mixed, the model takes 3 channels
        pixels = (rng.random((30, 26)) * 255).astype(np.uint8)
        if i % 2:
            Image.fromarray(pixels).save(data / "a" / f"g{i}.png")
        else:
            Image.fromarray(np.stack([pixels] * 3, -1)).save(data / f"c{i}.jpg", quality=95)
    return data


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    save_file(tiny_resnet(num_classes=3).state_dict(), str(path))
    return path
