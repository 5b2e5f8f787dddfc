"""The run store: a directory of Zarr arrays written batch by batch, with atomic commits.

Why Zarr (v3) rather than HDF5: a Zarr array is a folder of independent chunk files, and Zarr's local
store writes each chunk to a temporary file and renames it into place, so a process killed at any
moment (SIGKILL included) never leaves a half-written chunk, and several processes (torchrun ranks)
can write their own arrays with no shared file handle or lock. HDF5 keeps everything in one file whose
internal B-tree a killed writer can corrupt (recovering needs `h5clear`/SWMR care), and concurrent
writers need MPI-parallel HDF5. Zarr also reads lazily by chunk and is a well-kept, widely used library.

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
        targets  (n,)   int64      explained class (-1 for a skipped file)
        predicted (n,)  int64      the model's predicted class, argmax of the logits (-1 if skipped)
        ok       (n,)   bool       False for a file that could not be read (skipped)
    shard-00000-of-00001.progress.json   the commit record of that shard (see below)
    overlays/, inputs/, report.html      optional outputs
    eval/                                `fastcam eval`'s tables and plots

`RunDirectory` is the one place that names these files and folders: the pipeline writes through it,
`open_run`, the report and `fastcam eval` read through it.

Commit protocol. Batch b of a shard covers rows [b*B, (b+1)*B) and is exactly one chunk of every array,
so a batch is written without reading anything back. A batch counts only once the shard's progress
file says so: the chunks are written first, then the progress file is replaced atomically (write a
temporary file, fsync, `os.replace`). A restart resumes at the first uncommitted batch, and overwrites
whatever chunks a killed process left of it: nothing committed is lost, duplicated or recomputed. The
progress file also logs which session (process start) committed which batches, as runs of
[session, first batch, last batch], which the tests use to prove that no batch was computed twice. The arrays themselves are created in a temporary folder and renamed into
place, so a half-created store cannot exist either.

Durability: chunk files are not fsynced (Zarr does not), so the guarantee covers a killed process,
not a power cut of the whole machine.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

STORE_FORMAT = 1
RUN_JSON = "run.json"
IDS_JSON = "ids.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers (and a restart after a kill) see either the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with Path(path).open(encoding="utf-8") as f:
        return json.load(f)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


#: a shard's commit record before its first commit
_EMPTY_PROGRESS: dict[str, Any] = {"committed_batches": 0, "commits": [], "skipped": [], "seconds": 0.0,
                                   "images": 0, "sessions": 0, "devices": []}


@dataclass(frozen=True)
class RunDirectory:
    """The layout of a run directory: every file and folder name of a run, in one place.

    The pipeline creates, writes and finalises runs through it; `open_run`, the HTML report and
    `fastcam eval` find their files through it.
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

    def is_run(self) -> bool:
        """Whether the directory holds a run (run.json is written last when a run is set up)."""
        return self.run_json.is_file()

    def read_meta(self) -> dict[str, Any]:
        return read_json(self.run_json)

    def read_ids(self) -> list[Any]:
        return read_json(self.ids_json)

    def read_progress(self, rank: int, world: int) -> dict[str, Any]:
        """The shard's commit record (an empty one before its first commit)."""
        path = self.progress(rank, world)
        return read_json(path) if path.exists() else copy.deepcopy(_EMPTY_PROGRESS)

    def create(self, ids: list[Any], settings: dict[str, Any], *, input_size: Sequence[int] | None,
               versions: dict[str, Any]) -> None:
        """Set up a new run: ids.json, then run.json (last: its presence means the directory is set up).

        `settings` must hold "method", "batch_size" and "world_size". An existing directory with other
        content than a run is refused.
        """
        if self.root.exists() and any(p for p in self.root.iterdir() if not p.name.startswith(".")):
            raise ValueError(f"{str(self.root)!r} exists and is not a fastcam run directory; "
                             "choose an empty or new --out")
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
        write_json_atomic(self.run_json, meta)

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
            "n_explained": images, "n_skipped": len(skipped), "skipped": sorted(skipped, key=lambda s: s["index"]),
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


class ShardWriter:
    """Writes one rank's shard batch by batch; `commit` makes a batch count (atomically)."""

    def __init__(self, run_dir: str | Path, rank: int, world: int, n_items: int, batch_size: int,
                 dtype: str = "float16") -> None:
        self.run_dir = Path(run_dir)
        self.rank, self.world = rank, world
        self.rows = shard_rows(n_items, rank, world)
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.path = RunDirectory(self.run_dir).shard(rank, world)
        self.progress_path = RunDirectory(self.run_dir).progress(rank, world)
        self.num_batches = -(-self.rows // batch_size)
        self._arrays: dict[str, Any] | None = None
        self._clean_leftovers()
        self.progress = RunDirectory(self.run_dir).read_progress(rank, world)
        self.progress["sessions"] += 1
        self.session = self.progress["sessions"]
        if self.path.exists():
            self._open()

    def _clean_leftovers(self) -> None:
        """Remove what a killed process can leave behind: a half-created store, temporary chunk files."""
        for tmp in self.run_dir.glob(f".{self.path.name}.creating*"):
            shutil.rmtree(tmp, ignore_errors=True)
        if self.path.exists():
            for partial in self.path.rglob("*.partial"):
                partial.unlink(missing_ok=True)

    @property
    def committed_batches(self) -> int:
        return int(self.progress["committed_batches"])

    def batch_rows(self, batch: int) -> range:
        return range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.rows))

    def _open(self) -> None:
        import zarr

        group = zarr.open_group(str(self.path), mode="r+")
        self._arrays = {name: group[name] for name in ("lowres", "scale", "logits", "targets", "predicted", "ok")}

    def _create(self, spatial: tuple[int, ...], num_classes: int) -> None:
        """Create the arrays in a temporary folder, then rename it into place (atomic)."""
        import zarr

        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.creating", dir=self.run_dir))
        group = zarr.open_group(str(tmp), mode="w")
        n, b = max(self.rows, 1), self.batch_size
        group.create_array("lowres", shape=(n, *spatial), chunks=(b, *spatial), dtype=self.dtype, fill_value=0,
                           compressors=None)
        group.create_array("scale", shape=(n,), chunks=(b,), dtype="float32", fill_value=0, compressors=None)
        group.create_array("logits", shape=(n, num_classes), chunks=(b, num_classes), dtype="float32",
                           fill_value=float("nan"), compressors=None)
        group.create_array("targets", shape=(n,), chunks=(b,), dtype="int64", fill_value=-1, compressors=None)
        group.create_array("predicted", shape=(n,), chunks=(b,), dtype="int64", fill_value=-1, compressors=None)
        group.create_array("ok", shape=(n,), chunks=(b,), dtype="bool", fill_value=False, compressors=None)
        group.attrs.update({"rank": self.rank, "world_size": self.world, "rows": self.rows,
                            "batch_size": self.batch_size})
        os.replace(tmp, self.path)
        self._open()

    def write_batch(self, batch: int, ok: Tensor, lowres: Tensor | None, logits: Tensor | None,
                    targets: Tensor | None) -> None:
        """Write batch `batch`: `ok` (B,) for every row; lowres/logits/targets for the ok rows only."""
        rows = self.batch_rows(batch)
        ok_np = ok.cpu().numpy().astype(bool)
        if ok_np.shape[0] != len(rows):
            raise ValueError(f"batch {batch} has {ok_np.shape[0]} rows, expected {len(rows)}")
        if lowres is None or not ok_np.any():
            if self._arrays is None:  # nothing to store yet: the unwritten chunks read as "skipped"
                return
            spatial, k = tuple(self._arrays["lowres"].shape[1:]), self._arrays["logits"].shape[1]
            lowres = torch.zeros(0, *spatial)
            logits = torch.zeros(0, k)
            targets = torch.zeros(0, dtype=torch.long)
        assert logits is not None and targets is not None
        lowres = lowres.detach().float()
        if self._arrays is None:
            self._create(tuple(lowres.shape[1:]), logits.shape[1])
        assert self._arrays is not None
        # Per-map scaling: stored map in [0, 1] (full float16 precision), its max kept in float32.
        spatial_dims = tuple(range(1, lowres.dim()))
        scale = lowres.amax(dim=spatial_dims) if lowres.shape[0] else torch.zeros(0)
        normalised = lowres / scale.clamp_min(torch.finfo(torch.float32).tiny).view(-1, *([1] * len(spatial_dims)))
        n, spatial, k = len(rows), tuple(self._arrays["lowres"].shape[1:]), self._arrays["logits"].shape[1]
        if tuple(lowres.shape[1:]) != spatial or logits.shape[1] != k:
            raise ValueError(f"batch {batch} has maps {tuple(lowres.shape[1:])} and {logits.shape[1]} classes; "
                             f"the store holds {spatial} and {k}")
        full_maps = np.zeros((n, *spatial), dtype=self.dtype)
        full_scale = np.zeros((n,), dtype=np.float32)
        full_logits = np.full((n, k), np.nan, dtype=np.float32)
        full_targets = np.full((n,), -1, dtype=np.int64)
        full_predicted = np.full((n,), -1, dtype=np.int64)
        full_maps[ok_np] = normalised.cpu().numpy().astype(self.dtype)
        full_scale[ok_np] = scale.cpu().numpy()
        full_logits[ok_np] = logits.detach().float().cpu().numpy()
        full_targets[ok_np] = targets.cpu().numpy()
        full_predicted[ok_np] = logits.detach().argmax(dim=1).cpu().numpy()
        sl = slice(rows.start, rows.stop)
        self._arrays["lowres"][sl] = full_maps
        self._arrays["scale"][sl] = full_scale
        self._arrays["logits"][sl] = full_logits
        self._arrays["targets"][sl] = full_targets
        self._arrays["predicted"][sl] = full_predicted
        self._arrays["ok"][sl] = ok_np

    def commit(self, batch: int, skipped: Sequence[dict[str, Any]], seconds: float, images: int,
               device: str) -> None:
        """Mark batch `batch` done; batches commit strictly in order."""
        if batch != self.committed_batches:
            raise RuntimeError(f"batch {batch} committed out of order (next is {self.committed_batches})")
        p = self.progress
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
        write_json_atomic(self.progress_path, p)

    def committed_log(self) -> list[tuple[int, int]]:
        """(batch, session) of every commit, in commit order."""
        return [(b, session) for session, first, last in self.progress["commits"] for b in range(first, last + 1)]

    @property
    def done(self) -> bool:
        return self.committed_batches >= self.num_batches


# ---------------------------------------------------------------------------------------------- reader
@dataclass
class Run:
    """A finished (or, with `allow_partial`, an unfinished) run directory, read back.

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


def open_run(path: str | os.PathLike[str], allow_partial: bool = False) -> Run:
    """Read a run directory written by `fastcam.explain_dataset` / `fastcam explain`.

    Shards are merged back into dataset order: dataset index i lives in shard i % W at row i // W.
    An unfinished run raises a ValueError (re-run the same command to finish it) unless
    `allow_partial=True`, which returns the committed samples only.
    """
    import zarr

    path = Path(path)
    directory = RunDirectory(path)
    if not directory.is_run():
        raise FileNotFoundError(f"{str(path)!r} is not a fastcam run directory (no {RUN_JSON})")
    meta = directory.read_meta()
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
        lowres=lowres, logits=torch.from_numpy(full["logits"][keep]), targets=torch.from_numpy(full["targets"][keep]),
        predicted=torch.from_numpy(full["predicted"][keep]),
        skipped=sorted(skipped, key=lambda s: s["index"]),
    )
