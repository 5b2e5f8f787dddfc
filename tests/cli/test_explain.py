"""`fastcam explain`: model specs, weights, targets file, overlays, report, resume, and clear errors for bad
input."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from PIL import Image

from fastcam.cli import main
from fastcam.io.run import RunDirectory, open_run
from fastcam.models import tiny_resnet


def test_explain_overlays_report_and_resume(tmp_path: Path, folder: Path, weights: Path,
                                            capsys: pytest.CaptureFixture[str], parse_html: Callable) -> None:
    out = tmp_path / "run"
    argv = ["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--weights", str(weights), "--layer", "layer4",
            "--method", "gradcampp", "--data", str(folder), "--out", str(out), "--batch-size", "2", "--size", "32",
            "--mean", "0.5", "--std", "0.25", "--report", "--quiet"]
    assert main(argv) == 0
    assert "5 images explained, 0 skipped" in capsys.readouterr().out
    run = open_run(out)
    assert run.ids == ["a/g1.png", "a/g3.png", "c0.jpg", "c2.jpg", "c4.jpg"]
    assert run.meta["input_size"] == [32, 32] and run.meta["settings"]["model"]["spec"] == "fastcam:tiny_resnet"
    assert run.upsampled(0).shape == (32, 32)
    for sample_id in run.ids:
        name = sample_id + ".png"  # one overlay name per id: "a.png" -> "a.png.png"
        with Image.open(out / "overlays" / name) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    report = parse_html(out / "report.html")
    assert len(report.srcs) == 2 * len(run.ids)
    assert all((out / src).is_file() for src in report.srcs)
    commits = json.loads(RunDirectory(out).progress(0, 1).read_text())["commits"]
    assert main(argv) == 0  # the same command again: nothing recomputed
    assert json.loads(RunDirectory(out).progress(0, 1).read_text())["commits"] == commits
    # changed settings: a clear refusal, exit status 2, no traceback
    assert main(["0.5" if a == "0.25" else a for a in argv]) == 2  # --std 0.25 -> 0.5
    assert "other settings" in capsys.readouterr().err


def test_module_factory_spec_state_dict_and_targets_file(tmp_path: Path, folder: Path) -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=3)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pt")
    (tmp_path / "targets.csv").write_text("path,class\na/g1.png,2\na/g3.png,1\nc0.jpg,0\nc2.jpg,2\nc4.jpg,1\n")
    out = tmp_path / "run"
    assert main(["explain", "--model", "fastcam.models:tiny_resnet", "--num-classes", "3", "--weights",
                 str(tmp_path / "w.pt"), "--layer", "layer4", "--method", "scorecam", "--method-arg", "batch_size=64",
                 "--targets", str(tmp_path / "targets.csv"), "--data", str(folder), "--out", str(out),
                 "--size", "24", "20", "--quiet"]) == 0
    run = open_run(out)
    assert run.targets.tolist() == [2, 1, 0, 2, 1]
    assert run.meta["settings"]["method_kwargs"] == {"batch_size": 64}
    assert run.lowres.shape[0] == 5 and run.upsampled(1).shape == (24, 20)


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_net"], "unknown model"),
    (["--model", "nomodule_xyz:factory"], "cannot load model spec"),
    (["--model", "fastcam:tiny_resnet", "--weights", "missing.safetensors"], "does not exist"),
    (["--model", "fastcam:tiny_resnet", "--layer", "layer9"], "not a module of the model"),
    (["--model", "fastcam:tiny_resnet", "--targets", "nonsense"], "--targets"),
])
def test_bad_input_gives_a_clear_message(tmp_path: Path, folder: Path, argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = ["explain", "--layer", "layer4", "--data", str(folder), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err


def test_empty_folder_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    for data, message in ((tmp_path / "empty", "no images"), (tmp_path / "missing", "does not exist")):
        assert main(["explain", "--model", "fastcam:tiny_resnet", "--layer", "layer4", "--data", str(data),
                     "--out", str(tmp_path / "r"), "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_mixed_sizes_are_resized_and_a_mostly_skipped_run_exits_2(tmp_path: Path, weights: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A folder of mixed-size images: 35 of 40 were skipped (the first image's size was the dataset's) and
    the run exited 0, "complete". Now they are resized to the first image's size; a run where more than
    --max-skip-fraction cannot be read exits 2 with the reason and is not complete."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "mixed"
    data.mkdir()
    for i in range(10):
        Image.fromarray((rng.random((20 + (i % 5), 24, 3)) * 255).astype(np.uint8)).save(data / f"im{i}.png")
    argv = ["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--weights", str(weights),
            "--layer", "layer4", "--data", str(data), "--batch-size", "4", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert "10 images explained, 0 skipped" in capsys.readouterr().out
    assert open_run(tmp_path / "run").meta["input_size"] == [20, 24]  # the first image's, as documented
    (data / "zz-broken.png").write_bytes(b"not a png")  # 2 of 12 cannot be read: more than 10 %
    (data / "zz-empty.png").write_bytes(b"")
    assert main([*argv, "--out", str(tmp_path / "stopped")]) == 2
    captured = capsys.readouterr()
    assert "images explained" not in captured.out
    assert "stopped: 2 of 12 samples could not be explained, more than max_skip_fraction=0.1" in captured.err
    assert "--max-skip-fraction" in captured.err
    assert json.loads((tmp_path / "stopped" / "run.json").read_text()).get("complete") is not True
    assert main([*argv, "--out", str(tmp_path / "stopped"), "--max-skip-fraction", "0.2"]) == 0  # resumed, allowed
    assert "10 images explained, 2 skipped" in capsys.readouterr().out
