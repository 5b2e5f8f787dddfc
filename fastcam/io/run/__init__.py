"""The run store (`fastcam.io.run`): a directory of Zarr arrays written batch by batch, with verified, durable, atomic commits.

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
`open_run`, `verify_run`, the report and `fastcam eval` read through it. `schema.SCHEMA` is the one table
of the shard arrays (name, dtype, fill value, shape after the row axis), `schema.ShardGeometry` the one
shard geometry (rows, batches).

Modules: `durable` (fsync, atomic JSON), `damage` (`Damage`, sample descriptions), `schema` (the arrays,
the shard geometry), `record` (run.json's schema, what a sample id may be), `layout` (`RunDirectory`,
`WriterLock`), `check` (`check_shard`, `verify_run`),
`writer` (`ShardWriter`), `chunks` (one chunk file read and verified), `lazy` (`RunArray`: lazy arrays
over the shards), `reader` (`Run`, `open_run`).

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
missing file is always damage, never data. The checks: for every committed batch, each chunk file
exists, has the size its shape gives and passes its checksum, and the status rows are written and agree
with the skipped list of the progress file; the progress file is well formed; ids.json holds the ids the
run was written with; no shard folder is missing. `verify_run` makes them all, chunk by chunk in flat
memory; `open_run` makes the run-wide ones and each chunk's when a read first touches it (`lazy`). Any
problem raises `RunDamagedError` naming the file, the batch and its samples.
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
The lock is the writer's alone: its descriptor is close-on-exec and closed in forked children (DataLoader
workers), so they never keep a killed writer's run locked; a lock file deleted or replaced under a writer
stops it at its next commit (`RunLockLostError`). Readers take no lock.
"""
from __future__ import annotations

from fastcam.io.run.check import ShardCheck, Verification, check_shard, verify_run
from fastcam.io.run.damage import Damage, describe_samples
from fastcam.io.run.durable import fsync_path, fsync_paths, read_json, write_json_atomic
from fastcam.io.run.layout import RunDirectory, WriterLock, require_run
from fastcam.io.run.lazy import RunArray
from fastcam.io.run.reader import Run, RunBatch, RunSample, open_run
from fastcam.io.run.schema import (
    ARRAYS, DATA_ARRAYS, EXPLAINED, IDS_JSON, RUN_JSON, SCHEMA, SKIPPED, STORE_FORMAT, ArraySpec, ShardGeometry,
    shard_indices, shard_rows,
)
from fastcam.io.run.writer import ShardWriter

__all__ = [
    "ARRAYS", "DATA_ARRAYS", "EXPLAINED", "IDS_JSON", "RUN_JSON", "SCHEMA", "SKIPPED", "STORE_FORMAT", "ArraySpec",
    "Damage", "Run", "RunArray", "RunBatch", "RunDirectory", "RunSample", "ShardCheck", "ShardGeometry", "ShardWriter", "Verification", "WriterLock",
    "check_shard", "describe_samples", "fsync_path", "fsync_paths", "open_run", "read_json", "require_run",
    "shard_indices", "shard_rows", "verify_run", "write_json_atomic",
]
