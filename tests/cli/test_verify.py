"""`fastcam verify RUN`: a summary, exit status 0 for a sound run, 1 for a damaged one, 2 for a usage error;
the other commands refuse a damaged run with a message."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastcam_testkit.runs import chunk_name

from fastcam.cli import main


def test_verify_sound_damaged_and_not_a_run(tmp_path: Path, folder: Path, weights: Path,
                                            capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    out = tmp_path / "run"
    argv = ["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--weights", str(weights), "--layer", "layer4",
            "--data", str(folder), "--out", str(out), "--batch-size", "2", "--size", "16", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 samples, 1 shard(s), 3 batches (complete); 5 explained, 0 skipped" in text and "OK" in text
    (out / chunk_name("logits", 1)).unlink()
    chunk = out / chunk_name("lowres", 2)
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\x00")
    assert main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"DAMAGED {chunk_name('logits', 1)}: chunk missing (batch 1: samples 2-3" in text
    assert f"DAMAGED {chunk_name('lowres', 2)}: chunk altered" in text and "2 problem(s)" in text
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 2  # never read as data
    err = capsys.readouterr().err
    # the first damaged chunk the report's reads touch is named
    assert "is damaged" in err and (chunk_name("logits", 1) in err or chunk_name("lowres", 2) in err)
    assert "Traceback" not in err
    assert main(argv) == 0  # the same command repairs it
    assert main(["verify", str(out)]) == 0
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    assert "not a fastcam run directory" in capsys.readouterr().err
