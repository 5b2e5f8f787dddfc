"""Reading a run back (`open_run` -> `Run`), verified; runs of store format 1 (no checksums) are read by the
legacy reader kept here."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from fastcam.errors import RunDamagedError
from fastcam.io.run.check import check_run
from fastcam.io.run.layout import RunDirectory, require_run
from fastcam.io.run.schema import DATA_ARRAYS, EXPLAINED, SCHEMA, ShardGeometry


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
        """The method that explained the run."""
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


def open_run(path: str | os.PathLike[str], allow_partial: bool = False) -> Run:
    """Read a run directory written by `fastcam.explain_dataset` / `fastcam explain`, verifying it.

    Shards are merged back into dataset order: dataset index i lives in shard i % W at row i // W.
    Every chunk read is checked (see the module docstring); a missing, truncated or altered file raises
    `fastcam.errors.RunDamagedError` (a ValueError) naming the file, the batch and its samples. An
    unfinished run raises a ValueError (re-run the same command to finish it) unless
    `allow_partial=True`, which returns the committed samples only.
    """
    directory = require_run(path)
    path = directory.root
    meta = directory.read_meta()
    if meta.get("fastcam_run") == 1:
        return _open_legacy_run(path, meta, allow_partial)
    meta, ids, shards, damages = check_run(directory)
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
    full = {name: SCHEMA[name].empty(n, spatial, k) for name in DATA_ARRAYS}
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
        lowres=lowres,
        logits=torch.from_numpy(full["logits"][keep]), targets=torch.from_numpy(full["targets"][keep]),
        predicted=torch.from_numpy(full["predicted"][keep]), skipped=sorted(skipped, key=lambda s: s["index"]),
    )
