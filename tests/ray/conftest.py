"""Fixtures of the Ray engine's tests: Ray on the loopback address without usage reports, the inputs and
the local engine's run of them (once per module)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from fastcam_testkit.raycluster import CLASSES, LAYER, RAY_ENV, SPEC, Inputs, make_inputs

pytest.importorskip("ray.data")


@pytest.fixture(scope="module", autouse=True)
def ray_environment() -> Iterator[None]:
    """RAY_USAGE_STATS_ENABLED=0 and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray binds 127.0.0.1) for the module."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("ray-inputs"))


@pytest.fixture(scope="module")
def local_run(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The local engine's run of the inputs (batches of 3), the reference of every Ray run."""
    from fastcam.pipeline import explain_folder

    return explain_folder(SPEC, inputs.data, tmp_path_factory.mktemp("local") / "run", weights=inputs.weights,
                          num_classes=CLASSES, layer=LAYER, batch_size=3, progress=False)
