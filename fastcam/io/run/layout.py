"""The layout of a run directory (`RunDirectory`: every file and folder name of a run, in one place) and the
writer lock (`WriterLock`)."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import shutil
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from fastcam.errors import RunDamagedError, RunLockedError, RunLockLostError
from fastcam.io.run.damage import Damage
from fastcam.io.run.durable import read_json, utc_now, write_json_atomic
from fastcam.io.run.schema import IDS_JSON, RUN_JSON, STORE_FORMAT

#: a shard's commit record before its first commit
EMPTY_PROGRESS: dict[str, Any] = {"committed_batches": 0, "commits": [], "redo": [], "skipped": [], "seconds": 0.0,
                                  "images": 0, "sessions": 0, "devices": []}


def require_run(path: str | os.PathLike[str]) -> RunDirectory:
    """The run directory at `path`; FileNotFoundError naming it when it holds no run."""
    return RunDirectory(Path(path)).require_run()


#: the writer locks this process holds, by lock file: closed in forked children (below) and checked at
#: every commit (`RunDirectory.check_writer_lock`)
_HELD: dict[Path, WriterLock] = {}
_FORK_HOOK = threading.Lock()
_fork_hook_registered = False


def _close_held_locks_in_child() -> None:
    """In a forked child (DataLoader workers, any fork in user code): close the inherited lock descriptors.
    flock belongs to the open file, so a child keeping the descriptor would keep the run locked after the
    writer is killed, until the child exits; closing (never unlocking, which would free the parent's lock)
    leaves the lock to the parent alone."""
    for lock in list(_HELD.values()):
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
            lock._fd = None
    _HELD.clear()


class WriterLock:
    """An exclusive OS lock on a file (flock on POSIX, LockFileEx on Windows, through `filelock`), released
    by the OS when the process ends; the holder's PID, host and start time are written into the file.

    Held by this process only: the descriptor is close-on-exec and closed in forked children, so a killed
    writer's DataLoader workers do not keep the run locked. Deleting or replacing the lock file while the
    lock is held would let a second writer lock a new file: `check` (at every commit) then refuses.
    """

    def __init__(self, path: Path, run_dir: Path) -> None:
        self.path, self.run_dir = Path(path), Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> None:
        from filelock import lock_descriptor

        global _fork_hook_registered
        with _FORK_HOOK:
            if not _fork_hook_registered and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_close_held_locks_in_child)
                _fork_hook_registered = True
        for _ in range(10):  # the file may be deleted between open and lock: then lock the new one
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
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
            if _same_file(self.path, fd):
                break
            os.close(fd)
        else:
            raise OSError(f"cannot lock {str(self.path)!r}: the file keeps being replaced")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now(),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode("utf-8"))
        self._fd = fd
        _HELD[self.path.absolute()] = self

    def check(self) -> None:
        """Raise `RunLockLostError` if the lock file is no longer the file this process locked (deleted or
        replaced while it was held: another writer may be writing the run too)."""
        if self._fd is not None and not _same_file(self.path, self._fd):
            raise RunLockLostError(str(self.run_dir), str(self.path))

    def release(self) -> None:
        if self._fd is None:
            return
        from filelock import unlock_descriptor

        if _HELD.get(self.path.absolute()) is self:
            del _HELD[self.path.absolute()]
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


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` names the file open as `fd` (not deleted, not replaced by another file)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


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

    def require_run(self) -> RunDirectory:
        """This directory, if it holds a run; FileNotFoundError otherwise."""
        if not self.is_run():
            raise FileNotFoundError(f"{str(self.root)!r} is not a fastcam run directory (no {RUN_JSON})")
        return self

    def check_out(self, argument: str = "out") -> None:
        """Refuse an output path that cannot be (or hold) a run: a file, or a folder with other content.
        `argument`: how the caller named the path in its messages (the CLI: "--out")."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{argument} {str(self.root)!r} is a file, not a directory; choose a new or empty "
                             "folder for the run")
        if self.root.is_dir() and not self.is_run() and any(not self._own(p) for p in self.root.iterdir()):
            raise ValueError(f"{argument} {str(self.root)!r} exists and is not a fastcam run directory; "
                             f"choose an empty or new {argument}")

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

    def check_writer_lock(self, rank: int, world: int) -> None:
        """Raise `RunLockLostError` if a writer lock this process holds for `rank` (its shard's; the run's on
        rank 0) was deleted or replaced since it was taken. Locks this process does not hold are not checked
        (a `ShardWriter` used without `writer_lock`)."""
        for path in (self.shard_lock(rank, world), *([self.run_lock] if rank == 0 else [])):
            lock = _HELD.get(path.absolute())
            if lock is not None:
                lock.check()

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
        """run.json, checked against its schema (`record.RunRecord`); a damaged or edited one raises
        RunDamagedError naming the field."""
        from fastcam.io.run.record import validate_meta

        try:
            meta = read_json(self.run_json)
        except ValueError as exc:
            raise RunDamagedError(str(self.root), [Damage(RUN_JSON, f"unreadable ({exc}); the run's settings are "
                                                            "lost: delete the directory and run again")]) from None
        return validate_meta(meta, self.root)

    def read_ids(self) -> list[Any]:
        """ids.json (unchecked: `check` compares it with run.json)."""
        return read_json(self.ids_json)

    def read_progress(self, rank: int, world: int) -> dict[str, Any]:
        """The shard's commit record (an empty one before its first commit); ValueError if unreadable."""
        path = self.progress(rank, world)
        if not path.exists():
            return copy.deepcopy(EMPTY_PROGRESS)
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
        from fastcam.io.run.record import ids_hash

        self.check_out()
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.ids_json, ids)
        meta = {
            "fastcam_run": STORE_FORMAT, "method": settings["method"], "settings": settings,
            "batch_size": settings["batch_size"], "world_size": settings["world_size"], "n_samples": len(ids),
            "ids_sha256": ids_hash(ids),
            "input_size": list(input_size) if input_size is not None else None,
            "versions": {**versions, "zarr": _zarr_version(), "numpy": np.__version__,
                         "python": platform.python_version()},
            "created": utc_now(), "complete": False,
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
        self.check_writer_lock(0, world)
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
            "complete": True, "finished": utc_now(),
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
