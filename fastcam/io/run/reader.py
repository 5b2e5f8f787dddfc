"""Reading a run back (`open_run` -> `Run`): run.json, ids.json and the commit records at open, the
arrays lazily (`fastcam.io.run.lazy`: each read decodes and verifies only the chunks it touches). Runs of
store format 1 (no checksums) are read whole by the legacy reader kept here."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from fastcam.errors import RunDamagedError
from fastcam.io.run.check import check_run
from fastcam.io.run.damage import Damage
from fastcam.io.run.layout import RunDirectory, require_run
from fastcam.io.run.lazy import RunArray, RunSource
from fastcam.io.run.schema import DATA_ARRAYS, EXPLAINED, RUN_JSON, SCHEMA, ShardGeometry

#: rows `Run.iter_batches` reads at a time (at least): fewer, larger reads; a few MB whatever the run
STREAM_BLOCK = 8192
#: an array of a run: lazy (`RunArray`, store format 2) or a tensor (format 1, read whole)
RunValues = Union[RunArray, Tensor]


@dataclass
class RunSample:
    """One explained sample of a run (`Run.sample`).

    Attributes:
        row: its row in the run; index: its position in the dataset; id: its sample id.
        lowres: its low-resolution map (raw, float32); scale: the map's max as stored.
        logits: (K,) float32; target: the explained class; predicted: the argmax class.
    """

    row: int
    index: int
    id: Any
    lowres: Tensor
    scale: float
    logits: Tensor
    target: int
    predicted: int


@dataclass
class RunBatch:
    """Consecutive rows of a run (`Run.iter_batches`), as CPU tensors.

    Attributes:
        rows: their rows in the run; ids, indices: their sample ids and dataset positions.
        lowres, scale, logits, targets, predicted: as the run's arrays, for these rows.
    """

    rows: range
    ids: list[Any]
    indices: Tensor
    lowres: Tensor
    scale: Tensor
    logits: Tensor
    targets: Tensor
    predicted: Tensor


@dataclass
class Run:
    """A finished (or, with `allow_partial`, an unfinished) run directory, opened.

    Samples a run skipped (unreadable files) are left out of `ids`/`lowres`/...; they are in `skipped`.
    Rows are in dataset order. The arrays are lazy (`RunArray`): `run.lowres[i]`, `run.lowres[i:j]`,
    `run.logits[index_tensor]` read and verify only the chunks they touch and give CPU tensors; a damaged
    chunk raises `RunDamagedError` naming its file, batch and samples at the read that touches it.
    `run.sample(id)` reads one sample, `run.iter_batches(n)` streams them all.

    Attributes:
        path: the run directory.
        meta: the content of run.json (method, settings, model, versions, device, timings, skipped).
        ids: sample ids (relative file paths, or dataset indices) of the explained samples.
        indices: their positions in the dataset (int64).
        lowres: (N, h, w) float32 low-resolution maps after ReLU (not normalised), as `Explanation.lowres`
            ((N, d, h, w) for volumes)
            (`upsampled(i)` gives the normalised input-size map, as `Explanation.maps`).
        logits: (N, K) float32.
        targets: (N,) int64 explained class.
        predicted: (N,) int64 argmax class.
        skipped: [{"index", "id", "error"}] of the files that could not be read.
        scale: (N,) float32, the max each map was divided by for storage.
    """

    path: Path
    meta: dict[str, Any]
    ids: list[Any]
    indices: Tensor
    lowres: RunValues
    logits: RunValues
    targets: RunValues
    predicted: RunValues
    skipped: list[dict[str, Any]]
    scale: RunValues
    _rows_by_id: dict[Any, int] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def scores(self) -> Tensor:
        """Softmax probability of the explained class, (N,) (read in batches)."""
        step = 65536
        parts = [torch.softmax(self.logits[i:i + step], dim=1).gather(
            1, self.targets[i:i + step].clamp_min(0).view(-1, 1)).squeeze(1) for i in range(0, len(self), step)]
        return torch.cat(parts) if parts else torch.zeros(0)

    @property
    def method(self) -> str:
        """The method that explained the run."""
        return str(self.meta.get("method", "?"))

    @property
    def directory(self) -> RunDirectory:
        """Where the run's files are (overlays, inputs, report, eval outputs)."""
        return RunDirectory(self.path)

    @property
    def maps(self) -> RunValues:
        """Deprecated name of `lowres` (the low-resolution maps; `Explanation.maps` is the upsampled one)."""
        warnings.warn("Run.maps is deprecated: it is the low-resolution map, now named Run.lowres "
                      "(Run.upsampled(i) gives the input-size map)", DeprecationWarning, stacklevel=2)
        return self.lowres

    def position(self, key: int | str) -> int:
        """Row of sample `key`: a row number (int) or a sample id (str)."""
        if isinstance(key, str):
            if self._rows_by_id is None:  # built at the first lookup by id: O(1) after
                self._rows_by_id = dict(zip(self.ids, range(len(self.ids))))
            try:
                return self._rows_by_id[key]
            except KeyError:
                raise KeyError(f"{key!r} is not an explained sample of {self.path}") from None
        if not -len(self.ids) <= key < len(self.ids):
            raise IndexError(f"row {key} out of range for a run of {len(self.ids)} samples")
        return key % len(self.ids)

    def sample(self, key: int | str) -> RunSample:
        """Sample `key` (a row number or a sample id), read (and verified) alone."""
        row = self.position(key)
        return RunSample(row=row, index=int(self.indices[row]), id=self.ids[row], lowres=self.lowres[row],
                         scale=float(self.scale[row]), logits=self.logits[row], target=int(self.targets[row]),
                         predicted=int(self.predicted[row]))

    def iter_batches(self, batch_size: int) -> Iterator[RunBatch]:
        """Every sample in dataset order, `batch_size` rows at a time; each chunk is read once (rows are read
        in blocks of whole batches of at least `STREAM_BLOCK` rows and a chunk of every shard, then cut)."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        source = self.lowres.source if isinstance(self.lowres, RunArray) else None
        span = max(source.batch_size * source.world, STREAM_BLOCK) if source is not None else batch_size
        block = batch_size * -(-span // batch_size)
        for first in range(0, len(self), block):
            rows = range(first, min(first + block, len(self)))
            if source is not None:  # one plan of the chunks for every array
                positions = np.arange(rows.start, rows.stop)
                plan = source.plan(positions)
                values = {name: torch.from_numpy(source.read(name, positions, plan)) for name in DATA_ARRAYS}
            else:
                values = {name: getattr(self, name)[rows.start:rows.stop] for name in DATA_ARRAYS}
            for start in range(rows.start, rows.stop, batch_size):
                part = range(start, min(start + batch_size, rows.stop))
                cut = slice(part.start - first, part.stop - first)
                yield RunBatch(rows=part, ids=self.ids[part.start:part.stop], indices=self.indices[part.start:part.stop],
                               **{name: v[cut] for name, v in values.items()})

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


def open_run(path: str | os.PathLike[str], allow_partial: bool = False) -> Run:
    """Open a run directory written by `fastcam.explain_dataset` / `fastcam explain`.

    Reads run.json, ids.json and the commit records, and checks them and the arrays' metadata; the
    arrays are read lazily, each chunk verified (size, CRC-32C, status rows against the commit record)
    when a read first touches it (`fastcam verify` checks everything at once). Shards are merged back
    into dataset order: dataset index i lives in shard i % W at row i // W. A damaged file raises
    `fastcam.errors.RunDamagedError` (a ValueError) naming the file, the batch and its samples. An
    unfinished run raises a ValueError (re-run the same command to finish it) unless
    `allow_partial=True`, which gives the committed samples only.
    """
    directory = require_run(path)
    path = directory.root
    meta = directory.read_meta()
    if meta.get("fastcam_run") == 1:
        return _open_legacy_run(path, meta, allow_partial)
    meta, ids, shards, damages = check_run(directory, chunks=False)
    if damages:
        raise RunDamagedError(str(path), damages)
    assert ids is not None
    n, world = len(ids), int(meta["world_size"])
    committed = np.zeros(n, dtype=bool)
    skipped: list[dict[str, Any]] = []
    for shard in shards:
        assert shard.progress is not None
        rows = np.zeros(shard.geometry.rows, dtype=bool)
        for b in shard.committed:
            r = shard.batch_rows(b)
            rows[r.start:r.stop] = True
        committed[shard.rank::world] = rows
        skipped.extend(s for s in shard.progress["skipped"] if int(s["index"]) % world == shard.rank
                       and committed[int(s["index"])])
    if not committed.all() and not allow_partial:
        raise ValueError(f"run {str(path)!r} is incomplete ({int(committed.sum())} of {n} samples committed); "
                         "re-run the same command to finish it, or open_run(..., allow_partial=True)")
    explained = committed.copy()
    explained[[int(s["index"]) for s in skipped]] = False
    shapes = {s.specs["lowres"].shape[1:] for s in shards if "lowres" in s.specs}
    if len(shapes) > 1:
        raise ValueError(f"run {str(path)!r} has shards with different map sizes {sorted(shapes)}")
    spatial = shapes.pop() if shapes else (0, 0)
    classes = {s.specs["logits"].shape[1] for s in shards if "logits" in s.specs}
    keep = np.flatnonzero(explained)
    source = RunSource(directory, shards, ids, keep, spatial, classes.pop() if classes else 0)
    arrays = {name: RunArray(source, name) for name in DATA_ARRAYS}
    return Run(path=path, meta=meta, ids=[ids[i] for i in keep], indices=torch.from_numpy(keep.astype(np.int64)),
               skipped=sorted(skipped, key=lambda s: s["index"]), **arrays)


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
    parts: dict[str, list[tuple[int, np.ndarray]]] = {name: [] for name in DATA_ARRAYS}
    for rank in range(world):
        rows = ShardGeometry(n, rank, world, batch).rows
        progress = directory.read_progress(rank, world)
        skipped.extend(progress["skipped"])
        n_done = min(rows, progress["committed_batches"] * batch)
        committed[rank::world][:n_done] = True
        shard_dir = directory.shard(rank, world)
        if n_done == 0 or not shard_dir.exists():
            continue
        group = zarr.open_group(str(shard_dir), mode="r")
        if "ok" not in group:  # run.json edited to format 1 over a newer store
            raise RunDamagedError(str(path), [Damage(RUN_JSON, f"field 'fastcam_run' is 1, but {shard_dir.name} is "
                                                               "not a format-1 shard (no 'ok' array)")])
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
    full = {name: SCHEMA[name].empty(n, spatial, k) for name in DATA_ARRAYS}
    for name, chunks in parts.items():
        for rank, values in chunks:
            full[name][rank::world][: values.shape[0]] = values
    keep = np.flatnonzero(ok)
    lowres = torch.from_numpy(full["lowres"][keep] * full["scale"][keep].reshape(-1, *([1] * len(spatial))))
    return Run(
        path=path, meta=meta, ids=[ids[i] for i in keep], indices=torch.from_numpy(keep.astype(np.int64)),
        lowres=lowres, scale=torch.from_numpy(full["scale"][keep]),
        logits=torch.from_numpy(full["logits"][keep]), targets=torch.from_numpy(full["targets"][keep]),
        predicted=torch.from_numpy(full["predicted"][keep]), skipped=sorted(skipped, key=lambda s: s["index"]),
    )
