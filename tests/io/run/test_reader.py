"""Lazy runs: slices, fancy indices, by-id access and iter_batches equal an eager reading of the shards
through Zarr itself (the oracle), on multi-shard runs with skipped samples, float16 and float32 stores; a
damaged chunk raises only when a read touches it, naming it; open_run's memory stays small."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from fastcam_testkit.runs import chunk_name, write_synthetic_run

from fastcam.errors import RunDamagedError
from fastcam.io.run import RunDirectory, open_run
from fastcam.io.run import durable

N, WORLD, BATCH = 29, 3, 4
SKIP = frozenset({0, 7, 8, 20})


def _eager(root: Path) -> dict[str, np.ndarray]:
    """Every explained sample read whole with Zarr, merged into dataset order (the reading before lazy runs)."""
    directory = RunDirectory(root)
    meta = directory.read_meta()
    world, n = meta["world_size"], meta["n_samples"]
    rows: dict[int, dict[str, np.ndarray]] = {}
    for rank in range(world):
        group = zarr.open_group(str(directory.shard(rank, world)), mode="r")
        status = group["status"][:]
        for row in np.flatnonzero(status == 1):
            rows[rank + world * int(row)] = {
                "lowres": group["lowres"][row].astype(np.float32) * group["scale"][row],
                "scale": group["scale"][row], "logits": group["logits"][row], "targets": group["targets"][row],
                "predicted": group["predicted"][row]}
    order = sorted(rows)
    assert all(i < n for i in order)
    return {"indices": np.array(order), **{k: np.stack([rows[i][k] for i in order]) for k in rows[order[0]]}}


@pytest.fixture(params=["float16", "float32"])
def stored(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list, dict]:
    monkeypatch.setattr(durable, "DURABLE", False)  # no fsync: the reads are under test
    root = tmp_path / "run"
    ids = write_synthetic_run(root, N, world=WORLD, batch_size=BATCH, dtype=request.param, skip=SKIP)
    return root, ids, _eager(root)


def test_reads_equal_the_eager_reading(stored: tuple[Path, list, dict]) -> None:
    root, ids, eager = stored
    run = open_run(root)
    assert len(run) == N - len(SKIP) and run.indices.tolist() == eager["indices"].tolist()
    assert run.ids == [ids[i] for i in eager["indices"]] and {s["index"] for s in run.skipped} == SKIP
    assert run.lowres.shape == (len(run), 3, 3) and run.lowres.dtype == torch.float32 and run.lowres.dim() == 3
    assert run.logits.shape == (len(run), 5) and run.targets.dtype == torch.int64
    names = ("lowres", "scale", "logits", "targets", "predicted")
    for name in names:
        array, want = getattr(run, name), torch.from_numpy(eager[name])
        assert torch.equal(array[:], want) and torch.equal(array.load(), want)
        assert torch.equal(torch.from_numpy(np.asarray(array[3:17])), want[3:17])
        assert torch.equal(array[::-3], want.flip(0)[::3])
        assert torch.equal(array[5], want[5]) and torch.equal(array[-1], want[-1])
        fancy = torch.tensor([9, 0, 9, len(run) - 1, 4])
        assert torch.equal(array[fancy], want[fancy]) and torch.equal(array[fancy.numpy()], want[fancy])
        assert torch.equal(array[[2, 1]], want[[2, 1]])
        mask = torch.arange(len(run)) % 3 == 1
        assert torch.equal(array[mask], want[mask])
        assert array[10:10].shape == (0, *want.shape[1:])
    assert torch.equal(run.lowres[2:6, 1], torch.from_numpy(eager["lowres"])[2:6, 1])
    with pytest.raises(IndexError, match="out of range"):
        run.logits[len(run)]
    # by id, and the full stream in dataset order
    sample = run.sample(ids[13])
    row = run.ids.index(ids[13])
    assert (sample.row, sample.index, sample.id) == (row, 13, ids[13])
    assert torch.equal(sample.lowres, torch.from_numpy(eager["lowres"][row])) and sample.target == eager["targets"][row]
    assert run.sample(row).id == ids[13]
    with pytest.raises(KeyError, match="not an explained sample"):
        run.sample(ids[7])  # skipped
    batches = list(run.iter_batches(6))
    assert [len(b.rows) for b in batches] == [6, 6, 6, 6, 1]
    assert sum((b.ids for b in batches), []) == run.ids
    for name in names:
        assert torch.equal(torch.cat([getattr(b, name) for b in batches]), torch.from_numpy(eager[name]))
    torch.testing.assert_close(run.scores, torch.softmax(torch.from_numpy(eager["logits"]), 1).gather(
        1, torch.from_numpy(eager["targets"]).view(-1, 1)).squeeze(1))


def test_a_damaged_chunk_raises_only_when_a_read_touches_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durable, "DURABLE", False)
    root = tmp_path / "run"
    ids = write_synthetic_run(root, N, world=WORLD, batch_size=BATCH, skip=SKIP)
    chunk = root / chunk_name("logits", 1, rank=2, world=WORLD)  # shard 2 rows 4-7: samples 14, 17, 20, 23
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 0x01
    chunk.write_bytes(bytes(raw))
    (root / chunk_name("status", 0, rank=1, world=WORLD)).unlink()  # shard 1 rows 0-3: samples 1, 4, 7, 10
    run = open_run(root)  # reads no chunk
    row = {sid: r for r, sid in enumerate(run.ids)}
    untouched = [r for r, i in enumerate(run.indices.tolist()) if i not in (14, 17, 20, 23, 1, 4, 7, 10)]
    assert run.logits[untouched].shape == (len(untouched), 5)
    assert run.lowres[row[ids[14]]].shape == (3, 3)  # another array of that batch is sound
    with pytest.raises(RunDamagedError) as info:
        run.logits[row[ids[17]]]
    message = str(info.value)
    assert chunk_name("logits", 1, rank=2, world=WORLD) in message and "checksum" in message
    assert "batch 1" in message and "samples 14, 17, ..., 23" in message and repr(ids[14]) in message
    with pytest.raises(RunDamagedError, match=f"{chunk_name('status', 0, rank=1, world=WORLD)}: chunk missing"):
        run.sample(ids[4])
    with pytest.raises(RunDamagedError, match="status/c.0: chunk missing"):  # the first damage in dataset order
        for _ in run.iter_batches(8):
            pass


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset the peak RSS")
def test_open_run_memory_on_a_200000_sample_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_run reads run.json, ids and the commit records only: the peak RSS grows by far less than the
    arrays (logits 80 MB, maps 20 MB; the eager reader this replaced grew by about 430 MB)."""
    monkeypatch.setattr(durable, "DURABLE", False)
    root = tmp_path / "big"
    n = 200_000
    write_synthetic_run(root, n, batch_size=25_000, dtype="float16", spatial=(7, 7), classes=100, skip=frozenset({5}))
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) restarts from the current RSS
    before = _status_mib("VmRSS")
    run = open_run(root)
    growth = _status_mib("VmHWM") - before
    assert len(run) == n - 1 and run.logits[123_456].shape == (100,)
    assert growth <= 100, f"open_run grew the peak RSS by {growth:.0f} MiB"
