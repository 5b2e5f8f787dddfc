"""The Ray engine's fault guarantees, on real Ray processes: a worker node lost mid-run, a driver killed with
SIGKILL. Each run ends bit-identical to the local engine's, every batch committed exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from fastcam.cli import main
from fastcam.io.store import Run, open_run
from fastcam_testkit.raycluster import CLASSES, LAYER, SLOW_SPEC, Inputs, assert_same_run, ray_environment

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head node (the driver's, where the committer lives) and one worker node, 2 CPUs each; their workers
    import the slow test model from tests/ (PYTHONPATH, which the nodes' processes inherit)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ray_environment()["PYTHONPATH"]
    try:
        # a lost node is noticed within ~1.5 s (Ray's default health check takes ~15 s)
        checks = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
        two_nodes = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "include_dashboard": False, "node_ip_address": "127.0.0.1", "_system_config": checks})
        two_nodes.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    ray.init(address=two_nodes.address, log_to_driver=False)
    yield two_nodes
    ray.shutdown()
    two_nodes.shutdown()


@pytest.fixture(scope="module")
def reference(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The local engine's run of the faulted runs' settings (the slow model, one image per batch)."""
    from fastcam.pipeline import explain_folder

    return explain_folder(SLOW_SPEC, inputs.data, tmp_path_factory.mktemp("reference") / "run",
                          weights=inputs.weights, num_classes=CLASSES, layer=LAYER, batch_size=1, progress=False,
                          max_skip_fraction=1.0)  # one unreadable file of 8: over the default share


def _wait_for_a_commit(run: Path, read_progress: Callable[..., dict[str, Any]], alive: Callable[[], bool]) -> int:
    """Poll the run's commit record until a batch is committed; its count of committed batches."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and alive():
        progress = run / "shard-00000-of-00001.progress.json"
        if progress.exists():
            done = read_progress(run)["committed_batches"]
            if done:
                return done
        time.sleep(0.02)
    raise AssertionError("no batch was committed")


def _assert_each_batch_committed_once(run: Path, read_progress: Callable[..., dict[str, Any]],
                                      commit_log: Callable[..., list[tuple[int, int]]]) -> list[tuple[int, int]]:
    log = commit_log(read_progress(run))
    batches = [b for b, _ in log]
    assert sorted(batches) == list(range(len(batches))) == sorted(set(batches))
    return log


def test_a_lost_worker_node_leaves_the_run_complete_and_identical(
        cluster: Any, inputs: Inputs, reference: Run, tmp_path: Path, read_progress: Callable[..., dict[str, Any]],
        commit_log: Callable[..., list[tuple[int, int]]]) -> None:
    from fastcam.ray import explain_dataset

    out = tmp_path / "run"
    worker = cluster.list_all_nodes()[1]
    result: list[Any] = []
    job = threading.Thread(target=lambda: result.append(explain_dataset(
        SLOW_SPEC, inputs.data, out, weights=inputs.weights, num_classes=CLASSES, layer=LAYER, batch_size=1,
        actors=2, cpus_per_actor=1.5, progress=False, max_skip_fraction=1.0)))  # 1.5 CPUs: one actor on each node
    job.start()
    committed = _wait_for_a_commit(out, read_progress, job.is_alive)
    cluster.remove_node(worker)  # its actor, its tasks and the blocks it held are lost
    job.join(timeout=240)
    assert not job.is_alive() and result, "the run did not finish after the node was lost"
    assert committed < 8, "the node was removed after the run had finished: nothing was tested"
    assert_same_run(result[0], reference)
    assert [s["id"] for s in result[0].skipped] == ["broken.png"]
    assert result[0].meta["settings"] == reference.meta["settings"]
    _assert_each_batch_committed_once(out, read_progress, commit_log)


def test_a_driver_killed_with_sigkill_resumes_where_it_was_committed(
        cluster: Any, inputs: Inputs, reference: Run, tmp_path: Path, read_progress: Callable[..., dict[str, Any]],
        commit_log: Callable[..., list[tuple[int, int]]]) -> None:
    out = tmp_path / "run"
    command = ["explain", "--model", SLOW_SPEC, "--weights", str(inputs.weights), "--num-classes", str(CLASSES),
               "--layer", LAYER, "--data", str(inputs.data), "--out", str(out), "--batch-size", "1", "--quiet",
               "--max-skip-fraction", "1", "--engine", "ray", "--ray-actors", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "fastcam", *command, "--ray-address", cluster.address],
                              env=ray_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        committed = _wait_for_a_commit(out, read_progress, lambda: driver.poll() is None)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.stderr.close()  # type: ignore[union-attr]
    first = read_progress(out)["committed_batches"]
    assert 1 <= committed <= first < 8, "the driver finished before it was killed: nothing was tested"
    assert main(command) == 0  # the same command, resumed (here, on the running cluster)
    log = _assert_each_batch_committed_once(out, read_progress, commit_log)
    assert {b for b, session in log if session == 1} == set(range(first))  # nothing committed was recomputed
    assert_same_run(open_run(out), reference)
