"""fastcam.io.run.durable: the files a run writes atomically get the permissions of any new file."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fastcam.io.run import RunDirectory
from fastcam.io.run.durable import write_json_atomic
from fastcam_testkit.runs import write_synthetic_run


@pytest.fixture
def umask_022():  # noqa: ANN201
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_run_files_and_shard_folders_are_readable_by_others_as_chunks_are(tmp_path: Path, umask_022: None) -> None:
    """Issue 26 item 8: run.json, ids.json and progress files were 0600 (tempfile.mkstemp) and shard folders
    0700 (mkdtemp), unlike the 0644 chunks: a run shared with a colleague could not be opened by them."""
    root = tmp_path / "run"
    write_synthetic_run(root, 1, batch_size=1)
    directory = RunDirectory(root)
    chunks = [p for p in directory.shard(0, 1).rglob("*") if p.is_file()]
    assert chunks and {_mode(p) for p in chunks} == {0o644}
    for path in (directory.run_json, directory.ids_json, directory.progress(0, 1)):
        assert _mode(path) == 0o644, path.name
    assert _mode(directory.shard(0, 1)) == 0o755
    write_json_atomic(tmp_path / "x.json", {}, exclusive=True)
    assert _mode(tmp_path / "x.json") == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
