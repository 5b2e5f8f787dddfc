"""What eval reloads: a run's images go through the preprocessing the run recorded, all of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from fastcam_testkit.runs import random_pngs
from PIL import Image

from fastcam.evaluate.inputs import run_images
from fastcam.io.images import ImageFolder, Preprocess
from fastcam.models import tiny_resnet
from fastcam.pipeline import explain_dataset


def test_run_images_keep_the_recorded_resize_and_crop(tmp_path: Path) -> None:
    """A recipe with `resize` (shorter side, then a centre crop: torchvision's and timm's) was reloaded as a
    plain resize before: other inputs than the ones explained, silently."""
    random_pngs(tmp_path / "data", 1, 40)
    rng = np.random.default_rng(1)
    for name, shape in (("tall.png", (52, 36, 3)), ("wide.png", (30, 47, 3))):  # crop and plain resize differ
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(tmp_path / "data" / name)
    preprocess = Preprocess(channels=3, size=(24, 24), resize=28, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    torch.manual_seed(0)
    run = explain_dataset(tiny_resnet(num_classes=3).eval(), tmp_path / "data", method="gradcam", target_layer="layer4",
                          out=tmp_path / "run", preprocess=preprocess, progress=False)
    assert run.meta["settings"]["data"]["preprocess"]["resize"] == 28
    reloaded = [item["image"] for item in run_images(run)]
    explained = [item["image"] for item in ImageFolder(tmp_path / "data", preprocess)]
    assert len(reloaded) == 3
    for got, want in zip(reloaded, explained):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
