"""`fastcam verify RUN`: a summary, exit status 0 for a sound run, 1 for a damaged one, 2 for a usage error;
the other commands refuse a damaged run with a message."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from fastcam_testkit.runs import chunk_name

from fastcam.cli import main
from fastcam.errors import RunDamagedError
from fastcam.io.run import RunDirectory, open_run


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


def _explained(tmp_path: Path, folder: Path, weights: Path, *extra: str) -> tuple[Path, list[str]]:
    out = tmp_path / "run"
    argv = ["explain", "--model", "fastcam:tiny_resnet", "--num-classes", "3", "--weights", str(weights), "--layer",
            "layer3", "--data", str(folder), "--out", str(out), "--batch-size", "2", "--size", "16", "--quiet", *extra]
    assert main(argv) == 0
    return out, argv


def _edit_json(path: Path, edit) -> None:  # noqa: ANN001
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


@pytest.mark.parametrize("field,value,shown", [
    ("fastcam_run", 1, "'fastcam_run' is 1"),        # a format-2 store labelled format 1: KeyError 'ok' before
    ("batch_size", 0, "'batch_size' is 0"),          # ZeroDivisionError in verify, open_run and the rerun before
    ("batch_size", "8", "'batch_size' is '8'"),      # accepted silently before
    ("n_samples", -1, "'n_samples' is -1"),
])
def test_an_edited_run_json_is_damage_naming_the_field(field: str, value: object, shown: str, tmp_path: Path,
                                                       folder: Path, weights: Path, capsys: pytest.CaptureFixture[str],
                                                       one_thread: None) -> None:
    """Issue 26 item 5: run.json is validated against one schema; the field is named, no traceback."""
    out, argv = _explained(tmp_path, folder, weights)
    capsys.readouterr()
    _edit_json(RunDirectory(out).run_json, lambda meta: {**meta, field: value})
    assert main(["verify", str(out)]) == 1
    assert shown in capsys.readouterr().out
    with pytest.raises(RunDamagedError, match=shown):
        open_run(out)
    assert main(argv) == 2  # the rerun: one line naming the field
    err = capsys.readouterr().err
    assert shown in err and "Traceback" not in err


def test_verify_exit_status_for_damaged_records(tmp_path: Path, folder: Path, weights: Path,
                                                capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    """Issue 26 item 6: a complete run whose progress file lost batches verified as sound (exit 0); a garbage
    run.json exited 2 (usage error) instead of 1 (damaged); ids.json reordered after its hash was removed from
    run.json was read silently (the hash is required for runs of this format)."""
    out, _ = _explained(tmp_path, folder, weights)
    directory = RunDirectory(out)
    progress = directory.progress(0, 1)
    saved = progress.read_text()
    _edit_json(progress, lambda p: {**p, "committed_batches": 1, "commits": [[p["commits"][0][0], 0, 0]]})
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert "records 1 of 3 batches, but run.json says the run is complete" in capsys.readouterr().out
    progress.write_text(saved)
    assert main(["verify", str(out)]) == 0

    meta = directory.run_json.read_text()
    directory.run_json.write_text("{garbage")
    assert main(["verify", str(out)]) == 1
    assert "DAMAGED run.json: unreadable" in capsys.readouterr().out
    directory.run_json.write_text(meta)

    def drop_hash(m: dict) -> dict:
        m.pop("ids_sha256", None)
        m["settings"]["data"].pop("ids_sha256", None)
        return m

    _edit_json(directory.run_json, drop_hash)
    _edit_json(directory.ids_json, lambda ids: ids[::-1])
    assert main(["verify", str(out)]) == 1
    assert "'ids_sha256' is missing" in capsys.readouterr().out
    with pytest.raises(RunDamagedError, match="ids_sha256"):
        open_run(out)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_hostile_ids_are_refused_not_read(tmp_path: Path, folder: Path, weights: Path,
                                          capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    """Issue 26 item 3: `verify` (with content fingerprints, `--hash-inputs`) read whatever ids.json named:
    /dev/zero read forever. Ids that are absolute or hold '..' are damage in verify and every reader; an id
    naming something that is not a regular file (a FIFO) is never opened."""
    out, _ = _explained(tmp_path, folder, weights, "--hash-inputs")
    directory = RunDirectory(out)

    def with_ids(ids: list) -> None:  # a hostile directory keeps its records consistent
        directory.ids_json.write_text(json.dumps(ids))
        digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()
        _edit_json(directory.run_json, lambda m: {**m, "ids_sha256": digest,
                                                   "settings": {**m["settings"], "data": {**m["settings"]["data"], "ids_sha256": digest}}})

    ids = json.loads(directory.ids_json.read_text())
    for hostile, problem in (("/dev/zero", "is an absolute path"), ("../../etc/passwd", "has a '..' part")):
        with_ids([hostile, *ids[1:]])
        capsys.readouterr()
        assert main(["verify", str(out)]) == 1
        assert problem in capsys.readouterr().out
        with pytest.raises(RunDamagedError, match=problem):
            open_run(out)
    os.mkfifo(folder / "fifo")
    with_ids(["fifo", *ids[1:]])
    assert main(["verify", str(out)]) == 0  # returns: the FIFO is not opened, it reads as a changed input
    assert "1 input file(s) changed" in capsys.readouterr().out
