"""The run store: a directory of Zarr arrays written batch by batch, with verified, durable, atomic commits.

Why Zarr (v3) rather than HDF5: a Zarr array is a folder of independent chunk files, and Zarr's local
store writes each chunk to a temporary file and renames it into place, so a process killed at any
moment (SIGKILL included) never leaves a half-written chunk, and several processes (torchrun ranks)
can write their own arrays with no shared file handle. HDF5 keeps everything in one file whose internal
B-tree a killed writer can corrupt (recovering needs `h5clear`/SWMR care), and concurrent writers need
MPI-parallel HDF5. Zarr also reads lazily by chunk and is a well-kept, widely used library.

Layout of a run directory::

    run.json                       settings (+ fingerprint), versions, device; timings, skipped files
                                   and `complete` once every shard has finished
    ids.json                       sample ids of the whole dataset in dataset order (relative paths or
                                   dataset indices)
    shard-00000-of-00001/          one Zarr group per rank; rank r holds dataset indices r, r+W, r+2W, ...
        lowres   (n, h, w)         low-resolution maps (after ReLU; (n, d, h, w) for volumes), each divided by its own max, so
                                   float16 storage keeps full relative precision and never overflows
        scale    (n,)   float32    the max each map was divided by: raw map = lowres * scale
        logits   (n, K) float32
        targets  (n,)   int64      explained class
        predicted (n,)  int64      the model's predicted class, argmax of the logits
        status   (n,)   uint8      1 explained, 2 skipped (unreadable or non-finite); 0, the fill value,
                                   means "never written", never "skipped"
        fingerprint (n,) uint64    the input file's fingerprint when it was explained (size and mtime,
                                   or its content: `fastcam.io.images.file_fingerprints`)
    shard-00000-of-00001.progress.json   the commit record of that shard (see below)
    .run.lock, .shard-00000-of-00001.lock   the writer locks (hidden; see below)
    overlays/, inputs/, report.html      optional outputs
    eval/                                `fastcam eval`'s tables and plots

`RunDirectory` is the one place that names these files and folders: the pipeline writes through it,
`open_run`, `verify_run`, the report and `fastcam eval` read through it.

Commit protocol. Batch b of a shard covers rows [b*B, (b+1)*B) and is exactly one chunk of every array,
so a batch is written without reading anything back. A batch counts only once the shard's progress
file says so: the chunks are written first (the data, then `status`, then `fingerprint`), each chunk
file and its folder are fsynced, then the progress file is replaced atomically (write a temporary file,
fsync, `os.replace`, fsync the directory). The resume guarantee therefore covers a power cut as well as
a killed process. A restart resumes at the first uncommitted batch and overwrites whatever chunks a
killed process left of it: nothing committed is lost, duplicated or recomputed. The progress file also
logs which session (process start) committed which batches, as runs of [session, first batch, last
batch]. The group is created in a temporary folder and renamed into place.

Verification. Every array is stored with Zarr v3's `crc32c` codec: each chunk file ends with the CRC-32C
of its bytes, checked on every read (by this module and by any Zarr v3 reader). Chunks are written
even when they equal the fill value (`write_empty_chunks`), so every committed batch has a `status`
and a `fingerprint` chunk, and a chunk of every data array when it explained at least one sample: a
missing file is always damage, never data. `open_run` and `verify_run` check, for every committed
batch, that each chunk file exists, has the size its shape gives and passes its checksum; that the
status rows are written and agree with the skipped list of the progress file; that the progress file
is well formed; that ids.json holds the ids the run was written with; and that no shard folder is
missing. Any problem raises `RunDamagedError` naming the file, the batch and its samples.
Why a checksum in each chunk rather than a list of checksums in the progress file: the progress file is
rewritten at every commit, so a per-batch list would make each commit O(batches) (quadratic over a
run); the in-chunk CRC costs 4 bytes per chunk, is verified as a side effect of decoding, and travels
with the chunk to any Zarr reader. (A valid chunk copied over another batch's chunk would pass the
CRC; storage does not fail that way.)

Repair. `ShardWriter.plan()` runs the same checks on a resumed shard and also compares the stored input
fingerprints with the current files: damaged batches and batches whose inputs changed are recomputed
(the progress file lists them under "redo" while they are, so a kill during a repair leaves them
uncommitted), then the run ends equal to an undamaged one. A progress file that cannot be read makes its
whole shard recomputed.

Writer lock. A writer holds `.shard-RRRRR-of-WWWWW.lock` (each rank, its own shard) and, on rank 0,
`.run.lock` (run.json, ids.json) for the whole run: an OS lock (flock/LockFileEx through
`filelock`), released by the OS when the process ends, however it ends. The holder writes its PID, host
and start time into the lock file, and a second writer is refused with `RunLockedError` naming them.
Readers take no lock.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from fastcam.errors import RunDamagedError, RunLockedError

STORE_FORMAT = 2
RUN_JSON = "run.json"
IDS_JSON = "ids.json"
#: the arrays whose rows hold an explanation (written for every batch once they exist)
DATA_ARRAYS = ("lowres", "scale", "logits", "targets", "predicted")
#: every array of a shard, in the order a batch writes them (status and fingerprint last)
ARRAYS = (*DATA_ARRAYS, "status", "fingerprint")
#: `status` values; 0, the fill value, means "never written"
EXPLAINED, SKIPPED = 1, 2
#: fsync chunk files, the progress file and their folders before a batch counts (`bench/bench_fsync.py`
#: measures the cost by turning it off)
DURABLE = True
#: threads that fsync a commit's files concurrently (1: one after another; the bench compares)
FSYNC_THREADS = 16


# ---------------------------------------------------------------------------------------------- files
def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a no-op for directories where the OS cannot open them)."""
    if not DURABLE:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):  # Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        if not Path(path).is_dir():
            raise
    finally:
        os.close(fd)


_POOL: tuple[int, Any] | None = None  # (pid, executor): a forked child makes its own


def fsync_paths(paths: Sequence[Path]) -> None:
    """fsync files and directories concurrently: the file system folds concurrent fsyncs into one journal
    commit (ext4, xfs), several times cheaper than one after another (`bench/bench_fsync.py`)."""
    global _POOL
    if not DURABLE or not paths:
        return
    if FSYNC_THREADS <= 1:
        for path in paths:
            fsync_path(path)
        return
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers != FSYNC_THREADS:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=FSYNC_THREADS, thread_name_prefix="fastcam-fsync"))
    for future in [_POOL[1].submit(fsync_path, p) for p in paths]:
        future.result()


def write_json_atomic(path: Path, payload: Any, *, exclusive: bool = False, sync_first: Sequence[Path] = ()) -> None:
    """Write JSON so that readers (and a restart after a kill) see either the old or the new file; the file
    and its directory are fsynced. `exclusive=True` creates the file only if it does not exist yet
    (FileExistsError otherwise), atomically. `sync_first`: other paths made durable (fsynced together
    with the temporary file) before the new file replaces the old one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, sort_keys=False)
        fsync_paths([Path(tmp), *sync_first])
        if exclusive:
            os.link(tmp, path)  # fails if `path` exists: no writer can replace another's file
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with Path(path).open(encoding="utf-8") as f:
        return json.load(f)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


#: a shard's commit record before its first commit
_EMPTY_PROGRESS: dict[str, Any] = {"committed_batches": 0, "commits": [], "redo": [], "skipped": [], "seconds": 0.0,
                                   "images": 0, "sessions": 0, "devices": []}


# ---------------------------------------------------------------------------------------------- damage
def describe_samples(rank: int, world: int, rows: Sequence[int], ids: Sequence[Any] | None = None) -> str:
    """The dataset samples of shard rows `rows`: "samples 6-7 ('a.png' to 'b.png')"."""
    index = [rank + world * r for r in rows]
    if not index:
        return "no samples"
    if len(index) == 1:
        text = f"sample {index[0]}"
    elif world == 1 and index == list(range(index[0], index[-1] + 1)):
        text = f"samples {index[0]}-{index[-1]}"
    else:
        text = f"samples {index[0]}, {index[1]}, ..., {index[-1]}" if len(index) > 2 else f"samples {index[0]}, {index[1]}"
    if ids is not None and index[-1] < len(ids):
        text += f" ({ids[index[0]]!r}" + (f" to {ids[index[-1]]!r})" if len(index) > 1 else ")")
    return text


@dataclass(frozen=True)
class Damage:
    """One problem of a run directory: the file or folder, what is wrong, and the batches it affects.

    Attributes:
        path: the damaged (or missing) file or folder, relative to the run directory.
        problem: what is wrong with it.
        batches: the batches of shard `rank` it makes unreadable (empty for run-wide files).
        samples: those batches' samples, described (`describe_samples`).
    """

    path: str
    problem: str
    rank: int = 0
    batches: tuple[int, ...] = ()
    samples: str = ""

    def __str__(self) -> str:
        where = ""
        if self.batches:
            b = self.batches
            if len(b) == 1:
                where = f" (batch {b[0]}"
            elif list(b) == list(range(b[0], b[-1] + 1)):
                where = f" (batches {b[0]}-{b[-1]}"
            else:
                where = f" ({len(b)} batches: {', '.join(map(str, b[:4]))}{', ...' if len(b) > 4 else ''}"
            where += f": {self.samples})" if self.samples else ")"
        return f"{self.path}: {self.problem}{where}"


# ---------------------------------------------------------------------------------------------- lock
class WriterLock:
    """An exclusive OS lock on a file (flock on POSIX, LockFileEx on Windows, through `filelock`), released
    by the OS when the process ends; the holder's PID, host and start time are written into the file."""

    def __init__(self, path: Path, run_dir: Path) -> None:
        self.path, self.run_dir = Path(path), Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        from filelock import lock_descriptor

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = lock_descriptor(fd, blocking=False)
        except OSError as exc:
            os.close(fd)
            raise OSError(f"cannot lock {str(self.path)!r} ({exc}); fastcam needs a file system with file locks "
                          "to write a run directory") from exc
        if not locked:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                raw = os.read(fd, 4096)
                holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
            except (OSError, ValueError):
                holder = {}
            os.close(fd)
            raise RunLockedError(str(self.run_dir), holder if isinstance(holder, dict) else {})
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _utc_now(),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode("utf-8"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        from filelock import unlock_descriptor

        try:
            unlock_descriptor(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class RunDirectory:
    """The layout of a run directory: every file and folder name of a run, in one place.

    The pipeline creates, writes and finalises runs through it; `open_run`, `verify_run`, the HTML report
    and `fastcam eval` find their files through it.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_json(self) -> Path:
        """Settings, versions, device; timings, skipped files and `complete` once finished."""
        return self.root / RUN_JSON

    @property
    def ids_json(self) -> Path:
        """Sample ids of the whole dataset, in dataset order."""
        return self.root / IDS_JSON

    @property
    def inputs(self) -> Path:
        """PNGs of the model inputs (written with the overlays)."""
        return self.root / "inputs"

    @property
    def overlays(self) -> Path:
        """PNG overlays, map on image."""
        return self.root / "overlays"

    @property
    def report(self) -> Path:
        """The run's own HTML report."""
        return self.root / "report.html"

    @property
    def eval(self) -> Path:
        """`fastcam eval`'s per-run tables and plots."""
        return self.root / "eval"

    def shard(self, rank: int, world: int) -> Path:
        """The Zarr group of rank `rank` of `world`."""
        return self.root / f"shard-{rank:05d}-of-{world:05d}"

    def progress(self, rank: int, world: int) -> Path:
        """The commit record of that shard."""
        return self.root / f"{self.shard(rank, world).name}.progress.json"

    def chunk(self, rank: int, world: int, array: str, batch: int, ndim: int) -> Path:
        """The chunk file of batch `batch` in array `array` (of `ndim` dimensions) of that shard."""
        return self.shard(rank, world) / array / ("c." + ".".join([str(batch)] + ["0"] * (ndim - 1)))

    def shard_lock(self, rank: int, world: int) -> Path:
        """The writer lock of that shard (hidden)."""
        return self.root / f".{self.shard(rank, world).name}.lock"

    @property
    def run_lock(self) -> Path:
        """The writer lock of the run's shared files (run.json, ids.json), held by rank 0."""
        return self.root / ".run.lock"

    def is_run(self) -> bool:
        """Whether the directory holds a run (run.json is written last when a run is set up)."""
        return self.run_json.is_file()

    def check_out(self) -> None:
        """Refuse an output path that cannot be (or hold) a run: a file, or a folder with other content."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--out {str(self.root)!r} is a file, not a directory; choose a new or empty folder "
                             "for the run")
        if self.root.is_dir() and not self.is_run() and any(not self._own(p) for p in self.root.iterdir()):
            raise ValueError(f"{str(self.root)!r} exists and is not a fastcam run directory; "
                             "choose an empty or new --out")

    def _own(self, path: Path) -> bool:
        """Whether `path` (in the root) is a file a run writes, or hidden: a run being created (or whose
        creation was killed) holds such files before run.json."""
        name = path.name
        return (name.startswith(".") or name in (RUN_JSON, IDS_JSON) or name.startswith("shard-")
                or path in (self.inputs, self.overlays, self.report, self.eval))

    @contextlib.contextmanager
    def writer_lock(self, rank: int, world: int) -> Iterator[None]:
        """Hold this rank's writer locks (its shard's; the run's on rank 0) for the duration; a held lock
        raises `RunLockedError` naming its holder. Creates the directory if needed."""
        self.check_out()
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if rank == 0:
                stack.enter_context(WriterLock(self.run_lock, self.root))
            stack.enter_context(WriterLock(self.shard_lock(rank, world), self.root))
            yield

    def clean_temporaries(self, rank: int, world: int) -> None:
        """Remove what a killed writer can leave: temporary JSON files (rank 0: run.json and ids.json;
        every rank: its progress file), a half-created shard, temporary chunk files. Call under the lock."""
        names = [self.progress(rank, world).name] + ([RUN_JSON, IDS_JSON] if rank == 0 else [])
        for name in names:
            for tmp in self.root.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        shard = self.shard(rank, world)
        for tmp in self.root.glob(f".{shard.name}.creating*"):
            shutil.rmtree(tmp, ignore_errors=True)
        if shard.is_dir():
            for partial in shard.rglob("*.partial"):
                partial.unlink(missing_ok=True)

    def read_meta(self) -> dict[str, Any]:
        """run.json; a damaged one raises RunDamagedError."""
        try:
            meta = read_json(self.run_json)
        except ValueError as exc:
            raise RunDamagedError(str(self.root), [Damage(RUN_JSON, f"unreadable ({exc}); the run's settings are "
                                                            "lost: delete the directory and run again")]) from None
        if not isinstance(meta, dict) or not all(k in meta for k in ("batch_size", "world_size", "n_samples")):
            raise RunDamagedError(str(self.root), [Damage(RUN_JSON, "is not a fastcam run record (keys missing); "
                                                            "delete the directory and run again")])
        return meta

    def read_ids(self) -> list[Any]:
        return read_json(self.ids_json)

    def read_progress(self, rank: int, world: int) -> dict[str, Any]:
        """The shard's commit record (an empty one before its first commit); ValueError if unreadable."""
        path = self.progress(rank, world)
        if not path.exists():
            return copy.deepcopy(_EMPTY_PROGRESS)
        progress = read_json(path)
        if isinstance(progress, dict):
            progress.setdefault("redo", [])
        return progress

    def create(self, ids: list[Any], settings: dict[str, Any], *, input_size: Sequence[int] | None,
               versions: dict[str, Any]) -> None:
        """Set up a new run: ids.json, then run.json (last, created exclusively: its presence means the
        directory is set up, and no second writer can replace it).

        `settings` must hold "method", "batch_size" and "world_size". An existing directory with other
        content than a run is refused.
        """
        self.check_out()
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.ids_json, ids)
        meta = {
            "fastcam_run": STORE_FORMAT, "method": settings["method"], "settings": settings,
            "batch_size": settings["batch_size"], "world_size": settings["world_size"], "n_samples": len(ids),
            "input_size": list(input_size) if input_size is not None else None,
            "versions": {**versions, "zarr": _zarr_version(), "numpy": np.__version__,
                         "python": platform.python_version()},
            "created": _utc_now(), "complete": False,
        }
        write_json_atomic(self.run_json, meta, exclusive=True)

    def repair_ids(self, ids: list[Any]) -> bool:
        """Rewrite ids.json when it is missing or differs from `ids` (the caller checked that `ids` are the
        run's, through its settings). Returns whether it was rewritten."""
        try:
            if self.read_ids() == ids:
                return False
        except (OSError, ValueError):
            pass
        write_json_atomic(self.ids_json, ids)
        return True

    def finalize(self, device: str) -> None:
        """Merge the shards' commit records into run.json: complete flag, skipped files, timings."""
        meta = self.read_meta()
        world = int(meta["world_size"])
        shards, skipped = [], []
        for rank in range(world):
            p = self.read_progress(rank, world)
            skipped.extend(p["skipped"])
            shards.append({"rank": rank, "images": p["images"], "seconds": round(p["seconds"], 4),
                           "images_per_s": round(p["images"] / p["seconds"], 2) if p["seconds"] else None,
                           "sessions": p.get("sessions", 1), "devices": p["devices"]})
        seconds = max((s["seconds"] for s in shards), default=0.0)
        images = sum(s["images"] for s in shards)
        meta.update({
            "complete": True, "finished": _utc_now(),
            "n_explained": int(meta["n_samples"]) - len(skipped), "n_skipped": len(skipped),
            "skipped": sorted(skipped, key=lambda s: s["index"]),
            "device": sorted({d for s in shards for d in s["devices"]}) or [device],
            "timings": {"seconds": round(seconds, 4), "images_per_s": round(images / seconds, 2) if seconds else None,
                        "shards": shards},
        })
        write_json_atomic(self.run_json, meta)


def _zarr_version() -> str:
    import zarr

    return str(zarr.__version__)


def shard_indices(n_items: int, rank: int, world: int) -> range:
    """The dataset indices shard `rank` of `world` holds, in row order: rank, rank + world, ... below n_items
    (strided: no padding duplicates, and the shards interleave back into dataset order)."""
    return range(rank, n_items, world)


def shard_rows(n_items: int, rank: int, world: int) -> int:
    """Rows of shard `rank`: the dataset indices rank, rank + world, ... below n_items."""
    return len(shard_indices(n_items, rank, world))


# ---------------------------------------------------------------------------------------------- checking
def _progress_problem(p: Any, num_batches: int) -> str | None:
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
    `load`), the damage, and which arrays or whether the whole group must be rebuilt."""

    rank: int
    world: int
    rows: int
    batch_size: int
    progress: dict[str, Any] | None
    committed: list[int]
    damages: list[Damage] = field(default_factory=list)
    damaged: set[int] = field(default_factory=set)
    data: dict[str, np.ndarray] = field(default_factory=dict)
    broken_group: bool = False
    broken_arrays: set[str] = field(default_factory=set)

    @property
    def num_batches(self) -> int:
        return -(-self.rows // self.batch_size)

    def batch_rows(self, batch: int) -> range:
        return range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.rows))


def check_shard(directory: RunDirectory, rank: int, world: int, n_items: int, batch_size: int,
                ids: Sequence[Any] | None = None, expect_progress: bool = False, load: bool = True) -> ShardCheck:
    """Check one shard against its commit record and read its committed rows (see the module docstring);
    with `load=False` only `status` and `fingerprint` are kept, the data arrays are checked and dropped.

    Damage is collected, not raised: `open_run` raises it, `verify_run` reports it and `ShardWriter.plan`
    recomputes the damaged batches.
    """
    import zarr

    rows = shard_rows(n_items, rank, world)
    out = ShardCheck(rank, world, rows, batch_size, None, [])
    root = directory.root
    progress_path = directory.progress(rank, world)

    def damage(path: Path, problem: str, batches: Sequence[int]) -> None:
        batches = sorted(set(batches))
        out.damaged.update(batches)
        covered = [r for b in batches for r in out.batch_rows(b)]
        out.damages.append(Damage(_rel(path, root), problem, rank, tuple(batches),
                                  describe_samples(rank, world, covered, ids) if batches else ""))

    if expect_progress and not progress_path.exists():
        damage(progress_path, "missing, but run.json says the run is complete", range(out.num_batches))
        return out
    try:
        progress = directory.read_progress(rank, world)
    except (OSError, ValueError) as exc:
        damage(progress_path, f"unreadable ({type(exc).__name__}: {exc})", range(out.num_batches))
        return out
    problem = _progress_problem(progress, out.num_batches)
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


# ---------------------------------------------------------------------------------------------- writer
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
        self.rank, self.world = rank, world
        self.n_items = n_items
        self.rows = shard_rows(n_items, rank, world)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.path = self.directory.shard(rank, world)
        self.progress_path = self.directory.progress(rank, world)
        self.num_batches = -(-self.rows // batch_size)
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
            problem = _progress_problem(self.progress, self.num_batches)
        except (OSError, ValueError) as exc:
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        if problem:  # the plan reports it; the shard starts over
            self.progress = copy.deepcopy(_EMPTY_PROGRESS)
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
        return int(self.progress["committed_batches"])

    def batch_rows(self, batch: int) -> range:
        return range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.rows))

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

        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.creating", dir=self.run_dir))
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

        dtype, fill = {"lowres": (self.dtype, 0), "scale": ("float32", 0), "logits": ("float32", float("nan")),
                       "targets": ("int64", -1), "predicted": ("int64", -1), "status": ("uint8", 0),
                       "fingerprint": ("uint64", 0)}[name]
        n, b = max(self.rows, 1), self.batch_size
        group.create_array(name, shape=(n, *tail), chunks=(b, *tail), dtype=dtype, fill_value=fill,
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
            full_maps = np.zeros((n, *spatial), dtype=self.dtype)
            full_scale = np.zeros((n,), dtype=np.float32)
            full_logits = np.full((n, k), np.nan, dtype=np.float32)
            full_targets = np.full((n,), -1, dtype=np.int64)
            full_predicted = np.full((n,), -1, dtype=np.int64)
            if lowres is not None:
                assert logits is not None and targets is not None
                lowres = lowres.detach().float()
                if tuple(lowres.shape[1:]) != spatial or logits.shape[1] != k:
                    raise ValueError(f"batch {batch} has maps {tuple(lowres.shape[1:])} and {logits.shape[1]} classes; "
                                     f"the store holds {spatial} and {k}")
                # Per-map scaling: stored map in [0, 1] (full float16 precision), its max kept in float32.
                dims = tuple(range(1, lowres.dim()))  # any spatial rank: (h, w), (d, h, w)
                scale = lowres.amax(dim=dims)
                normalised = lowres / scale.clamp_min(torch.finfo(torch.float32).tiny).view(-1, *([1] * len(dims)))
                full_maps[ok_np] = normalised.cpu().numpy().astype(self.dtype)
                full_scale[ok_np] = scale.cpu().numpy()
                full_logits[ok_np] = logits.detach().float().cpu().numpy()
                full_targets[ok_np] = targets.cpu().numpy()
                full_predicted[ok_np] = logits.detach().argmax(dim=1).cpu().numpy()
            for name, values in (("lowres", full_maps), ("scale", full_scale), ("logits", full_logits),
                                 ("targets", full_targets), ("predicted", full_predicted)):
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
        old skipped entries replaced."""
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
        return self.committed_batches >= self.num_batches and not self.progress["redo"]


# ---------------------------------------------------------------------------------------------- reader
@dataclass
class Run:
    """A finished (or, with `allow_partial`, an unfinished) run directory, read back and verified.

    Samples a run skipped (unreadable files) are left out of `ids`/`lowres`/...; they are in `skipped`.
    All tensors are on the CPU, in dataset order.

    Attributes:
        path: the run directory.
        meta: the content of run.json (method, settings, model, versions, device, timings, skipped).
        ids: sample ids (relative file paths, or dataset indices) of the explained samples.
        indices: their positions in the dataset (int64).
        lowres: (N, h, w) float32 low-resolution maps after ReLU (not normalised), as `Explanation.lowres`
            ((N, d, h, w) for volumes)
            (`upsampled(i)` gives the normalised input-size map, as `Explanation.maps`).
        logits: (N, K) float32; targets: (N,) int64 explained class; predicted: (N,) argmax class.
        skipped: [{"index", "id", "error"}] of the files that could not be read.
    """

    path: Path
    meta: dict[str, Any]
    ids: list[Any]
    indices: Tensor
    lowres: Tensor
    logits: Tensor
    targets: Tensor
    predicted: Tensor
    skipped: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def scores(self) -> Tensor:
        """Softmax probability of the explained class, (N,)."""
        return torch.softmax(self.logits, dim=1).gather(1, self.targets.clamp_min(0).view(-1, 1)).squeeze(1)

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "?"))

    @property
    def directory(self) -> RunDirectory:
        """Where the run's files are (overlays, inputs, report, eval outputs)."""
        return RunDirectory(self.path)

    @property
    def maps(self) -> Tensor:
        """Deprecated name of `lowres` (the low-resolution maps; `Explanation.maps` is the upsampled one)."""
        warnings.warn("Run.maps is deprecated: it is the low-resolution map, now named Run.lowres "
                      "(Run.upsampled(i) gives the input-size map)", DeprecationWarning, stacklevel=2)
        return self.lowres

    def position(self, key: int | str) -> int:
        """Row of sample `key`: a row number (int) or a sample id (str)."""
        if isinstance(key, str):
            try:
                return self.ids.index(key)
            except ValueError:
                raise KeyError(f"{key!r} is not an explained sample of {self.path}") from None
        if not -len(self.ids) <= key < len(self.ids):
            raise IndexError(f"row {key} out of range for a run of {len(self.ids)} samples")
        return key

    def upsampled(self, i: int | str, size: Sequence[int] | None = None) -> Tensor:
        """Map of sample `i` (row or id) upsampled bilinearly to `size` (default: the input size) and
        divided by its max, exactly as the method's `maps` output (up to the storage dtype)."""
        from fastcam.ops import upsample_normalize

        if size is None:
            size = self.meta.get("input_size")
            if size is None:
                raise ValueError("this run does not record its input size; pass size=(H, W)")
        if len(size) != self.lowres.dim() - 1 or min(size) <= 0:
            raise ValueError(f"size must be {'(H, W)' if self.lowres.dim() == 3 else '(D, H, W)'} with positive "
                             f"sides, got {tuple(size)}")
        row = self.position(i)
        return upsample_normalize(self.lowres[row : row + 1], tuple(int(s) for s in size))[0]


@dataclass
class Verification:
    """What `verify_run` found: the run's size and state, and every problem.

    Attributes:
        path, meta: the run directory and its run.json.
        n_samples, world_size: from run.json; batches, committed: batches of all shards, and those committed.
        explained, skipped: committed samples explained / skipped.
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
        return not self.damages

    @property
    def complete(self) -> bool:
        return self.committed == self.batches


def _check_ids(directory: RunDirectory, meta: dict[str, Any]) -> tuple[list[Any] | None, list[Damage]]:
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


def _check_run(path: Path, load: bool = True) -> tuple[dict[str, Any], list[Any] | None, list[ShardCheck], list[Damage]]:
    directory = RunDirectory(path)
    if not directory.is_run():
        raise FileNotFoundError(f"{str(path)!r} is not a fastcam run directory (no {RUN_JSON})")
    meta = directory.read_meta()
    ids, damages = _check_ids(directory, meta)
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
    path = Path(path)
    directory = RunDirectory(path)
    if not directory.is_run():
        raise FileNotFoundError(f"{str(path)!r} is not a fastcam run directory (no {RUN_JSON})")
    meta = directory.read_meta()
    result = Verification(path, meta, int(meta["n_samples"]), int(meta["world_size"]))
    if meta.get("fastcam_run") != STORE_FORMAT:
        result.damages.append(Damage(RUN_JSON, f"store format {meta.get('fastcam_run')!r} was written without "
                                               "checksums and cannot be verified; explain again to get a verified run"))
        return result
    meta, ids, shards, result.damages = _check_run(path, load=False)
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


def open_run(path: str | os.PathLike[str], allow_partial: bool = False) -> Run:
    """Read a run directory written by `fastcam.explain_dataset` / `fastcam explain`, verifying it.

    Shards are merged back into dataset order: dataset index i lives in shard i % W at row i // W.
    Every chunk read is checked (see the module docstring); a missing, truncated or altered file raises
    `fastcam.errors.RunDamagedError` (a ValueError) naming the file, the batch and its samples. An
    unfinished run raises a ValueError (re-run the same command to finish it) unless
    `allow_partial=True`, which returns the committed samples only.
    """
    path = Path(path)
    directory = RunDirectory(path)
    if not directory.is_run():
        raise FileNotFoundError(f"{str(path)!r} is not a fastcam run directory (no {RUN_JSON})")
    meta = directory.read_meta()
    if meta.get("fastcam_run") == 1:
        return _open_legacy_run(path, meta, allow_partial)
    meta, ids, shards, damages = _check_run(path)
    if damages:
        raise RunDamagedError(str(path), damages)
    assert ids is not None
    n, world = len(ids), int(meta["world_size"])
    committed = np.zeros(n, dtype=bool)
    status = np.zeros(n, dtype=np.uint8)
    skipped: list[dict[str, Any]] = []
    shapes = {tuple(s.data["lowres"].shape[1:]) for s in shards if "lowres" in s.data}
    if len(shapes) > 1:
        raise ValueError(f"run {str(path)!r} has shards with different map sizes {sorted(shapes)}")
    spatial = shapes.pop() if shapes else (0, 0)
    ks = {s.data["logits"].shape[1] for s in shards if "logits" in s.data}
    k = ks.pop() if ks else 0
    full = {"lowres": np.zeros((n, *spatial), np.float32), "scale": np.zeros(n, np.float32),
            "logits": np.full((n, k), np.nan, np.float32), "targets": np.full(n, -1, np.int64),
            "predicted": np.full(n, -1, np.int64)}
    for shard in shards:
        rank = shard.rank
        assert shard.progress is not None
        done = [r for b in shard.committed for r in shard.batch_rows(b)]
        committed[rank::world][done] = True
        skipped.extend(s for s in shard.progress["skipped"] if s["index"] % world == rank
                       and committed[int(s["index"])])
        if "status" in shard.data:
            status[rank::world][done] = shard.data["status"][done]
        for name in full:
            if name in shard.data:
                full[name][rank::world][done] = shard.data[name][done]
    if not committed.all() and not allow_partial:
        raise ValueError(f"run {str(path)!r} is incomplete ({int(committed.sum())} of {n} samples committed); "
                         "re-run the same command to finish it, or open_run(..., allow_partial=True)")
    keep = np.flatnonzero(committed & (status == EXPLAINED))
    scale = full["scale"][keep].reshape(-1, *([1] * len(spatial)))
    lowres = torch.from_numpy(full["lowres"][keep] * scale)
    return Run(
        path=path, meta=meta, ids=[ids[i] for i in keep], indices=torch.from_numpy(keep.astype(np.int64)),
        lowres=lowres, logits=torch.from_numpy(full["logits"][keep]), targets=torch.from_numpy(full["targets"][keep]),
        predicted=torch.from_numpy(full["predicted"][keep]),
        skipped=sorted(skipped, key=lambda s: s["index"]),
    )


def _open_legacy_run(path: Path, meta: dict[str, Any], allow_partial: bool) -> Run:
    """A run of store format 1 (no checksums, an `ok` array whose fill value meant "skipped"), read as it
    was written, with a warning that it cannot be verified."""
    import zarr

    warnings.warn(f"run {str(path)!r} was written by an older fastcam (store format 1, no checksums): it is read "
                  "unverified; explain again for a verified run", UserWarning, stacklevel=3)
    directory = RunDirectory(path)
    ids = directory.read_ids()
    n, world, batch = len(ids), int(meta["world_size"]), int(meta["batch_size"])
    committed = np.zeros(n, dtype=bool)
    ok = np.zeros(n, dtype=bool)
    skipped: list[dict[str, Any]] = []
    parts: dict[str, list[tuple[int, np.ndarray]]] = {"lowres": [], "scale": [], "logits": [], "targets": [],
                                                     "predicted": []}
    for rank in range(world):
        rows = shard_rows(n, rank, world)
        progress = directory.read_progress(rank, world)
        skipped.extend(progress["skipped"])
        n_done = min(rows, progress["committed_batches"] * batch)
        committed[rank::world][:n_done] = True
        shard_dir = directory.shard(rank, world)
        if n_done == 0 or not shard_dir.exists():
            continue
        group = zarr.open_group(str(shard_dir), mode="r")
        ok[rank::world][:n_done] = group["ok"][:n_done]
        for name in parts:
            if name == "predicted" and name not in group:  # written before the array existed: derive it
                values = np.where(group["ok"][:n_done], np.nan_to_num(group["logits"][:n_done]).argmax(1), -1)
                parts[name].append((rank, values.astype(np.int64)))
                continue
            parts[name].append((rank, group[name][:n_done]))
    if not committed.all() and not allow_partial:
        raise ValueError(f"run {str(path)!r} is incomplete ({int(committed.sum())} of {n} samples committed); "
                         "re-run the same command to finish it, or open_run(..., allow_partial=True)")
    shapes = {tuple(a.shape[1:]) for _, a in parts["lowres"]}
    if len(shapes) > 1:
        raise ValueError(f"run {str(path)!r} has shards with different map sizes {sorted(shapes)}")
    spatial = shapes.pop() if shapes else (0, 0)
    k = parts["logits"][0][1].shape[1] if parts["logits"] else 0
    full = {"lowres": np.zeros((n, *spatial), np.float32), "scale": np.zeros(n, np.float32),
            "logits": np.full((n, k), np.nan, np.float32), "targets": np.full(n, -1, np.int64),
            "predicted": np.full(n, -1, np.int64)}
    for name, chunks in parts.items():
        for rank, values in chunks:
            full[name][rank::world][: values.shape[0]] = values
    keep = np.flatnonzero(ok)
    lowres = torch.from_numpy(full["lowres"][keep] * full["scale"][keep].reshape(-1, *([1] * len(spatial))))
    return Run(
        path=path, meta=meta, ids=[ids[i] for i in keep], indices=torch.from_numpy(keep.astype(np.int64)),
        lowres=lowres,
        logits=torch.from_numpy(full["logits"][keep]), targets=torch.from_numpy(full["targets"][keep]),
        predicted=torch.from_numpy(full["predicted"][keep]), skipped=sorted(skipped, key=lambda s: s["index"]),
    )
