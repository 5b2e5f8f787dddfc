"""Every user error of `fastcam explain` ends in exit status 2 and a one-line message saying what to do, with no
traceback (`--debug` shows it); targets are checked, strictly, before the first batch."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Callable

import pytest
import torch

from fastcam.io.run import RunDirectory
from fastcam.cli import main
from fastcam.models import tiny_resnet, tiny_vgg


class _Evil:
    """Unpickling this would run `os.getpid` (a stand-in for anything worse): torch.load must refuse it."""

    def __reduce__(self):  # noqa: ANN204
        return (os.getpid, ())


def _garbage_safetensors(d: Path) -> list[str]:
    (d / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + os.urandom(64))
    return ["--weights", str(d / "w.safetensors")]


def _other_shapes(d: Path) -> list[str]:
    torch.save(tiny_resnet(num_classes=5).state_dict(), d / "w.pt")  # the model is built with 3 classes
    return ["--weights", str(d / "w.pt")]


def _other_model(d: Path) -> list[str]:
    torch.save(tiny_vgg(num_classes=3).state_dict(), d / "w.pt")
    return ["--weights", str(d / "w.pt")]


def _malicious_pickle(d: Path) -> list[str]:
    with (d / "w.pt").open("wb") as f:
        pickle.dump({"state_dict": _Evil()}, f, protocol=2)
    return ["--weights", str(d / "w.pt")]


def _targets(name: str, text: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / name).write_text(text, encoding="utf-8")
        return ["--targets", str(d / name)]
    return make


ALL = "a/g1.png,0\na/g3.png,1\nc0.jpg,2\nc2.jpg,0\nc4.jpg,1\n"
ERRORS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "--device cuda without a GPU": (lambda d: ["--device", "cuda"], "needs a CUDA GPU, but none is available"),
    "--device blah": (lambda d: ["--device", "blah"], "'blah' is not a device: use cpu, cuda or cuda:N"),
    "--out is a file": (lambda d: ["--out", str(d / "file.txt")], "--out '"),
    "garbage .safetensors": (_garbage_safetensors, "not a valid safetensors file"),
    "--out is a file": (lambda d: ["--out", str(d / "file.txt")], "error: --out '"),
    "state dict of another model": (_other_model, "missing key(s)"),
    "malicious pickle": (_malicious_pickle, "refused to load weights"),
    "JSON list as --targets": (_targets("t.json", '["a/g1.png", 0]'), "must hold one JSON object"),
    "1.0 class in CSV": (_targets("t.csv", ALL.replace("c0.jpg,2", "c0.jpg,2.0")),
                         "line 3: class '2.0' of 'c0.jpg' is not an integer class index"),
    "1.0 class on the first line": (_targets("t.csv", "a/g1.png,1.0\n"), "line 1: class '1.0'"),
    "duplicate row": (_targets("t.csv", ALL + "c2.jpg,1\n"), "'c2.jpg' is listed twice (first on line 4)"),
    "unknown path": (_targets("t.csv", ALL + "nope.png,1\n"), "names 1 file(s) that are not in the data, e.g. ['nope.png']"),
    "missing path": (_targets("t.csv", ALL.replace("c4.jpg,1\n", "")), "has no class for 1 sample(s), e.g. ['c4.jpg']"),
    "class out of range at the last sample": (_targets("t.csv", ALL.replace("c4.jpg,1", "c4.jpg,7")),
                                              "class 7 of 'c4.jpg' (sample 4) is out of range for a model with 3"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_error_exit_2_one_line_no_traceback(case: str, tmp_path: Path, folder: Path,
                                                 capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    if case.startswith("--device cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "file.txt").write_text("not a folder")
    make, message = ERRORS[case]
    out = tmp_path / "run"
    argv = ["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--layer", "layer4", "--data", str(folder),
            "--out", str(out), "--batch-size", "2", "--size", "16", "--quiet", *make(tmp_path)]
    assert main(argv) == 2
    # warnings said before the run (random weights when no --weights is given) are not the error
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if ": warning: " not in line)
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("fastcam explain: error: ")
    assert not RunDirectory(out).shard(0, 1).exists()  # refused before the first batch


def test_debug_shows_the_traceback(tmp_path: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--model", "fastcam:tiny_resnet", "--layer", "layer4", "--data", str(folder), "--out",
            str(tmp_path / "r"), "--device", "blah", "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "is not a device" in err


def test_bom_csv_and_integer_json_targets_are_accepted(tmp_path: Path, folder: Path, one_thread: None) -> None:
    from fastcam.io.run import open_run

    (tmp_path / "t.csv").write_bytes("\ufeff".encode() + ALL.encode())  # BOM, no header: the BOM is not in the path
    (tmp_path / "t.json").write_text(json.dumps({"a/g1.png": 0, "a/g3.png": 1, "c0.jpg": 2, "c2.jpg": 0, "c4.jpg": 1}))
    for name in ("t.csv", "t.json"):
        out = tmp_path / f"run-{name}"
        assert main(["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--layer", "layer4", "--data",
                     str(folder), "--out", str(out), "--size", "16", "--targets", str(tmp_path / name), "--quiet"]) == 0
        assert open_run(out).targets.tolist() == [0, 1, 2, 0, 1]


def test_module_factory_from_the_current_directory(tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                   one_thread: None) -> None:
    """`--model mymodule:factory` finds mymodule.py in the current directory, as `python -m` would."""
    (tmp_path / "mymodule_fc.py").write_text("from fastcam.models import tiny_resnet\n"
                                             "def factory(num_classes=3):\n    return tiny_resnet(num_classes=num_classes)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert main(["explain", "--model", "mymodule_fc:factory", "--layer", "layer4", "--data", str(folder), "--out",
                 "run", "--size", "16", "--quiet"]) == 0
    assert str(tmp_path) not in __import__("sys").path  # the path is put back


def test_hidden_files_and_broken_or_looping_symlinks_are_listed_as_skipped(tmp_path: Path, folder: Path,
                                                                          one_thread: None) -> None:
    from fastcam.io.run import open_run

    (folder / ".hidden.png").write_bytes((folder / "a" / "g1.png").read_bytes())
    (folder / "broken.png").symlink_to(folder / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    (folder / "good_link.png").symlink_to(folder / "a" / "g1.png")
    out = tmp_path / "run"
    assert main(["explain", "--model", "fastcam:tiny_resnet", "--layer", "layer4", "--data", str(folder), "--out", str(out),
                 "--size", "16", "--quiet"]) == 0
    run = open_run(out)
    reasons = {s["id"]: s["error"] for s in run.skipped}
    assert set(reasons) == {".hidden.png", "broken.png", "loop.png"}
    assert "hidden file" in reasons[".hidden.png"] and "broken symbolic link" in reasons["broken.png"]
    assert "symbolic link loop" in reasons["loop.png"]
    assert "good_link.png" in run.ids and len(run) == 6
