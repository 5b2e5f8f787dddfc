"""fastcam.ray.explain_dataset and `fastcam explain --engine ray` on a real local Ray (no mocks): the run
directory equals the local engine's bit for bit, whatever the actors and block split; refusals end in one
line and exit status 2, quickly."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastcam.cli import main
from fastcam.io.store import Run, RunDirectory, WriterLock, open_run, verify_run
from fastcam_testkit.raycluster import CLASSES, LAYER, SPEC, Inputs, assert_same_run, ray_environment

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("local_ray")


def _cli(inputs: Inputs, out: Path, *extra: str) -> list[str]:
    return ["explain", "--model", SPEC, "--weights", str(inputs.weights), "--num-classes", str(CLASSES),
            "--layer", LAYER, "--data", str(inputs.data), "--out", str(out), "--batch-size", "3", "--quiet",
            "--max-skip-fraction", "1", "--engine", "ray", *extra]


def test_two_actors_and_any_block_split_equal_the_local_engine(inputs: Inputs, local_run: Run,
                                                               tmp_path: Path) -> None:
    from fastcam.ray import explain_dataset

    run = explain_dataset(SPEC, inputs.data, tmp_path / "run", weights=inputs.weights, num_classes=CLASSES,
                          layer=LAYER, batch_size=3, actors=2, blocks=2, progress=False, max_skip_fraction=1.0)
    assert_same_run(run, local_run)
    assert [s["id"] for s in run.skipped] == ["broken.png"]
    assert run.meta["settings"] == local_run.meta["settings"]  # either engine resumes the other's run
    engine = run.meta["engine"]
    assert engine["name"] == "ray" and engine["ray"] == ray.__version__ and engine["actors"] == 2
    assert engine["cluster_resources"]["CPU"] == 2 and engine["threads_per_actor"] == 1
    assert verify_run(tmp_path / "run").ok


def test_too_many_skipped_samples_stop_the_run_as_the_local_engine_does(inputs: Inputs, tmp_path: Path) -> None:
    """One unreadable file of 8 is over the default max_skip_fraction (0.1): both engines stop, not complete."""
    from fastcam.errors import TooManySkippedError
    from fastcam.pipeline import explain_folder
    from fastcam.ray import explain_dataset

    common = dict(weights=inputs.weights, num_classes=CLASSES, layer=LAYER, batch_size=3, progress=False)
    with pytest.raises(TooManySkippedError, match="broken.png") as local:
        explain_folder(SPEC, inputs.data, tmp_path / "local", **common)  # type: ignore[arg-type]
    with pytest.raises(TooManySkippedError, match="broken.png") as on_ray:
        explain_dataset(SPEC, inputs.data, tmp_path / "ray", actors=1, **common)  # type: ignore[arg-type]
    assert str(on_ray.value) == str(local.value)
    assert not open_run(tmp_path / "ray", allow_partial=True).meta.get("complete")
    # the stopped job leaves no actor holding the cluster's CPUs (a later run would wait for them for ever)
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"], ray.available_resources()


def test_cli_with_one_actor_equals_the_local_engine(inputs: Inputs, local_run: Run, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(inputs, tmp_path / "run", "--ray-actors", "1")) == 0
    assert "7 images explained, 1 skipped" in capsys.readouterr().out
    assert_same_run(open_run(tmp_path / "run"), local_run)
    assert main(["verify", str(tmp_path / "run")]) == 0


def test_batch_explainer_in_ones_own_pipeline(inputs: Inputs, local_run: Run) -> None:
    """Encoded bytes in, the run store's values out (lowres * scale), the unreadable file a skipped row."""
    import numpy as np

    from fastcam.ray import BatchExplainer

    names = sorted(p.name for p in inputs.data.iterdir())
    rows = [{"id": name, "path": name, "bytes": (inputs.data / name).read_bytes()} for name in names]
    ds = ray.data.from_items(rows, override_num_blocks=1).map_batches(
        BatchExplainer, batch_size=3, compute=ray.data.ActorPoolStrategy(size=1),
        fn_constructor_kwargs={"model": SPEC, "weights": str(inputs.weights), "num_classes": CLASSES,
                               "layer": LAYER, "threads": 1})
    out = {row["id"]: row for row in ds.take_all()}
    assert sorted(out) == names
    assert out["broken.png"]["status"] == "skipped" and "cannot identify" in out["broken.png"]["reason"]
    for i, name in enumerate(local_run.ids):
        row = out[name]
        assert row["status"] == "explained" and row["reason"] == ""
        got = row["lowres"].astype(np.float32) * row["scale"]
        assert np.array_equal(got, local_run.lowres[i].numpy())
        assert np.array_equal(row["logits"], local_run.logits[i].numpy())
        assert row["target"] == local_run.targets[i] and row["predicted"] == local_run.predicted[i]


def test_a_local_run_with_other_settings_is_refused_listing_the_differences(
        inputs: Inputs, local_run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(inputs, local_run.path, "--dtype", "float32")) == 2
    err = capsys.readouterr().err
    assert "was written with other settings" in err and 'dtype: run has "float16", this call has "float32"' in err


def test_a_second_driver_is_refused_with_the_locks_message(inputs: Inputs, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with WriterLock(RunDirectory(out).run_lock, out):  # the first driver, as the engine holds it
        assert main(_cli(inputs, out)) == 2
    err = capsys.readouterr().err.strip()
    assert "is being written by another fastcam process" in err and len(err.splitlines()) == 1


def test_gpus_the_cluster_does_not_have_are_refused(inputs: Inputs, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(_cli(inputs, tmp_path / "run", "--ray-gpus-per-actor", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--ray-gpus-per-actor 1: the running Ray instance has 0 GPUs" in err
    assert time.monotonic() - started < 60


def test_an_unreachable_address_is_refused_within_a_minute(inputs: Inputs, tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fastcam", *_cli(inputs, tmp_path / "run", "--ray-address",
                                                                   "127.0.0.1:9")],
                          capture_output=True, text=True, timeout=60, env=ray_environment())
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "cannot reach the Ray cluster at '127.0.0.1:9'" in done.stderr
    assert time.monotonic() - started < 60
