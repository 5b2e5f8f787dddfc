"""A damaged run directory is refused, never read as data, and re-running the same call repairs exactly the
damaged batches (and the batches whose input files changed), ending equal to an undamaged run."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from fastcam_testkit.runs import LAYOUT, chunk_name, progress_name

from fastcam.errors import RunDamagedError
from fastcam.io.run import Run, RunDirectory, open_run, verify_run
from fastcam.models import tiny_resnet
from fastcam.pipeline import explain_dataset

SHARD = LAYOUT.shard(0, 1).name
PROGRESS = progress_name()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_resnet(num_classes=4).eval()


def _explain(data: Path, out: Path) -> Run:
    # one unreadable file of 9 (11 %) is what these runs skip on purpose: allowed past the 10 % default
    return explain_dataset(_model(), data, method="gradcam", target_layer="layer4", out=out, batch_size=2,
                           progress=False, max_skip_fraction=0.2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Run]:
    """8 images and one unreadable file (sample 0, skipped) in 5 batches of 2, explained once."""
    from conftest import _write_images  # the shared image writer (a module-scoped fixture cannot take fixtures)

    root = tmp_path_factory.mktemp("repair")
    data = root / "data"
    _write_images(data, 8, size=16)
    (data / "broken.png").write_bytes(b"not a png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = _explain(data, root / "ref")
    finally:
        torch.set_num_threads(threads)
    assert len(run) == 8 and [s["id"] for s in run.skipped] == ["broken.png"]
    return root, data, run


def _assert_equal(a: Run, b: Run) -> None:
    assert a.ids == b.ids
    assert [(s["index"], s["id"]) for s in a.skipped] == [(s["index"], s["id"]) for s in b.skipped]
    assert torch.equal(a.lowres, b.lowres)  # bit-identical maps
    assert torch.equal(a.logits, b.logits) and torch.equal(a.targets, b.targets) and torch.equal(a.predicted, b.predicted)


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[3] ^= 0x10
    path.write_bytes(bytes(raw))


def _shorten_ids(run_dir: Path) -> None:
    ids_json = RunDirectory(run_dir).ids_json
    ids_json.write_text(json.dumps(json.loads(ids_json.read_text())[:-1]))


# (damage, files/words the error must name, batches recomputed by the repair)
DAMAGE: dict[str, tuple[Callable[[Path], Any], list[str], list[int]]] = {
    "deleted lowres chunk": (lambda r: (r / chunk_name("lowres", 1)).unlink(),
                             [chunk_name("lowres", 1), "chunk missing", "batch 1", "samples 2-3"], [1]),
    "deleted scale chunk": (lambda r: (r / chunk_name("scale", 2)).unlink(),
                            [chunk_name("scale", 2), "chunk missing", "batch 2", "samples 4-5"], [2]),
    "deleted logits chunk": (lambda r: (r / chunk_name("logits", 0)).unlink(),
                             [chunk_name("logits", 0), "batch 0", "samples 0-1"], [0]),
    "deleted status (ok) chunk": (lambda r: (r / chunk_name("status", 3)).unlink(),
                                  [chunk_name("status", 3), "batch 3", "samples 6-7"], [3]),
    "deleted shard folder": (lambda r: shutil.rmtree(r / SHARD),
                             [SHARD, "shard folder missing", "batches 0-4", "samples 0-8"], [0, 1, 2, 3, 4]),
    "shortened ids.json": (_shorten_ids, [LAYOUT.ids_json.name, "holds 8 ids", "9 samples"], []),
    "bit flip": (lambda r: _flip(r / chunk_name("lowres", 4)),
                 [chunk_name("lowres", 4), "checksum", "batch 4", "sample 8"], [4]),
    "truncated chunk": (lambda r: (r / chunk_name("targets", 2)).write_bytes((r / chunk_name("targets", 2)).read_bytes()[:5]),
                        [chunk_name("targets", 2), "truncated (5 bytes", "batch 2"], [2]),
    "corrupt progress file": (lambda r: (r / PROGRESS).write_text('{"committed_batches": 5, "comm'),
                              [PROGRESS, "unreadable", "batches 0-4"], [0, 1, 2, 3, 4]),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_refused_by_reading_then_repaired_by_rerunning(
        kind: str, reference: tuple[Path, Path, Run], tmp_path: Path, one_thread: None,
        read_progress: Callable[..., dict[str, Any]], commit_log: Callable[..., list[tuple[int, int]]]) -> None:
    root, data, ref = reference
    damage, words, recomputed = DAMAGE[kind]
    run_dir = tmp_path / "run"
    shutil.copytree(root / "ref", run_dir)
    damage(run_dir)
    with pytest.raises(RunDamagedError) as info:  # at open (run-wide files), else at the read touching it
        for _ in open_run(run_dir).iter_batches(4):
            pass
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert not verify_run(run_dir).ok
    repaired = _explain(data, run_dir)
    _assert_equal(repaired, ref)
    _assert_equal(open_run(run_dir), ref)
    assert verify_run(run_dir).ok
    if kind != "corrupt progress file":  # that one starts its shard over: one new session
        log = commit_log(read_progress(run_dir))
        assert [b for b, session in log if session == 2] == recomputed, log
        assert [b for b, session in log if session == 1] == [0, 1, 2, 3, 4]


def test_changed_input_is_explained_again(reference: tuple[Path, Path, Run], tmp_path: Path, one_thread: None,
                                          read_progress: Callable[..., dict[str, Any]],
                                          commit_log: Callable[..., list[tuple[int, int]]]) -> None:
    """Only the batch of the changed file is recomputed; the result equals a fresh run on the new files."""
    root, data, ref = reference
    new_data = tmp_path / "data"
    shutil.copytree(data, new_data)
    run_dir = tmp_path / "run"
    shutil.copytree(root / "ref", run_dir)
    meta = json.loads(RunDirectory(run_dir).run_json.read_text())  # the copied run points at the copied images
    meta["settings"]["data"]["root"] = str(new_data.resolve())
    RunDirectory(run_dir).run_json.write_text(json.dumps(meta))
    changed = new_data / ref.ids[4]  # sample 5: batch 2
    shutil.copyfile(new_data / ref.ids[0], changed)  # same size, other content
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    result = verify_run(run_dir)
    assert result.ok and result.changed_inputs == [ref.ids[4]]
    repaired = _explain(new_data, run_dir)
    assert [b for b, session in commit_log(read_progress(run_dir)) if session == 2] == [2]
    _assert_equal(repaired, _explain(new_data, tmp_path / "fresh"))
    assert not torch.equal(repaired.lowres[4], ref.lowres[4])


def test_a_kill_during_a_progress_write_leaves_nothing_behind(reference: tuple[Path, Path, Run], tmp_path: Path,
                                                               one_thread: None) -> None:
    root, data, ref = reference
    run_dir = tmp_path / "run"
    shutil.copytree(root / "ref", run_dir)
    leftovers = [run_dir / f".{PROGRESS}.k1ll3d.tmp", run_dir / f".{LAYOUT.run_json.name}.x.tmp",
                 run_dir / f".{LAYOUT.ids_json.name}.y.tmp",
                 run_dir / f"{chunk_name('lowres', 1)}.abc.partial"]
    for path in leftovers:
        path.write_text("half")
    (run_dir / f".{SHARD}.creating123").mkdir()
    _assert_equal(_explain(data, run_dir), ref)
    assert not any(p.exists() for p in leftovers) and not list(run_dir.glob("*.creating*"))


def test_fill_values_never_mean_skipped(reference: tuple[Path, Path, Run]) -> None:
    """Skipped samples are stored explicitly (status 2) and listed; every committed batch has its chunks."""
    root, _, ref = reference
    import zarr

    status = zarr.open_array(str(root / "ref" / SHARD / "status"), mode="r")[:]
    assert status.tolist() == [2] + [1] * 8
    directory = RunDirectory(root / "ref")
    assert all(directory.chunk(0, 1, name, b, nd).is_file() for b in range(5)
               for name, nd in (("lowres", 3), ("scale", 1), ("logits", 2), ("status", 1), ("fingerprint", 1)))
