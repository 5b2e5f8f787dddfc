"""Writing a shard batch by batch (`ShardWriter`): the chunks of a batch, then its commit."""
from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from fastcam.io.run.check import check_shard, progress_problem
from fastcam.io.run.damage import Damage
from fastcam.io.run.durable import create_temporary, fsync_path, fsync_paths, write_json_atomic
from fastcam.io.run.layout import EMPTY_PROGRESS, RunDirectory
from fastcam.io.run.schema import ARRAYS, DATA_ARRAYS, EXPLAINED, SCHEMA, SKIPPED, ShardGeometry


def normalised_maps(lowres: torch.Tensor, dtype: np.dtype | str) -> tuple[np.ndarray, np.ndarray]:
    """Maps as the store keeps them: each divided by its own max, in `dtype` (in [0, 1]: float16's full
    precision), and that max in float32 (raw map = lowres * scale); any spatial rank, (h, w) or (d, h, w)."""
    lowres = lowres.detach().float()
    dims = tuple(range(1, lowres.dim()))
    scale = lowres.amax(dim=dims)
    normalised = lowres / scale.clamp_min(torch.finfo(torch.float32).tiny).view(-1, *([1] * len(dims)))
    return normalised.cpu().numpy().astype(dtype), scale.cpu().numpy()


class ShardWriter:
    """Writes one rank's shard batch by batch; `commit` makes a batch count (atomically, durably).

    `plan()` gives the batches to compute: the uncommitted ones, and committed ones that are damaged or
    whose input fingerprints changed (`fingerprints`: the shard's current ones, one uint64 per row).
    The caller holds the shard's writer lock (`RunDirectory.writer_lock`).
    """

    def __init__(self, run_dir: str | Path, rank: int, world: int, n_items: int, batch_size: int,
                 dtype: str = "float16", fingerprints: np.ndarray | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.directory = RunDirectory(self.run_dir)
        self.geometry = ShardGeometry(n_items, rank, world, batch_size)
        self.rank, self.world, self.n_items, self.batch_size = rank, world, n_items, batch_size
        self.rows, self.num_batches = self.geometry.rows, self.geometry.num_batches
        self.dtype = np.dtype(dtype)
        self.path = self.directory.shard(rank, world)
        self.progress_path = self.directory.progress(rank, world)
        self.fingerprints = (np.zeros(self.rows, np.uint64) if fingerprints is None
                             else np.asarray(fingerprints, dtype=np.uint64))
        if self.fingerprints.shape != (self.rows,):
            raise ValueError(f"fingerprints must hold one value per shard row ({self.rows}), got "
                             f"{self.fingerprints.shape}")
        self._arrays: dict[str, Any] = {}
        self._unsynced: list[Path] = []
        self.damages: list[Damage] = []
        self.changed: list[int] = []
        self.directory.clean_temporaries(rank, world)
        try:
            self.progress = self.directory.read_progress(rank, world)
            problem = progress_problem(self.progress, self.num_batches)
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem:  # the plan reports it; the shard starts over
            self.progress = copy.deepcopy(EMPTY_PROGRESS)
        self.progress["sessions"] += 1
        self.session = self.progress["sessions"]
        if self.path.is_dir():
            self._open()

    def _open(self) -> None:
        import zarr

        try:
            group = zarr.open_group(str(self.path), mode="r+")
        except Exception:  # noqa: BLE001 - an unreadable group is rebuilt (the plan reports it)
            shutil.rmtree(self.path)
            return
        for name in ARRAYS:
            try:
                self._arrays[name] = group[name].with_config({"write_empty_chunks": True})
            except Exception:  # noqa: BLE001 - missing or unreadable: created again at the next write
                continue

    @property
    def committed_batches(self) -> int:
        """Batches committed in order so far."""
        return int(self.progress["committed_batches"])

    def batch_rows(self, batch: int) -> range:
        """The shard rows of batch `batch`."""
        return self.geometry.batch_rows(batch)

    def plan(self) -> list[int]:
        """The batches to compute, in order: damaged or changed committed batches first, then the
        uncommitted ones. The repairs are recorded ("redo") before any of their chunks is touched."""
        check = check_shard(self.directory, self.rank, self.world, self.n_items, self.batch_size, load=False)
        self.damages = check.damages
        if check.progress is None:  # an unreadable commit record: the whole shard is computed again
            repair: set[int] = set()
        else:
            repair = set(check.damaged)
            stored = check.data.get("fingerprint")
            if stored is not None:
                for b in check.committed:
                    r = self.batch_rows(b)
                    if b not in repair and not np.array_equal(stored[r.start:r.stop], self.fingerprints[r.start:r.stop]):
                        self.changed.append(b)
                repair.update(self.changed)
        for name in check.broken_arrays:  # rebuilt at the next write; their committed batches are in `repair`
            shutil.rmtree(self.path / name, ignore_errors=True)
            self._arrays.pop(name, None)
        if check.broken_group and self.path.exists():
            shutil.rmtree(self.path)
            self._arrays = {}
        todo = sorted(repair | set(self.progress["redo"])) + list(range(self.committed_batches, self.num_batches))
        if repair - set(self.progress["redo"]):
            self.progress["redo"] = sorted(repair | set(self.progress["redo"]))
            write_json_atomic(self.progress_path, self.progress)
        return todo

    def _create_group(self) -> None:
        """Create the shard's group (with its status and fingerprint arrays) in a temporary folder, then
        rename it into place (atomic)."""
        import zarr

        tmp, _ = create_temporary(self.run_dir, f"{self.path.name}.creating", directory=True)
        group = zarr.open_group(str(tmp), mode="w")
        group.attrs.update({"rank": self.rank, "world_size": self.world, "rows": self.rows,
                            "batch_size": self.batch_size})
        for name in ("status", "fingerprint"):
            self._create_array(group, name, ())
        fsync_paths([*tmp.rglob("*"), tmp])
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(tmp, self.path)
        fsync_path(self.run_dir)
        self._open()

    def _create_array(self, group: Any, name: str, tail: tuple[int, ...]) -> None:
        from zarr.codecs import Crc32cCodec

        spec = SCHEMA[name]
        n, b = max(self.rows, 1), self.batch_size
        group.create_array(name, shape=(n, *tail), chunks=(b, *tail), dtype=spec.storage_dtype(self.dtype),
                           fill_value=spec.fill,
                           compressors=[Crc32cCodec()], chunk_key_encoding={"name": "default", "separator": "."},
                           config={"write_empty_chunks": True})

    def _ensure_arrays(self, tails: dict[str, tuple[int, ...]]) -> None:
        """Create the arrays of `tails` (name -> shape after the row axis) that do not exist yet."""
        import zarr

        if not self.path.is_dir():
            self._create_group()
        missing = [name for name in tails if name not in self._arrays]
        if not missing:
            return
        group = zarr.open_group(str(self.path), mode="r+")
        for name in missing:
            self._create_array(group, name, tails[name])
        fsync_paths([p for name in missing for p in (self.path / name / "zarr.json", self.path / name)] + [self.path])
        self._open()

    def write_batch(self, batch: int, ok: Tensor, lowres: Tensor | None, logits: Tensor | None,
                    targets: Tensor | None) -> None:
        """Write batch `batch`: `ok` (B,) for every row; lowres/logits/targets for the ok rows only. The
        chunks written are fsynced, with their folders, by the batch's `commit`."""
        rows = self.batch_rows(batch)
        ok_np = ok.cpu().numpy().astype(bool)
        if ok_np.shape[0] != len(rows):
            raise ValueError(f"batch {batch} has {ok_np.shape[0]} rows, expected {len(rows)}")
        if ok_np.any() and (lowres is None or logits is None or targets is None):
            raise ValueError(f"batch {batch} marks {int(ok_np.sum())} rows explained but gives no maps for them")
        self._ensure_arrays({"status": (), "fingerprint": ()})
        if ok_np.any():
            assert lowres is not None and logits is not None
            self._ensure_arrays({"lowres": tuple(lowres.shape[1:]), "scale": (), "logits": (logits.shape[1],),
                                 "targets": (), "predicted": ()})
        else:
            lowres = logits = targets = None
        sl = slice(rows.start, rows.stop)
        written = []
        if "lowres" in self._arrays:
            n, spatial, k = len(rows), tuple(self._arrays["lowres"].shape[1:]), self._arrays["logits"].shape[1]
            full = {name: SCHEMA[name].empty(n, spatial, k, self.dtype) for name in DATA_ARRAYS}
            if lowres is not None:
                assert logits is not None and targets is not None
                lowres = lowres.detach().float()
                if tuple(lowres.shape[1:]) != spatial or logits.shape[1] != k:
                    raise ValueError(f"batch {batch} has maps {tuple(lowres.shape[1:])} and {logits.shape[1]} classes; "
                                     f"the store holds {spatial} and {k}")
                full["lowres"][ok_np], full["scale"][ok_np] = normalised_maps(lowres, self.dtype)
                full["logits"][ok_np] = logits.detach().float().cpu().numpy()
                full["targets"][ok_np] = targets.cpu().numpy()
                full["predicted"][ok_np] = logits.detach().argmax(dim=1).cpu().numpy()
            for name, values in full.items():
                self._arrays[name][sl] = values
                written.append(name)
        self._arrays["status"][sl] = np.where(ok_np, EXPLAINED, SKIPPED).astype(np.uint8)
        self._arrays["fingerprint"][sl] = self.fingerprints[sl]
        written += ["status", "fingerprint"]
        # made durable by the commit, before the progress file says so: the chunk files and their folders
        self._unsynced += [self.directory.chunk(self.rank, self.world, name, batch, self._arrays[name].ndim)
                           for name in written] + [self.path / name for name in written]

    def commit(self, batch: int, skipped: Sequence[dict[str, Any]], seconds: float, images: int,
               device: str) -> None:
        """Mark batch `batch` done: its chunk files, their folders and the new progress file are fsynced
        (concurrently), then the progress file replaces the old one and the run directory is fsynced. New
        batches commit strictly in order; a batch being recomputed ("redo") commits when it is done, its
        old skipped entries replaced. Refused (`RunLockLostError`) if this process's writer lock file was
        deleted or replaced meanwhile."""
        self.directory.check_writer_lock(self.rank, self.world)
        p = self.progress
        if batch in p["redo"]:
            p["redo"].remove(batch)
            index = {self.rank + self.world * r for r in self.batch_rows(batch)}
            p["skipped"] = [s for s in p["skipped"] if int(s["index"]) not in index]
        elif batch != self.committed_batches:
            raise RuntimeError(f"batch {batch} committed out of order (next is {self.committed_batches})")
        else:
            p["committed_batches"] = batch + 1
        log = p["commits"]  # run-length: [session, first batch, last batch], O(sessions) not O(batches)
        if log and log[-1][0] == self.session and log[-1][2] == batch - 1:
            log[-1][2] = batch
        else:
            log.append([self.session, batch, batch])
        p["skipped"].extend(skipped)
        p["seconds"] = float(p["seconds"]) + seconds
        p["images"] = int(p["images"]) + images
        if device not in p["devices"]:
            p["devices"].append(device)
        write_json_atomic(self.progress_path, p, sync_first=list(dict.fromkeys(self._unsynced)))
        self._unsynced = []

    def committed_log(self) -> list[tuple[int, int]]:
        """(batch, session) of every commit, in commit order."""
        return [(b, session) for session, first, last in self.progress["commits"] for b in range(first, last + 1)]

    @property
    def done(self) -> bool:
        """Whether every batch is committed and none is being recomputed."""
        return self.committed_batches >= self.num_batches and not self.progress["redo"]
