"""Durable files: fsync (files and folders, concurrently) and JSON written atomically, so that a reader, or
a restart after a kill or a power cut, sees either the old or the new file."""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Sequence

#: fsync chunk files, the progress file and their folders before a batch counts (`bench/bench_fsync.py`
#: measures the cost by turning it off)
DURABLE = True
#: threads that fsync a commit's files concurrently (1: one after another; the bench compares)
FSYNC_THREADS = 16


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


def create_temporary(parent: Path, prefix: str, *, directory: bool = False) -> tuple[Path, int | None]:
    """A new hidden temporary file (path, open write descriptor) or folder (path, None) in `parent`, with the
    permissions of any new file there (0666/0777 less the umask, as Zarr's chunks): `tempfile`'s are 0600/
    0700, which would leave a run's JSON files and shard folders unreadable to the colleagues it is shared
    with."""
    for _ in range(100):
        path = Path(parent) / f".{prefix}.{secrets.token_hex(6)}.tmp"
        try:
            if directory:
                os.mkdir(path, 0o777)
                return path, None
            return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {prefix!r} in {str(parent)!r}")


def write_json_atomic(path: Path, payload: Any, *, exclusive: bool = False, sync_first: Sequence[Path] = ()) -> None:
    """Write JSON so that readers (and a restart after a kill) see either the old or the new file; the file
    and its directory are fsynced. `exclusive=True` creates the file only if it does not exist yet
    (FileExistsError otherwise), atomically. `sync_first`: other paths made durable (fsynced together
    with the temporary file) before the new file replaces the old one."""
    path = Path(path)
    tmp, fd = create_temporary(path.parent, path.name)
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
    """The JSON content of `path`."""
    with Path(path).open(encoding="utf-8") as f:
        return json.load(f)


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
