"""Inputs and checks shared by the Ray engine's tests: a small image folder with an unreadable file, a saved
tiny model (also as a deliberately slow one, so that a kill or a lost node lands inside a run), the local
engine's run of them, and the environment every Ray process of the tests runs with."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fastcam.io.store import Run
from fastcam.models import ResNet, tiny_resnet
from fastcam_testkit.runs import random_pngs, saved_tiny_resnet

#: Ray on the loopback address, never reporting usage
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: the tiny model of every Ray test, and its settings
SPEC, LAYER, CLASSES = "fastcam:tiny_resnet", "layer4", 3
#: `module:factory` spec of the same model, slowed down (the tests add tests/ to the import path)
SLOW_SPEC = "fastcam_testkit.raycluster:slow_tiny_resnet"


@dataclass(frozen=True)
class Inputs:
    """data: the image folder (good PNGs and one unreadable file); weights: the tiny model's file."""

    data: Path
    weights: Path


def make_inputs(root: Path, count: int = 7, size: int = 32) -> Inputs:
    """`count` random PNGs and a file named .png that is not an image, and a saved tiny ResNet."""
    data = root / "data"
    random_pngs(data, count, size)
    (data / "broken.png").write_bytes(b"not a png at all")
    _, weights = saved_tiny_resnet(root, num_classes=CLASSES)
    return Inputs(data, weights)


def assert_same_run(a: Run, b: Run) -> None:
    """Bit-identical results: ids, maps, logits, targets, predictions and the skipped list."""
    assert a.ids == b.ids
    assert torch.equal(a.lowres, b.lowres)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.targets, b.targets)
    assert torch.equal(a.predicted, b.predicted)
    assert a.skipped == b.skipped


class SlowResNet(ResNet):
    """`tiny_resnet` whose forward pass takes at least `delay` seconds more (same weights, same results)."""

    delay = 0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        time.sleep(self.delay)
        return super().forward(x)


def slow_tiny_resnet(num_classes: int = CLASSES) -> ResNet:
    """The tiny ResNet of the tests (`SLOW_SPEC`), slowed down."""
    model = tiny_resnet(num_classes=num_classes)
    model.__class__ = SlowResNet
    return model


def ray_environment() -> dict[str, str]:
    """The environment of a subprocess driver: the tests' Ray settings, tests/ importable."""
    tests = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **RAY_ENV, "PYTHONPATH": path}
