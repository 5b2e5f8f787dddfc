"""Checking a run: each shard against its commit record (`check_shard`: every committed chunk exists, has
its size and passes its CRC-32C), ids.json against run.json, and the whole run (`verify_run`)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

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
    """

    geometry: ShardGeometry
    progress: dict[str, Any] | None = None
    committed: list[int] = field(default_factory=list)
    damages: list[Damage] = field(default_factory=list)
    damaged: set[int] = field(default_factory=set)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    broken_group: bool = False
    broken_arrays: set[str] = field(default_factory=set)

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


def check_shard(directory: RunDirectory, rank: int, world: int, n_items: int, batch_size: int,
                ids: Sequence[Any] | None = None, expect_progress: bool = False, load: bool = True) -> ShardCheck:
    """Check one shard against its commit record and read its committed rows (see the module docstring);
    with `load=False` only `status` and `fingerprint` are kept, the data arrays are checked and dropped.

    Damage is collected, not raised: `open_run` raises it, `verify_run` reports it and `ShardWriter.plan`
    recomputes the damaged batches.
    """
    import zarr

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
        group = zarr.open_group(str(shard_dir), mode="r")
    except Exception as exc:  # noqa: BLE001 - any failure to open is damage
        damage(shard_dir / "zarr.json", f"unreadable Zarr group ({type(exc).__name__}: {exc})", out.committed)
        out.broken_group = True
        return out

    def read(name: str, batches: list[int], keep: bool) -> np.ndarray | None:
        """Check the array's chunks of `batches` (existence, size, CRC-32C); their rows when `keep` (else
        read in bounded spans and dropped: a resume checks a large store without holding it)."""
        path = shard_dir / name
        try:
            arr = group[name]
        except KeyError:
            damage(path, "array missing", batches)
            out.broken_arrays.add(name)
            return None
        except Exception as exc:  # noqa: BLE001
            damage(path / "zarr.json", f"unreadable array metadata ({type(exc).__name__}: {exc})", batches)
            out.broken_arrays.add(name)
            return None
        codecs = [c.to_dict().get("name") for c in arr.metadata.codecs]
        if "crc32c" not in codecs or arr.shape[0] != max(rows, 1) or arr.chunks[0] != batch_size:
            damage(path / "zarr.json", f"array metadata do not match the run (shape {arr.shape}, chunks {arr.chunks}, "
                   f"codecs {codecs})", batches)
            out.broken_arrays.add(name)
            return None
        chunk_bytes = math.prod(arr.chunks) * arr.dtype.itemsize
        good = []
        for b in batches:
            chunk = directory.chunk(rank, world, name, b, arr.ndim)
            try:
                size = chunk.stat().st_size
            except FileNotFoundError:
                damage(chunk, "chunk missing", [b])
                continue
            if size != chunk_bytes + 4:
                damage(chunk, f"chunk {'truncated' if size < chunk_bytes + 4 else 'too long'} ({size} bytes, expected "
                       f"{chunk_bytes + 4})", [b])
                continue
            good.append(b)
        values = np.zeros((rows, *arr.shape[1:]), dtype=arr.dtype) if keep else None
        per_span = max(1, (32 << 20) // max(chunk_bytes, 1))  # batches per read: ~32 MiB at a time
        spans: list[list[int]] = []
        for b in good:  # runs of consecutive batches, each at most `per_span` long
            if spans and spans[-1][-1] == b - 1 and len(spans[-1]) < per_span:
                spans[-1].append(b)
            else:
                spans.append([b])
        for span in spans:
            singles = [[b] for b in span] if len(span) > 1 else []
            for part in (span, *singles):  # the whole span; batch by batch if a chunk fails
                lo, hi = out.batch_rows(part[0]).start, out.batch_rows(part[-1]).stop
                try:
                    block = arr[lo:hi]
                except Exception as exc:  # noqa: BLE001 - a chunk failed its checksum (or could not be decoded)
                    if len(part) == 1:
                        damage(directory.chunk(rank, world, name, part[0], arr.ndim),
                               "chunk altered (its CRC-32C checksum does not match its content)" if "checksum" in str(exc)
                               else f"chunk unreadable ({type(exc).__name__}: {exc})", part)
                    continue
                if values is not None:
                    values[lo:hi] = block
                if part is span:
                    break
        return values

    status = read("status", out.committed, True)
    fingerprint = read("fingerprint", out.committed, True)
    if status is None or fingerprint is None:
        return out
    skipped_index = {int(s["index"]) for s in progress["skipped"]}
    with_data = []
    for b in out.committed:
        if b in out.damaged:
            continue
        r = out.batch_rows(b)
        values = status[r.start:r.stop]
        if not np.isin(values, (EXPLAINED, SKIPPED)).all():
            damage(directory.chunk(rank, world, "status", b, 1),
                   "rows marked neither explained nor skipped (never written)", [b])
            continue
        stored_skips = {rank + world * row for row in r if status[row] == SKIPPED}
        listed = {i for i in skipped_index if i in {rank + world * row for row in r}}
        if stored_skips != listed:
            damage(progress_path, f"its skipped list ({len(listed)} samples) disagrees with the store "
                   f"({len(stored_skips)} marked skipped)", [b])
            continue
        if (values == EXPLAINED).any():
            with_data.append(b)
    data = {"status": status, "fingerprint": fingerprint}
    for name in DATA_ARRAYS:
        if with_data:
            values = read(name, with_data, load)
            if values is not None:
                data[name] = values
    out.data = data
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
    """ids.json, checked against run.json (count, and the hash recorded in the settings)."""
    import hashlib

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
    expected = meta.get("settings", {}).get("data", {}).get("ids_sha256")
    if expected and hashlib.sha256(json.dumps(ids).encode()).hexdigest() != expected:
        return None, [Damage(IDS_JSON, "differs from the ids the run was written with (sha256 mismatch)")]
    return ids, []


def check_run(directory: RunDirectory, load: bool = True
              ) -> tuple[dict[str, Any], list[Any] | None, list[ShardCheck], list[Damage]]:
    """run.json, ids.json and every shard of a run (`check_shard`): (run.json, the ids when sound, the
    shards' checks, every problem)."""
    meta = directory.require_run().read_meta()
    ids, damages = check_ids(directory, meta)
    n, world, batch = int(meta["n_samples"]), int(meta["world_size"]), int(meta["batch_size"])
    shards = [check_shard(directory, rank, world, n, batch, ids, expect_progress=bool(meta.get("complete")), load=load)
              for rank in range(world)]
    for shard in shards:
        damages += shard.damages
    return meta, ids, shards, damages


def verify_run(path: str | os.PathLike[str], *, inputs: bool = True) -> Verification:
    """Check a whole run directory (every committed chunk, the commit records, ids.json) without raising
    on damage; with `inputs`, also compare the input files' fingerprints (folder runs) with the stored
    ones. A legacy run (store format 1, written without checksums) is reported as unverifiable."""
    directory = require_run(path)
    meta = directory.read_meta()
    result = Verification(directory.root, meta, int(meta["n_samples"]), int(meta["world_size"]))
    if meta.get("fastcam_run") != STORE_FORMAT:
        result.damages.append(Damage(RUN_JSON, f"store format {meta.get('fastcam_run')!r} was written without "
                                               "checksums and cannot be verified; explain again to get a verified run"))
        return result
    meta, ids, shards, result.damages = check_run(directory, load=False)
    for shard in shards:
        result.batches += shard.num_batches
        committed = [b for b in shard.committed if b not in shard.damaged]
        result.committed += len(shard.committed)
        status = shard.data.get("status")
        if status is not None:
            rows = [r for b in committed for r in shard.batch_rows(b)]
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
            rows = [r for b in shard.committed if b not in shard.damaged for r in shard.batch_rows(b)]
            names = [str(ids[shard.rank + shard.world * r]) for r in rows]
            now = file_fingerprints(data["root"], names, mode)
            result.changed_inputs += [name for name, a, b in zip(names, stored[rows], now) if a != b]
    return result
