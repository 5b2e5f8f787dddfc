"""Sharding under torchrun: two ranks give the single process's run, and a crashed rank resumes alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from fastcam.cli import main
from fastcam.io.run import RunDirectory, open_run
from fastcam.pipeline.distributed import Ranks, torchrun_ranks

REPO = Path(__file__).resolve().parents[2]


def test_torchrun_two_ranks_equal_single_process_and_resume(
        tmp_path: Path, classifier: Callable[..., torch.nn.Module], write_images: Callable[..., list[str]],
        read_progress: Callable[..., dict[str, Any]], commit_log: Callable[..., list[tuple[int, int]]]) -> None:
    data = tmp_path / "data"
    write_images(data, 11, size=20)
    weights = tmp_path / "w.pt"
    torch.save(classifier().state_dict(), weights)
    common = ["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "4", "--weights", str(weights), "--layer", "layer4",
              "--method", "gradcam", "--data", str(data), "--batch-size", "2", "--dtype", "float32", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fastcam",
           *common, "--out", str(tmp_path / "multi")]

    def launch() -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]

    launch()
    single, multi = open_run(tmp_path / "single"), open_run(tmp_path / "multi")
    assert all(RunDirectory(tmp_path / "multi").shard(rank, 2).is_dir() for rank in (0, 1))
    assert multi.meta["world_size"] == 2 and multi.meta["complete"]
    assert multi.ids == single.ids
    torch.testing.assert_close(multi.lowres[:], single.lowres[:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(multi.logits[:], single.logits[:], rtol=1e-5, atol=1e-6)
    assert torch.equal(multi.targets, single.targets)
    # rank 1 "crashed" after its first batch: roll its commit record back, relaunch, only it resumes
    progress = read_progress(tmp_path / "multi", 1, 2)
    session = progress["commits"][0][0]
    progress["committed_batches"], progress["commits"] = 1, [[session, 0, 0]]
    RunDirectory(tmp_path / "multi").progress(1, 2).write_text(json.dumps(progress))
    before0 = read_progress(tmp_path / "multi", 0, 2)["commits"]
    launch()
    assert read_progress(tmp_path / "multi", 0, 2)["commits"] == before0
    assert commit_log(read_progress(tmp_path / "multi", 1, 2)) == [(0, session), (1, session + 1), (2, session + 1)]
    torch.testing.assert_close(open_run(tmp_path / "multi").lowres[:], single.lowres[:], rtol=1e-5, atol=1e-6)


def test_ranks_from_torchrun_environment(monkeypatch) -> None:  # noqa: ANN001
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_ranks() == Ranks(rank=0, world=1, local_rank=0) and torchrun_ranks().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_ranks() == Ranks(rank=3, world=4, local_rank=1) and not torchrun_ranks().is_main
