"""`fastcam serve`'s flags and its refusals before anything starts (the service itself: tests/serve/)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from fastcam.cli import main


@pytest.mark.parametrize("flags,message", [
    (["--layer", "layer9"], "layer9"),
    (["--layer", "layer4", "--weights", "missing.safetensors"], "missing.safetensors"),
    (["--layer", "layer4", "--classes", "CLASSES"], "2 class names given for a model with 5 classes"),
    (["--layer", "layer4", "--max-batch-size", "0"], "max_batch_size must be a positive integer"),
])
def test_a_bad_option_is_refused_before_ray_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     flags: list[str], message: str) -> None:
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    flags = [str(tmp_path / "classes.txt") if f == "CLASSES" else f for f in flags]
    start = time.perf_counter()
    status = main(["serve", "--model", "fastcam:tiny_resnet", "--size", "32", "--port", "1", *flags])
    assert status == 2 and message in capsys.readouterr().err
    assert time.perf_counter() - start < 20  # no Ray start-up (15-80 s here) nor Serve's retries
