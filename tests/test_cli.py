"""The `fastcam` command line: explain (model specs, weights, targets file, overlays, report), report,
and clear errors for bad input."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastcam.cli import SUBCOMMANDS, build_parser, main
from fastcam.io.store import open_run
from fastcam.models import tiny_resnet


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs)["src"] or "")
        if tag == "tr":
            self.rows += 1


def parse_report(path: Path) -> _Images:
    parser = _Images()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for i in range(5):  # grayscale PNGs and RGB JPEGs mixed, the model takes 3 channels
        pixels = (rng.random((30, 26)) * 255).astype(np.uint8)
        if i % 2:
            Image.fromarray(pixels).save(data / "a" / f"g{i}.png")
        else:
            Image.fromarray(np.stack([pixels] * 3, -1)).save(data / f"c{i}.jpg", quality=95)
    return data


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    save_file(tiny_resnet(num_classes=3).state_dict(), str(path))
    return path


def test_parser_has_every_subcommand_registered_once() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"explain", "demo", "report"} <= set(sub.choices)
    assert len(SUBCOMMANDS) == len(set(SUBCOMMANDS))
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--help"])
    assert exc.value.code == 0


def test_explain_overlays_report_and_resume(tmp_path: Path, folder: Path, weights: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["explain", "--model", "tiny_resnet", "--num-classes", "3", "--weights", str(weights), "--layer", "layer4",
            "--method", "gradcampp", "--data", str(folder), "--out", str(out), "--batch-size", "2", "--size", "32",
            "--mean", "0.5", "--std", "0.25", "--report", "--quiet"]
    assert main(argv) == 0
    assert "5 images explained, 0 skipped" in capsys.readouterr().out
    run = open_run(out)
    assert run.ids == ["a/g1.png", "a/g3.png", "c0.jpg", "c2.jpg", "c4.jpg"]
    assert run.meta["input_size"] == [32, 32] and run.meta["settings"]["model"]["spec"] == "tiny_resnet"
    assert run.upsampled(0).shape == (32, 32)
    for sample_id in run.ids:
        name = sample_id if sample_id.endswith(".png") else sample_id + ".png"
        with Image.open(out / "overlays" / name) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    report = parse_report(out / "report.html")
    assert len(report.srcs) == 2 * len(run.ids)
    assert all((out / src).is_file() for src in report.srcs)
    commits = json.loads((out / "shard-00000-of-00001.progress.json").read_text())["commits"]
    assert main(argv) == 0  # the same command again: nothing recomputed
    assert json.loads((out / "shard-00000-of-00001.progress.json").read_text())["commits"] == commits
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
    (["--model", "tiny_resnet", "--weights", "missing.safetensors"], "does not exist"),
    (["--model", "tiny_resnet", "--layer", "layer9"], "not a module of the model"),
    (["--model", "tiny_resnet", "--targets", "nonsense"], "--targets"),
])
def test_bad_input_gives_a_clear_message(tmp_path: Path, folder: Path, argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = ["explain", "--layer", "layer4", "--data", str(folder), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(base + argv) == 2
    assert message in capsys.readouterr().err


def test_empty_folder_and_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    for data, message in ((tmp_path / "empty", "no images"), (tmp_path / "missing", "does not exist")):
        assert main(["explain", "--model", "tiny_resnet", "--layer", "layer4", "--data", str(data),
                     "--out", str(tmp_path / "r"), "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_report_over_two_runs(tmp_path: Path, folder: Path, weights: Path) -> None:
    common = ["--model", "tiny_resnet", "--num-classes", "3", "--weights", str(weights), "--layer", "layer4",
              "--data", str(folder), "--size", "16", "--quiet", "--overlays"]
    assert main(["explain", "--method", "gradcam", "--out", str(tmp_path / "g"), *common]) == 0
    assert main(["explain", "--method", "gradcampp", "--out", str(tmp_path / "p"), *common]) == 0
    html = tmp_path / "reports" / "both.html"
    assert main(["report", str(tmp_path / "g"), str(tmp_path / "p"), "--out", str(html)]) == 0
    report = parse_report(html)
    assert len(report.srcs) == 3 * 5  # input + two overlays per image
    assert all((html.parent / src).is_file() for src in report.srcs)
