"""verify_run checks a run batch by batch: its progress callback covers every sample once, and the damage
it finds names the file, the batch and the samples, as a read would."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastcam_testkit.runs import chunk_name, write_synthetic_run

from fastcam.io.run import durable, verify_run


def test_verify_reports_progress_per_batch_and_names_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable, "DURABLE", False)
    root = tmp_path / "run"
    write_synthetic_run(root, 23, world=2, batch_size=4, skip=frozenset({3, 10}))
    seen: list[int] = []
    result = verify_run(root, inputs=False, on_batch=seen.append)
    assert result.ok and result.complete and (result.explained, result.skipped) == (21, 2)
    assert sum(seen) == 23 and len(seen) == result.batches == 3 + 3
    chunk = root / chunk_name("lowres", 2, rank=1, world=2)  # shard 1 rows 8-10: samples 17, 19, 21
    chunk.write_bytes(chunk.read_bytes()[:-1] + b"\x00")
    result = verify_run(root, inputs=False)
    assert [str(d) for d in result.damages] == [
        f"{chunk_name('lowres', 2, rank=1, world=2)}: chunk altered (its CRC-32C checksum does not match its "
        "content) (batch 2: samples 17, 19, ..., 21 ('s/0000017.png' to 's/0000021.png'))"]
    assert result.explained == 21 - 3
