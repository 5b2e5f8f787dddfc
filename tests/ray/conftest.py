"""Fixtures of the Ray engine's tests: Ray on the loopback address without usage reports, the inputs and
the local engine's run of them (once per module)."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from fastcam.io.store import Run
from fastcam_testkit.raycluster import CLASSES, LAYER, RAY_ENV, SPEC, Inputs, make_inputs

# Before Ray is first imported (it reads them then): Ray on the loopback address (127.0.0.1 as the node's
# address, not the machine's network one) and no usage reports, for every Ray process the tests start.
os.environ.update(RAY_ENV)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("ray-inputs"))


@pytest.fixture(scope="module")
def local_run(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The local engine's run of the inputs (batches of 3), the reference of every Ray run."""
    from fastcam.pipeline import explain_folder

    return explain_folder(SPEC, inputs.data, tmp_path_factory.mktemp("local") / "run", weights=inputs.weights,
                          num_classes=CLASSES, layer=LAYER, batch_size=3, progress=False,
                          max_skip_fraction=1.0)  # one unreadable file of 8: over the default share


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs) for the whole module that asks for it, shut down after it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    assert ray.util.get_node_ip_address() == "127.0.0.1"  # the loopback address (RAY_ENV above)
    yield
    ray.shutdown()
