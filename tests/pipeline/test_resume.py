"""explain_dataset resumes after SIGKILL at random moments with exactly the uninterrupted run's result:
nothing lost, duplicated or recomputed."""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch
import zarr  # noqa: F401  (imported before forking: the children start warm)

from fastcam.io.run import Run, RunDirectory, open_run
from fastcam.models import tiny_resnet
from fastcam.pipeline import explain_dataset


def _model() -> torch.nn.Module:
    """The classifier both the reference and the killed children explain with (built in each process)."""
    torch.manual_seed(0)
    return tiny_resnet(num_classes=4).eval()


def _assert_same_run(a: Run, b: Run) -> None:
    assert a.ids == b.ids
    assert torch.equal(a.lowres, b.lowres)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.targets, b.targets)


def _child(data: str, out: str) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=3, progress=False)
    os._exit(0)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path: Path, write_images: Callable[..., list[str]],
                                                       read_progress: Callable[..., dict[str, Any]],
                                                       commit_log: Callable[..., list[tuple[int, int]]]) -> None:
    data = tmp_path / "data"
    write_images(data, 22)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _kill_and_resume(tmp_path, data, read_progress, commit_log)
    finally:
        torch.set_num_threads(threads)


def _kill_and_resume(tmp_path: Path, data: Path, read_progress: Callable[..., dict[str, Any]],
                     commit_log: Callable[..., list[tuple[int, int]]]) -> None:
    ctx = multiprocessing.get_context("fork")  # forked children start warm: kills land inside the work
    started = time.perf_counter()
    reference = explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=tmp_path / "ref",
                                batch_size=3, progress=False)
    duration = time.perf_counter() - started
    assert len(reference) == 22

    rng = random.Random(1234)
    out = tmp_path / "killed"
    per_batch = duration / 16  # the reference also paid one-off costs: stay well inside a batch

    def committed() -> int:
        path = RunDirectory(out).progress(0, 1)
        return json.loads(path.read_text())["committed_batches"] if path.exists() else 0

    kills = 0
    for _ in range(3):  # each session: wait for one new commit, then SIGKILL at a random moment after it
        p = ctx.Process(target=_child, args=(str(data), str(out)))
        p.start()
        target = committed() + 1
        deadline = time.monotonic() + 120
        while p.is_alive() and committed() < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, per_batch))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.join()
    p = ctx.Process(target=_child, args=(str(data), str(out)))
    p.start()
    p.join(timeout=300)
    assert p.exitcode == 0
    assert kills >= 1
    resumed = open_run(out)
    _assert_same_run(resumed, reference)
    progress = read_progress(out)
    batches = [b for b, _ in commit_log(progress)]
    assert batches == list(range(8)), "a committed batch was recomputed or lost"
    # a killed session committed batches before its kill, and a later session carried on from there
    assert len({session for _, session in commit_log(progress)}) >= 2
    assert not list(out.rglob("*.partial")), "a killed chunk write was left behind"
    # a second identical call recomputes nothing
    explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=3, progress=False)
    assert [b for b, _ in commit_log(read_progress(out))] == list(range(8))
