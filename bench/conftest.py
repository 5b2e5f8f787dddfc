"""pytest-benchmark suite of fastcam's explainers and their peers (the same contenders as `fastcam bench`).

Run it explicitly (it is not part of the test suite; pytest.ini disables benchmarks by default):

    python -m pytest bench/ --benchmark-enable                                    # resnet18, 224, CPU batch 8
    python -m pytest bench/ --benchmark-enable --bench-model fastcam:resnet50 --bench-batch 64 --bench-device cuda
    python -m pytest bench/ --benchmark-enable --benchmark-json bench/results/pytest-benchmark.json

Without --benchmark-enable every contender runs once (a smoke run). Files named bench_*.py are collected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fastcam.benchmark import BenchConfig, Setting, make_setting


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastcam bench")
    group.addoption("--bench-model", default="fastcam:resnet18", help="a model spec (fastcam:NAME, hf:FOLDER, module:factory, ...)")
    group.addoption("--bench-layer", default=None, help="target layer (default layer4)")
    group.addoption("--bench-size", type=int, default=224, help="square input side")
    group.addoption("--bench-batch", type=int, default=None, help="batch size (default 64 on CUDA, 8 on CPU)")
    group.addoption("--bench-device", default=None, help="cuda or cpu (default: cuda when available)")
    group.addoption("--bench-rounds", type=int, default=5, help="timed rounds per contender")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Any:
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def bench_setting(request: pytest.FixtureRequest) -> Setting:
    """Model, target layer, seeded images and their predicted classes, built once for the session."""
    opt = request.config.getoption
    device = opt("--bench-device") or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = opt("--bench-batch") or (64 if device.startswith("cuda") else 8)
    config = BenchConfig(model=opt("--bench-model"), layer=opt("--bench-layer"), size=opt("--bench-size"),
                         batch=batch, device=device)
    return make_setting(config)


@pytest.fixture(scope="session")
def bench_rounds(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--bench-rounds"))
