"""fastcam.io.run.layout: the writer lock is this process's alone (not its forked children's) and cannot be
bypassed by deleting its file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastcam.errors import RunLockedError
from fastcam.io.run import RunDirectory

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork and SIGKILL")

#: a writer that forks a child (as DataLoader workers are forked) outliving it, then waits to be killed
FORKING_WRITER = """
import os, sys, time
from fastcam.io.run.layout import RunDirectory
with RunDirectory(sys.argv[1]).writer_lock(0, 1):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(child))
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    time.sleep(60)
"""

#: a writer that commits batch 0, waits for "go", then commits batch 1
SLOW_WRITER = """
import os, sys, time
import torch
from fastcam.io.run import RunDirectory, ShardWriter
root = sys.argv[1]
with RunDirectory(root).writer_lock(0, 1):
    writer = ShardWriter(root, 0, 1, n_items=2, batch_size=1, dtype="float32")
    for batch in (0, 1):
        if batch == 1:
            open(os.path.join(root, "..", "ready"), "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(root, "..", "go")) and time.monotonic() < deadline:
                time.sleep(0.02)
        writer.write_batch(batch, torch.tensor([True]), torch.ones(1, 2, 2), torch.zeros(1, 3), torch.tensor([1]))
        writer.commit(batch, [], 0.1, 1, "cpu")
"""


def _wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the writer did not get there: {process.communicate(timeout=30)}")
        time.sleep(0.02)


def _python(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_forked_child_outliving_a_killed_writer_does_not_hold_the_lock(tmp_path: Path) -> None:
    """Issue 26 item 1: forked DataLoader workers inherited the lock's descriptor, so a rerun right after
    killing the writer was refused, naming the dead PID, until the orphans exited."""
    out, child_file = tmp_path / "run", tmp_path / "child"
    writer = _python(FORKING_WRITER, str(out), str(child_file))
    child = None
    try:
        _wait_for(child_file, writer)
        child = int(child_file.read_text())
        with pytest.raises(RunLockedError):  # held while the writer lives
            with RunDirectory(out).writer_lock(0, 1):
                pass
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        os.kill(child, 0)  # the child still lives
        with RunDirectory(out).writer_lock(0, 1):  # the OS released the writer's lock with the writer
            pass
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=30)
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_deleting_the_lock_files_under_a_writer_stops_it_at_its_next_commit(tmp_path: Path) -> None:
    """Issue 26 item 4: deleting the hidden lock files while a writer ran let a second writer in, and both
    exited 0. The second gets in (a new file), but the first refuses to commit again."""
    out = tmp_path / "run"
    RunDirectory(out).create(["a.png", "b.png"], {"method": "gradcam", "batch_size": 1, "world_size": 1},
                             input_size=(8, 8), versions={})
    writer = _python(SLOW_WRITER, str(out))
    try:
        _wait_for(tmp_path / "ready", writer)
        directory = RunDirectory(out)
        directory.run_lock.unlink()
        directory.shard_lock(0, 1).unlink()
        with directory.writer_lock(0, 1):  # a second writer locks new files
            (tmp_path / "go").write_text("")
            _, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=30)
    assert writer.returncode != 0
    assert "RunLockLostError" in err and "deleted or replaced" in err, err[-2000:]
    assert directory.read_progress(0, 1)["committed_batches"] == 1  # batch 1 was not committed


def test_a_format_2_store_labelled_format_1_is_damage(tmp_path: Path) -> None:
    """Issue 26 item 5: `"fastcam_run": 1` on a format-2 store raised KeyError 'ok' in open_run, also for a run
    whose settings do not record their format (written through the store alone)."""
    import json

    from fastcam.errors import RunDamagedError
    from fastcam.io.run import open_run
    from fastcam_testkit.runs import write_synthetic_run

    root = tmp_path / "run"
    write_synthetic_run(root, 1, batch_size=1)
    directory = RunDirectory(root)
    meta = json.loads(directory.run_json.read_text())
    directory.run_json.write_text(json.dumps({**meta, "fastcam_run": 1}))
    with pytest.warns(UserWarning, match="store format 1"), pytest.raises(RunDamagedError, match="'fastcam_run' is 1"):
        open_run(root)
