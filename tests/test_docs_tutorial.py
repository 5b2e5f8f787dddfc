"""The quick start's Python example and the tutorial (docs/tutorial.md: a folder of images and a Hugging
Face model, explained, reported, evaluated, verified) run exactly as written, block after block, in an
empty folder: the ```python blocks executed, the ```bash blocks' `fastcam` commands run through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastcam_testkit.docs import DOCS, example_block, marked_names, shell_commands

from fastcam.cli import main

#: the tutorial's steps in page order, and each block's language
TUTORIAL = {
    "tutorial-setup": "python",
    "tutorial-explain": "bash",
    "tutorial-report": "bash",
    "tutorial-eval": "bash",
    "tutorial-verify": "bash",
    "tutorial-python": "python",
}


def _run_python(page: str, name: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": f"docs_{name}"}
    exec(compile(example_block(page, name), str(DOCS / page), "exec"), namespace)  # our own docs
    return namespace


def test_quick_start_python_example_runs_as_written(one_thread: None) -> None:
    assert marked_names("quickstart.md", "") == {"quickstart-python"}
    torch.manual_seed(0)
    namespace = _run_python("quickstart.md", "quickstart-python")
    maps = namespace["maps"]
    assert isinstance(maps, torch.Tensor) and maps.shape == (4, 128, 128)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert namespace["exp"].targets.tolist() == [3, 1, 4, 1]  # type: ignore[attr-defined]


def test_tutorial_runs_end_to_end_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers", reason="the tutorial's model is a Hugging Face one (pip install -e '.[hf]')")
    assert marked_names("tutorial.md", "tutorial-") == set(TUTORIAL)
    monkeypatch.chdir(tmp_path)
    for name, language in TUTORIAL.items():
        if language == "python":
            namespace = _run_python("tutorial.md", name)
            continue
        for command in shell_commands(example_block("tutorial.md", name, "bash")):
            assert command[0] == "fastcam", f"{name}: only fastcam commands run here, not {command}"
            assert main(command[1:]) == 0, (name, command)
    out = capsys.readouterr().out
    assert out.count("6 images explained, 0 skipped") == 2
    assert "OK: every committed chunk" in out
    assert (tmp_path / "runs" / "gradcam" / "report.html").is_file() and (tmp_path / "runs" / "compare.html").is_file()
    metrics = json.loads((tmp_path / "runs" / "gradcam" / "eval" / "metrics.json").read_text())
    assert metrics  # eval scored the run
    run = namespace["run"]
    assert run.ids == [f"photo-{i}.png" for i in range(6)]  # type: ignore[attr-defined]
    assert tuple(run.lowres.shape) == (6, 8, 8)  # type: ignore[attr-defined]
    assert namespace["first"].shape == (64, 64)  # type: ignore[attr-defined]
