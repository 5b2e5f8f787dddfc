"""One writer per run directory: a second `fastcam explain` on the same --out is refused with a message naming
the holder (exit status 2), the run keeps one method and one writer's commit record, and readers are never
blocked."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from fastcam.cli import main
from fastcam.errors import RunLockedError
from fastcam.io.run import RunDirectory, open_run

REPO = Path(__file__).resolve().parents[2]

# A model whose forward waits for a file, so the first writer holds the lock as long as the test needs
# (imported from the current directory: `--model gatedmodel:factory`).
GATED_MODEL = '''
import os, time
import torch
from fastcam.models import tiny_resnet

class Gated(torch.nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.net = tiny_resnet(num_classes=num_classes)
    def forward(self, x):
        deadline = time.monotonic() + 120
        while not os.path.exists("release") and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.net(x)

def factory(num_classes=3):
    return Gated(num_classes).eval()
'''


def _holder(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads(RunDirectory(run_dir).run_lock.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def test_racing_writers_one_refused_run_holds_one_method(tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str],
                                                         read_progress: Callable[..., dict[str, Any]]) -> None:
    (tmp_path / "gatedmodel.py").write_text(GATED_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # this process imports it too (the second writers)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def argv(method: str) -> list[str]:
        return ["explain", "--model", "gatedmodel:factory", "--layer", "net.layer4", "--method", method, "--data",
                str(folder), "--out", "R", "--batch-size", "2", "--size", "16", "--quiet"]

    # the first writer, another process, holds the run until "release" exists
    first = subprocess.Popen([sys.executable, "-m", "fastcam", *argv("gradcam")], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _holder(tmp_path / "R").get("pid") != first.pid:
            if time.monotonic() > deadline or first.poll() is not None:
                raise AssertionError(f"the first writer did not take the lock: {first.communicate(timeout=60)[1][-2000:]}")
            time.sleep(0.05)
        # second writers: another method, then the same settings; both refused, naming the holder
        for method in ("gradcampp", "gradcam"):
            assert main(argv(method)) == 2
            err = capsys.readouterr().err
            assert f"PID {first.pid} on host {socket.gethostname()}" in err and "writing since" in err, err
            assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    finally:
        (tmp_path / "release").write_text("")
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    run = open_run(tmp_path / "R")
    assert run.method == "gradcam" and len(run) == 5
    progress = read_progress(tmp_path / "R")  # one writer's commit record: one session, every batch once
    assert progress["sessions"] == 1 and progress["commits"] == [[1, 0, 2]]
    assert not list((tmp_path / "R").glob(".*creating*"))


def test_lock_held_refuses_writers_not_readers(tmp_path: Path, folder: Path, weights: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--weights", str(weights), "--layer", "layer4",
            "--data", str(folder), "--out", str(out), "--batch-size", "2", "--size", "16", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()  # the first run's output (a warning on layer4's 1×1 maps at 16 px) is not the refusal
    before = RunDirectory(out).progress(0, 1).read_text()
    with RunDirectory(out).writer_lock(0, 1):  # another writer (flock: per open file, so also in-process)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"PID {os.getpid()} on host {socket.gethostname()}" in err and "choose another --out" in err
        assert len(err.strip().splitlines()) == 1
        assert len(open_run(out)) == 5  # readers take no lock
        assert main(["verify", str(out)]) == 0
        with pytest.raises(RunLockedError):
            with RunDirectory(out).writer_lock(0, 1):
                pass
    assert RunDirectory(out).progress(0, 1).read_text() == before
    assert main(argv) == 0  # released


def test_run_json_is_created_exclusively(tmp_path: Path) -> None:
    directory = RunDirectory(tmp_path / "run")
    settings = {"method": "gradcam", "batch_size": 1, "world_size": 1}
    directory.create(["a"], settings, input_size=None, versions={})
    with pytest.raises(FileExistsError):
        directory.create(["a"], {**settings, "method": "gradcampp"}, input_size=None, versions={})
    assert directory.read_meta()["method"] == "gradcam"
    assert not [p for p in directory.root.iterdir() if p.name.endswith(".tmp")]
