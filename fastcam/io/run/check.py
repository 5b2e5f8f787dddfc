"""Checking a run: each shard against its commit record (`check_shard`: every committed chunk exists, has
its size and passes its CRC-32C), ids.json against run.json, and the whole run (`verify_run`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fastcam.io.run.chunks import ChunkProblem, ChunkSpec, array_spec, chunk_paths, read_chunk, read_node
from fastcam.io.run.damage import Damage, describe_samples, relative_path
from fastcam.io.run.layout import RunDirectory, require_run
from fastcam.io.run.schema import DATA_ARRAYS, EXPLAINED, IDS_JSON, RUN_JSON, SKIPPED, STORE_FORMAT, ShardGeometry


def progress_problem(p: Any, num_batches: int) -> str | None:
    """What is wrong with a commit record, or None."""
    if not isinstance(p, dict):
        return "is not a JSON object"

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    c = p.get("committed_batches")
    if not is_int(c) or not 0 <= c <= num_batches:
        return f"committed_batches {c!r} is not a batch count of this shard (0 to {num_batches})"
    commits = p.get("commits")
    if not isinstance(commits, list) or not all(
            isinstance(r, list) and len(r) == 3 and all(map(is_int, r)) and 0 <= r[1] <= r[2] < num_batches
            for r in commits):
        return "its commit log is malformed"
    redo = p.get("redo", [])
    if not isinstance(redo, list) or not all(is_int(b) and 0 <= b < c for b in redo):
        return "its list of batches being recomputed is malformed"
    skipped = p.get("skipped")
    if not isinstance(skipped, list) or not all(isinstance(s, dict) and is_int(s.get("index")) and "id" in s
                                                and isinstance(s.get("error"), str) for s in skipped):
        return "its list of skipped samples is malformed"
    if not isinstance(p.get("seconds"), (int, float)) or not is_int(p.get("images")) or not is_int(p.get("sessions")):
        return "its timings are malformed"
    if not isinstance(p.get("devices"), list):
        return "its device list is malformed"
    return None


@dataclass
class ShardCheck:
    """What `check_shard` found in one shard: its commit record, the rows of its committed batches (when
    `load`), the damage, and which arrays or whether the whole group must be rebuilt.

    Attributes:
        geometry: the shard's rows and batches.
        progress: its commit record (None when unreadable).
        committed: its committed batches (those being recomputed left out).
        damages: every problem found; damaged: the batches they make unreadable.
        data: the arrays' rows that were kept (`status`, `fingerprint`; the data arrays when `load`).
        broken_group, broken_arrays: whether the whole group, or which arrays, must be rebuilt.
        specs: the chunk layout of each array whose metadata are sound.
    """

    geometry: ShardGeometry
    progress: dict[str, Any] | None = None
    committed: list[int] = field(default_factory=list)
    damages: list[Damage] = field(default_factory=list)
    damaged: set[int] = field(default_factory=set)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    broken_group: bool = False
    broken_arrays: set[str] = field(default_factory=set)
    specs: dict[str, ChunkSpec] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """The shard's rank."""
        return self.geometry.rank

    @property
    def world(self) -> int:
        """The number of shards."""
        return self.geometry.world

    @property
    def num_batches(self) -> int:
        """Batches of the shard."""
        return self.geometry.num_batches

    def batch_rows(self, batch: int) -> range:
        """The shard rows of batch `batch`."""
        return self.geometry.batch_rows(batch)


def skipped_rows(progress: dict[str, Any], geometry: ShardGeometry) -> np.ndarray:
    """The shard rows the commit record lists as skipped, sorted."""
    index = np.array([int(s["index"]) for s in progress.get("skipped", [])], dtype=np.int64)
    rows = (index[index % geometry.world == geometry.rank] - geometry.rank) // geometry.world
    return np.sort(rows[(rows >= 0) & (rows < geometry.rows)])


def status_problem(values: np.ndarray, geometry: ShardGeometry, batch: int, skipped: np.ndarray) -> tuple[str, str] | None:
    """What is wrong with the status rows `values` of batch `batch` (read from its chunk) against the
    shard rows `skipped` (sorted) of the commit record: None, or ("status" or "progress", the problem)."""
    r = geometry.batch_rows(batch)
    values = values[: len(r)]
    if not ((values == EXPLAINED) | (values == SKIPPED)).all():
        return "status", "rows marked neither explained nor skipped (never written)"
    stored = np.flatnonzero(values == SKIPPED) + r.start
    listed = skipped[np.searchsorted(skipped, r.start):np.searchsorted(skipped, r.stop)]
    if not np.array_equal(stored, listed):
        return "progress", (f"its skipped list ({len(listed)} samples) disagrees with the store "
                            f"({len(stored)} marked skipped)")
    return None


def check_shard(directory: RunDirectory, rank: int, world: int, n_items: int, batch_size: int,
                ids: Sequence[Any] | None = None, expect_progress: bool = False, load: bool = True,
                chunks: bool = True, on_batch: Callable[[int], None] | None = None) -> ShardCheck:
    """Check one shard against its commit record (see the module docstring), batch by batch: every
    committed chunk is read once and checked (size, CRC-32C), then dropped, so memory stays flat. Kept:
    `status` and `fingerprint` (one byte and eight per row), and the data arrays' rows when `load`.
    With `chunks=False` only the commit record and the arrays' metadata are checked (what `open_run`
    does; it checks each chunk when a read touches it). `on_batch(rows)` is called after each batch.

    Damage is collected, not raised: `open_run` raises it, `verify_run` reports it and `ShardWriter.plan`
    recomputes the damaged batches.
    """
    out = ShardCheck(ShardGeometry(n_items, rank, world, batch_size))
    rows = out.geometry.rows
    root = directory.root
    progress_path = directory.progress(rank, world)

    def damage(path: Path, problem: str, batches: Sequence[int]) -> None:
        batches = sorted(set(batches))
        out.damaged.update(batches)
        covered = [r for b in batches for r in out.batch_rows(b)]
        out.damages.append(Damage(relative_path(path, root), problem, rank, tuple(batches),
                                  describe_samples(rank, world, covered, ids) if batches else ""))

    if expect_progress and not progress_path.exists():
        damage(progress_path, "missing, but run.json says the run is complete", range(out.num_batches))
        return out
    try:
        progress = directory.read_progress(rank, world)
    except (OSError, ValueError) as exc:
        damage(progress_path, f"unreadable ({type(exc).__name__}: {exc})", range(out.num_batches))
        return out
    problem = progress_problem(progress, out.num_batches)
    if problem:
        damage(progress_path, problem, range(out.num_batches))
        return out
    out.progress = progress
    redo = set(progress.get("redo", []))
    out.committed = [b for b in range(progress["committed_batches"]) if b not in redo]
    if not out.committed:
        return out
    shard_dir = directory.shard(rank, world)
    if not shard_dir.is_dir():
        damage(shard_dir, "shard folder missing", out.committed)
        out.broken_group = True
        return out
    try:
        if read_node(shard_dir).get("node_type") != "group":
            raise ValueError("not a group")
    except (OSError, ValueError) as exc:  # any failure to read it is damage
        damage(shard_dir / "zarr.json", f"unreadable Zarr group ({type(exc).__name__}: {exc})", out.committed)
        out.broken_group = True
        return out

    def open_array(name: str) -> None:
        """Check the array's metadata against the run; its chunk layout goes to `out.specs`."""
        spec, problem, where = array_spec(shard_dir / name, rows, batch_size)
        if spec is None:
            damage(where, problem, out.committed)
            out.broken_arrays.add(name)
        else:
            out.specs[name] = spec

    skipped = skipped_rows(progress, out.geometry)
    committed = np.zeros(out.num_batches, dtype=bool)
    committed[out.committed] = True
    explained = sum(len(out.batch_rows(b)) for b in out.committed) - int(committed[skipped // batch_size].sum())
    for name in ("status", "fingerprint", *(DATA_ARRAYS if explained > 0 else ())):
        open_array(name)
    if not chunks or "status" not in out.specs or "fingerprint" not in out.specs:
        return out
    kept = {name: np.zeros((rows, *out.specs[name].shape[1:]), out.specs[name].dtype)
            for name in ("status", "fingerprint", *(DATA_ARRAYS if load else ())) if name in out.specs}

    paths = {name: chunk_paths(directory, rank, world, name, spec.ndim) for name, spec in out.specs.items()}

    def read(name: str, batch: int) -> np.ndarray | None:
        spec, path = out.specs[name], paths[name](batch)
        try:
            values = read_chunk(path, spec)
        except ChunkProblem as exc:
            damage(path, str(exc), [batch])
            return None
        if name in kept:
            r = out.batch_rows(batch)
            kept[name][r.start:r.stop] = values[: len(r)]
        return values

    for b in out.committed:
        status, fingerprint = read("status", b), read("fingerprint", b)
        if status is not None and fingerprint is not None:
            found = status_problem(status, out.geometry, b, skipped)
            if found:
                where = directory.chunk(rank, world, "status", b, 1) if found[0] == "status" else progress_path
                damage(where, found[1], [b])
            elif (status == EXPLAINED).any():
                for name in DATA_ARRAYS:
                    if name in out.specs:
                        read(name, b)
        if on_batch is not None:
            on_batch(len(out.batch_rows(b)))
    out.data = kept
    return out


@dataclass
class Verification:
    """What `verify_run` found: the run's size and state, and every problem.

    Attributes:
        path: the run directory.
        meta: its run.json.
        n_samples: samples of the dataset (run.json).
        world_size: shards (run.json).
        batches: batches of all shards.
        committed: those committed.
        explained: committed samples explained.
        skipped: committed samples skipped.
        damages: every problem (`Damage`); empty for a sound run.
        changed_inputs: ids of committed samples whose input file changed (or vanished) since it was
            explained (folder runs; not damage: re-running `fastcam explain` updates them).
    """

    path: Path
    meta: dict[str, Any]
    n_samples: int
    world_size: int
    batches: int = 0
    committed: int = 0
    explained: int = 0
    skipped: int = 0
    damages: list[Damage] = field(default_factory=list)
    changed_inputs: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the run is sound (no damage)."""
        return not self.damages

    @property
    def complete(self) -> bool:
        """Whether every batch is committed."""
        return self.committed == self.batches


def check_ids(directory: RunDirectory, meta: dict[str, Any]) -> tuple[list[Any] | None, list[Damage]]:
    """ids.json, checked against run.json (count, and the hash it records) and against what an id may be
    (`record.sample_id_problem`: an index, or a path that stays under the data root)."""
    from fastcam.io.run.record import ids_hash, recorded_ids_hash, sample_id_problem

    try:
        ids = directory.read_ids()
    except FileNotFoundError:
        return None, [Damage(IDS_JSON, "missing")]
    except (OSError, ValueError) as exc:
        return None, [Damage(IDS_JSON, f"unreadable ({type(exc).__name__}: {exc})")]
    if not isinstance(ids, list):
        return None, [Damage(IDS_JSON, "is not a JSON list")]
    n = int(meta["n_samples"])
    if len(ids) != n:
        return None, [Damage(IDS_JSON, f"holds {len(ids)} ids, run.json says {n} samples")]
    expected = recorded_ids_hash(meta)
    if expected and ids_hash(ids) != expected:
        return None, [Damage(IDS_JSON, "differs from the ids the run was written with (sha256 mismatch)")]
    for index, sample_id in enumerate(ids):
        problem = sample_id_problem(sample_id)
        if problem:
            return None, [Damage(IDS_JSON, f"sample {index}'s id {sample_id!r} {problem}: an id is a dataset index or "
                                           "a path under the data root")]
    return ids, []


def check_run(directory: RunDirectory, load: bool = True, chunks: bool = True,
              on_batch: Callable[[int], None] | None = None
              ) -> tuple[dict[str, Any], list[Any] | None, list[ShardCheck], list[Damage]]:
    """run.json, ids.json and every shard of a run (`check_shard`, whose `load`, `chunks` and `on_batch`
    these are): (run.json, the ids when sound, the shards' checks, every problem)."""
    meta = directory.require_run().read_meta()
    ids, damages = check_ids(directory, meta)
    n, world, batch = int(meta["n_samples"]), int(meta["world_size"]), int(meta["batch_size"])
    shards = [check_shard(directory, rank, world, n, batch, ids, expect_progress=bool(meta.get("complete")), load=load,
                          chunks=chunks, on_batch=on_batch) for rank in range(world)]
    for shard in shards:
        damages += shard.damages
    return meta, ids, shards, damages


def committed_rows(shard: ShardCheck) -> np.ndarray:
    """The rows of a shard's committed, undamaged batches."""
    return np.concatenate([np.arange(r.start, r.stop) for r in map(shard.batch_rows, shard.committed)
                           if r.start // shard.geometry.batch_size not in shard.damaged] or [np.zeros(0, np.int64)])


def verify_run(path: str | os.PathLike[str], *, inputs: bool = True,
               on_batch: Callable[[int], None] | None = None) -> Verification:
    """Check a whole run directory (every committed chunk, the commit records, ids.json) without raising
    on damage, chunk by chunk in flat memory; with `inputs`, also compare the input files' fingerprints
    (folder runs) with the stored ones. `on_batch(rows)` is called after each checked batch (a progress
    bar). A legacy run (store format 1, written without checksums) is reported as unverifiable."""
    directory = require_run(path)
    meta = directory.read_meta()
    result = Verification(directory.root, meta, int(meta["n_samples"]), int(meta["world_size"]))
    if meta.get("fastcam_run") != STORE_FORMAT:
        result.damages.append(Damage(RUN_JSON, f"store format {meta.get('fastcam_run')!r} was written without "
                                               "checksums and cannot be verified; explain again to get a verified run"))
        return result
    meta, ids, shards, result.damages = check_run(directory, load=False, on_batch=on_batch)
    for shard in shards:
        result.batches += shard.num_batches
        result.committed += len(shard.committed)
        if meta.get("complete") and shard.progress is not None and len(shard.committed) < shard.num_batches:
            lost = sorted(set(range(shard.num_batches)) - set(shard.committed))
            rows = [r for b in lost for r in shard.batch_rows(b)]
            result.damages.append(Damage(
                directory.progress(shard.rank, shard.world).name,
                f"records {len(shard.committed)} of {shard.num_batches} batches, but run.json says the run is complete",
                shard.rank, tuple(lost), describe_samples(shard.rank, shard.world, rows, ids)))
        status = shard.data.get("status")
        if status is not None:
            rows = committed_rows(shard)
            result.explained += int((status[rows] == EXPLAINED).sum())
            result.skipped += int((status[rows] == SKIPPED).sum())
    data = meta.get("settings", {}).get("data", {})
    if inputs and ids is not None and data.get("kind") == "folder" and Path(data.get("root", "")).is_dir():
        from fastcam.io.images import file_fingerprints

        mode = meta.get("settings", {}).get("fingerprint", "stat")
        for shard in shards:
            stored = shard.data.get("fingerprint")
            if stored is None:
                continue
            rows = committed_rows(shard)
            names = [str(ids[shard.rank + shard.world * int(r)]) for r in rows]
            now = file_fingerprints(data["root"], names, mode)
            result.changed_inputs += [name for name, a, b in zip(names, stored[rows], now) if a != b]
    return result
