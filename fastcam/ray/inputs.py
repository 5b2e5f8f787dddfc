"""The inputs of `fastcam.ray.explain_dataset`, each cut into the run's store batches (rows [b*B, (b+1)*B) in
the input's order) by a stage of CPU tasks that loads every store batch into one row (`batch`, `payload`):

- `IndexedInput`: a folder, a folder URI or a list of paths/URIs: items read by index, as the local engine's
  DataLoader reads them (a task per store batch);
- `RowsInput`: a `ray.data.Dataset` of rows (`id`, and `bytes` or `image`): a first pass reads, in the
  dataset's order, every row's id and a digest of its image (the run's ids and input fingerprints); the explain
  pass numbers the rows by id and groups them into store batches (a hash shuffle) before loading them.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import Tensor

from fastcam.io.images import IMAGE_SUFFIXES, ImageFolder, Preprocess, read_image
from fastcam.pipeline.data import SafeItems, collate, dataset_and_ids
from fastcam.pipeline.loop import input_fingerprints
from fastcam.ray.explainer import check_image_columns, given_images, load_rows

#: the CPUs one loading task asks Ray for (decoding a store batch is light next to explaining it)
DECODE_CPUS = 0.25


# ---------------------------------------------------------------------------------------------- files and URIs
def read_bytes(uri: str) -> bytes:
    """The bytes of a local path or of a URI of any file system pyarrow reads (s3://, gs://, hdfs://, ...)."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://")).read_bytes()
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    with filesystem.open_input_stream(path) as stream:
        return bytes(stream.read())


class UriImages(ImageFolder):
    """Images named by local paths or URIs (any file system pyarrow reads), in the given order, read and
    preprocessed exactly as `ImageFolder` reads a folder's files; their ids are the paths or URIs as given."""

    def __init__(self, uris: Sequence[str], preprocess: Preprocess) -> None:
        self._uris = {Path(u).as_posix(): u for u in uris}  # the item's path mangles "s3://" into "s3:/"
        super().__init__(root="", preprocess=preprocess, files=list(uris))

    def _read(self, path: Path) -> Tensor:
        uri = self._uris.get(path.as_posix(), str(path))
        return read_image(uri, read_bytes(uri))  # named by its URI in messages


def list_uris(folder: str) -> list[str]:
    """The image files under a folder URI (s3://bucket/prefix/), recursive, sorted."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(folder)
    scheme = folder.split("://", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    return sorted(f"{scheme}://{info.path}" for info in infos
                  if info.type == fs.FileType.File and Path(info.path).suffix.lower() in IMAGE_SUFFIXES)


class _LoadBatch:
    """CPU task: one store batch's images, loaded as the local engine's DataLoader loads them."""

    def __init__(self, dataset: Any) -> None:
        self.items = SafeItems(dataset)

    def job(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of these dataset indices, loaded (what an explaining actor takes)."""
        started = time.perf_counter()
        indices = [int(i) for i in indices]
        return _job(indices, collate([self.items[i] for i in indices]), started)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"batch": row["batch"], "payload": pickle.dumps(self.job(row["indices"]), protocol=5)}


def _job(indices: list[int], loaded: dict[str, Any], started: float) -> dict[str, Any]:
    """One loaded store batch as the explaining actors take it (pickled when it travels)."""
    return {"indices": indices, "loaded": loaded, "decode_s": time.perf_counter() - started}


@dataclass
class IndexedInput:
    """A folder, a folder URI or a list of paths/URIs: `dataset` items by index, `ids` in order."""

    dataset: Any
    ids: list[Any]
    info: dict[str, Any]
    #: the CPUs its loading stage asks Ray for while the actors run
    stage_cpus: float = DECODE_CPUS

    #: the items to try the model on (its number of classes) and the run's rules for skipped files
    @property
    def items(self) -> Any:
        return self.dataset

    def fingerprints(self, mode: str) -> np.ndarray | None:
        return input_fingerprints(self.dataset, range(len(self.ids)), mode)

    def labels(self) -> dict[str, int]:
        raise ValueError("targets='column' takes the classes of a ray.data.Dataset's 'target' column; for files, "
                         "give a targets file or mapping")

    def load_stage(self, ray: Any, todo: Sequence[int], batch_size: int, blocks: int | None, actors: int,
                   in_actors: bool = False) -> tuple[Any, Any]:
        """The dataset of the loaded store batches `todo` (a row each: `batch`, `payload`), and None; with
        `in_actors`, the dataset of the planned batches (`batch`, `indices`) and the loader the actors call."""
        n = len(self.ids)
        rows = [{"batch": b, "indices": np.arange(b * batch_size, min((b + 1) * batch_size, n))} for b in todo]
        # one store batch a block by default: an actor hands each batch on as soon as it is explained (blocks of
        # several batches held the first commit back until the whole block was explained: 14.6 s instead of 8.3 s)
        ds = ray.data.from_items(rows, override_num_blocks=blocks or len(rows))
        if in_actors:
            return ds, _LoadBatch(self.dataset).job
        return ds.map(_LoadBatch(self.dataset), num_cpus=DECODE_CPUS), None


def indexed_input(data: Any, preprocess: Preprocess) -> IndexedInput:
    """A folder (the local engine's own dataset: same settings), a folder URI or a list of paths/URIs."""
    if isinstance(data, (str, os.PathLike)) and "://" not in str(data):
        dataset, ids, info, _ = dataset_and_ids(data, preprocess)
        return IndexedInput(dataset, ids, info)
    if isinstance(data, (str, os.PathLike)):
        uris = list_uris(str(data))
        if not uris:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {str(data)!r}")
        kind: dict[str, Any] = {"kind": "uri-folder", "root": str(data)}
    elif isinstance(data, Sequence) and data and all(isinstance(u, (str, os.PathLike)) for u in data):
        uris = [str(u) for u in data]
        kind = {"kind": "uris"}
    else:
        raise TypeError("data must be a folder, a folder URI, a non-empty list of image paths/URIs or a "
                        f"ray.data.Dataset, got {type(data).__name__}")
    dataset = UriImages(uris, preprocess)
    return IndexedInput(dataset, list(uris), {**kind, "preprocess": preprocess.as_dict(),
                                              "size": list(dataset.size)})


# ---------------------------------------------------------------------------------------------- ray.data.Dataset
def is_ray_dataset(data: Any) -> bool:
    """Whether `data` is a `ray.data.Dataset` (without importing Ray for other inputs)."""
    ray_data = sys.modules.get("ray.data")
    return ray_data is not None and isinstance(data, ray_data.Dataset)


def row_digest(value: Any, name: str = "") -> int:
    """A row's input fingerprint: a hash of its encoded bytes (and the suffix of its path, which tells DICOM)
    or of its decoded array (dtype, shape, values); never 0 (0 means "not recorded" in a run's store)."""
    digest = hashlib.blake2b(digest_size=8)
    if isinstance(value, (bytes, bytearray, memoryview)):
        digest.update(f"bytes{Path(name).suffix}:".encode())
        digest.update(value)
    else:
        array = np.ascontiguousarray(np.asarray(value))
        digest.update(f"array:{array.dtype.str}:{array.shape}:".encode())
        digest.update(array.tobytes())
    return int.from_bytes(digest.digest(), "little") or 1


def _digests(batch: Mapping[str, Any]) -> np.ndarray:
    column = "bytes" if "bytes" in batch else "image"
    names = batch.get("path", batch["id"]) if column == "bytes" else [""] * len(batch["id"])
    return np.asarray([row_digest(v, str(n)) for v, n in zip(batch[column], names)], dtype=np.uint64)


def _row_index(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """CPU task of the first pass: each row's id, digest and (when there is one) target."""
    out = {"id": np.asarray(batch["id"], dtype=object), "digest": _digests(batch)}
    if "target" in batch:
        out["target"] = np.asarray(batch["target"], dtype=object)
    return out


def _plain_id(value: Any) -> str | int:
    """A row id as the run's ids.json keeps it: a str or an int."""
    if isinstance(value, (np.integer, int)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise TypeError(f"row ids must be strings or integers, got {value!r} ({type(value).__name__})")


class _AssignBatches:
    """CPU task of the explain pass: numbers each row by its id (the first pass's order), checks that its image
    is the one fingerprinted, and keeps the rows of the store batches to explain, with their `index` and `batch`."""

    def __init__(self, index_ref: Any, batch_size: int, todo: Sequence[int]) -> None:
        self.index_ref, self.batch_size, self.todo = index_ref, batch_size, np.asarray(sorted(todo), np.int64)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import ray

        index: dict[Any, tuple[int, int]] = ray.get(self.index_ref)
        rows = []
        for row_id in batch["id"]:
            found = index.get(_plain_id(row_id))
            if found is None:
                raise ValueError(f"the dataset yields a row {row_id!r} that its first pass did not: a "
                                 "ray.data.Dataset given to explain_dataset must give the same rows each time it runs")
            rows.append(found)
        positions = np.asarray([r[0] for r in rows], np.int64).reshape(-1)
        changed = [i for i, (digest, (_, want)) in enumerate(zip(_digests(batch), rows)) if int(digest) != want]
        if changed:
            raise ValueError(f"the image of row {batch['id'][changed[0]]!r} changed between the first pass and the "
                             "explain pass: a ray.data.Dataset given to explain_dataset must give the same rows "
                             "each time it runs")
        batches = positions // self.batch_size
        keep = np.isin(batches, self.todo)
        columns = [c for c in ("id", "path", "bytes", "image") if c in batch]
        out = {c: np.asarray(batch[c], dtype=object)[keep] for c in columns}
        out.update(index=positions[keep], batch=batches[keep])
        return out


def load_group(group: Mapping[str, Any], preprocess: Preprocess) -> dict[str, Any]:
    """CPU task of the explain pass: one store batch's rows (a group), in order, loaded as the local engine
    loads a batch of files."""
    started = time.perf_counter()
    order = np.argsort(np.asarray(group["index"]), kind="stable")
    rows = {k: np.asarray(v, dtype=object)[order] for k, v in group.items() if k != "index"}
    indices = [int(i) for i in np.asarray(group["index"])[order]]
    loaded = load_rows(rows, preprocess)
    return {"batch": np.asarray([int(group["batch"][0])]),
            "payload": np.asarray([pickle.dumps(_job(indices, loaded, started), protocol=5)], dtype=object)}


def own_context(ds: Any, ordered: bool) -> Any:
    """A view of a Ray dataset with its own `DataContext`: Ray's progress bars off (fastcam's bar counts stored
    images) and, when `ordered`, rows in the dataset's order; the caller's dataset and context stay as they are."""
    from ray.data import Dataset

    view = Dataset.copy(ds, _deep_copy=True)
    view.context.execution_options.preserve_order = ordered
    view.context.enable_progress_bars = False
    view.context.print_on_execution_start = False
    return view


@dataclass
class RowsInput:
    """A `ray.data.Dataset` of rows, indexed: `ids` and `digests` in the dataset's order, the `target` column
    (when it has one), the first rows as `items` (the run's size when the preprocessing sets none, and the model's
    number of classes), and the fitted preprocessing every row goes through."""

    ds: Any
    ids: list[str | int]
    digests: np.ndarray
    targets: list[Any] | None
    items: Any
    preprocess: Preprocess
    info: dict[str, Any]
    #: the CPUs its loading stage asks Ray for while the actors run: Ray's hash-shuffle tasks ask for one each
    stage_cpus: float = DECODE_CPUS + 1.0

    def fingerprints(self, mode: str) -> np.ndarray:
        return self.digests  # rows are always fingerprinted by their content: a dataset has no file times

    def labels(self) -> dict[str, int]:
        """The `target` column as a mapping id -> class (`targets="column"`)."""
        if self.targets is None:
            raise ValueError("targets='column' but the dataset has no 'target' column")
        bad = [(i, t) for i, t in zip(self.ids, self.targets)
               if not isinstance(t, (int, np.integer)) or isinstance(t, (bool, np.bool_))]
        if bad:
            raise ValueError(f"the 'target' column must hold integer class indices, got {bad[0][1]!r} for row "
                             f"{bad[0][0]!r}")
        return {str(i): int(t) for i, t in zip(self.ids, self.targets)}

    def load_stage(self, ray: Any, todo: Sequence[int], batch_size: int, blocks: int | None, actors: int,
                   in_actors: bool = False) -> tuple[Any, Any]:
        """The dataset of the loaded store batches `todo` (rows grouped by a shuffle, loaded by CPU tasks), and
        None (the groups are loaded where they are made, whatever `in_actors` says)."""
        index = {row_id: (i, int(d)) for i, (row_id, d) in enumerate(zip(self.ids, self.digests.tolist()))}
        assigned = self.ds.map_batches(_AssignBatches(ray.put(index), batch_size, todo), batch_format="numpy",
                                       num_cpus=DECODE_CPUS)
        grouped = assigned.groupby("batch", num_partitions=blocks or max(1, min(len(todo), 4 * actors)))
        return grouped.map_groups(partial(load_group, preprocess=self.preprocess), batch_format="numpy",
                                  num_cpus=DECODE_CPUS), None


def rows_input(ds: Any, preprocess: Preprocess, progress: bool = False) -> RowsInput:
    """Index a `ray.data.Dataset` (one read of every row, in order): its ids (a unique str or int each), the
    digests of its images and its targets; the size of its images from the first readable one when the
    preprocessing sets none."""
    from tqdm.auto import tqdm

    view = own_context(ds, ordered=True)
    columns = view.columns()
    if "id" not in columns:
        raise ValueError(f"the dataset needs an 'id' column (a unique string or integer per row), got columns "
                         f"{sorted(columns)}")
    check_image_columns(columns)
    ids: list[str | int] = []
    digests: list[np.ndarray] = []
    targets: list[Any] | None = [] if "target" in columns else None
    with tqdm(unit="row", desc="indexing the dataset", disable=not progress) as bar:
        indexed = view.map_batches(_row_index, batch_format="numpy", num_cpus=DECODE_CPUS)
        for batch in indexed.iter_batches(batch_size=None, batch_format="numpy"):
            ids += [_plain_id(i) for i in batch["id"]]
            digests.append(np.asarray(batch["digest"], np.uint64))
            if targets is not None:
                targets += list(batch["target"])
            bar.update(len(batch["id"]))
    if not ids:
        raise ValueError("the dataset has no rows")
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    if repeated:
        raise ValueError(f"the dataset's ids must be unique: {len(repeated)} repeat, e.g. {repeated[:3]}")
    items = None
    for batch in view.iter_batches(batch_size=64, batch_format="numpy"):
        try:
            items = given_images(batch, preprocess)  # sets the size from its first readable image if needed
        except ValueError:
            continue  # no image of these rows can be read: the next ones
        break
    if items is None:
        raise ValueError(f"none of the dataset's {len(ids)} images can be read")
    fitted = replace(preprocess, size=tuple(items.size))  # every row as `items` reads it (`ImageFolder.fitted`)
    info = {"kind": "ray-dataset", "columns": sorted(c for c in columns if c in ("id", "path", "bytes", "image",
                                                                                    "target")),
            "preprocess": preprocess.as_dict(), "size": list(items.size)}
    return RowsInput(view, ids, np.concatenate(digests), targets, items, fitted, info)
