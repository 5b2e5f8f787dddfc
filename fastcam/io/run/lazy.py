"""Lazy arrays over a run's shards: a read decodes and verifies only the chunks it touches.

`RunSource` maps rows of a run (its explained samples, in dataset order) to (shard, batch, row in the
chunk), reads each touched chunk once (`chunks.read_chunk`: size and CRC-32C checked; a few recent ones
kept), and checks the batch's `status` chunk against the shard's commit record before any of its data
are used. `RunArray` is one array of the run seen through it: indexing gives CPU tensors.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from fastcam.errors import RunDamagedError
from fastcam.io.run.check import ShardCheck, skipped_rows, status_problem
from fastcam.io.run.chunks import ChunkProblem, chunk_paths, read_chunk
from fastcam.io.run.damage import Damage, describe_samples, relative_path
from fastcam.io.run.layout import RunDirectory
from fastcam.io.run.schema import SCHEMA

#: the dtype each array is read in (maps are stored in float16 or float32, read in float32)
READ_DTYPES = {"lowres": np.float32, "scale": np.float32, "logits": np.float32, "targets": np.int64,
               "predicted": np.int64}

#: where rows live: (shard rank, batch, positions in the output, rows in the chunk), each a slice when the
#: positions are evenly spaced (dataset order: every W-th output row from consecutive chunk rows)
Plan = list[tuple[int, int, Any, Any]]


def _as_slice(values: np.ndarray) -> Any:
    """`values` as an equivalent slice when they are evenly spaced and increasing, else themselves."""
    if len(values) == 1:
        return slice(int(values[0]), int(values[0]) + 1)
    step = int(values[1] - values[0])
    if step > 0 and int(values[-1] - values[0]) == step * (len(values) - 1) and (len(values) == 2 or bool(
            (np.diff(values) == step).all())):
        return slice(int(values[0]), int(values[-1]) + 1, step)
    return values


class RunSource:
    """The chunks of a run's shards, read on demand, verified, and the last few kept.

    Args:
        directory: the run directory.
        shards: each shard's check (commit record and array metadata; `check_shard(..., chunks=False)`).
        ids: the ids of the whole dataset (named in damage messages).
        indices: the dataset index of each row of the run (its explained samples, in dataset order).
        spatial: the maps' spatial shape; classes: the number of logits.
    """

    def __init__(self, directory: RunDirectory, shards: Sequence[ShardCheck], ids: Sequence[Any] | None,
                 indices: np.ndarray, spatial: tuple[int, ...], classes: int) -> None:
        self.directory, self.shards, self.ids = directory, list(shards), ids
        self.indices = np.asarray(indices, dtype=np.int64)
        self.spatial, self.classes = spatial, classes
        self.world = len(self.shards)
        self.batch_size = self.shards[0].geometry.batch_size if self.shards else 1
        self._skipped = [skipped_rows(shard.progress or {}, shard.geometry) for shard in self.shards]
        self._status_ok: set[tuple[int, int]] = set()
        self._cache: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._capacity = 8 * (self.world + 1)
        self._paths: dict[tuple[str, int], Callable[[int], str]] = {}  # (name, rank) -> batch -> chunk file

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of array `name` as read: (rows, *tail)."""
        return (len(self.indices), *SCHEMA[name].tail_shape(self.spatial, self.classes))

    def _damaged(self, rank: int, path: Any, problem: str, batch: int) -> RunDamagedError:
        shard = self.shards[rank]
        damage = Damage(relative_path(path, self.directory.root), problem, rank, (batch,),
                        describe_samples(rank, self.world, shard.batch_rows(batch), self.ids))
        return RunDamagedError(str(self.directory.root), [damage])

    def chunk(self, name: str, rank: int, batch: int) -> np.ndarray:
        """Chunk `batch` of array `name` of shard `rank`, verified (RunDamagedError naming it otherwise)."""
        key = (name, rank, batch)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        shard = self.shards[rank]
        if name != "status" and (rank, batch) not in self._status_ok:
            found = status_problem(self.chunk("status", rank, batch), shard.geometry, batch, self._skipped[rank])
            if found:
                where = (self.directory.chunk(rank, self.world, "status", batch, 1) if found[0] == "status"
                         else self.directory.progress(rank, self.world))
                raise self._damaged(rank, where, found[1], batch)
            self._status_ok.add((rank, batch))
        spec = shard.specs.get(name)
        if spec is None:
            raise self._damaged(rank, self.directory.shard(rank, self.world) / name, "array missing", batch)
        paths = self._paths.get((name, rank))
        if paths is None:
            paths = self._paths[(name, rank)] = chunk_paths(self.directory, rank, self.world, name, spec.ndim)
        path = paths(batch)
        try:
            values = read_chunk(path, spec)
        except ChunkProblem as exc:
            raise self._damaged(rank, path, str(exc), batch) from None
        self._cache[key] = values
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return values

    def plan(self, positions: np.ndarray) -> Plan:
        """Where the rows `positions` of the run live, chunk by chunk."""
        index = self.indices[positions]
        shard_row, rank = np.divmod(index, self.world)
        batch, within = np.divmod(shard_row, self.batch_size)
        key = rank * (int(batch.max(initial=0)) + 1) + batch
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        return [(int(rank[g[0]]), int(batch[g[0]]), _as_slice(g), _as_slice(within[g]))
                for g in np.split(order, bounds) if len(g)]

    def read(self, name: str, positions: np.ndarray, plan: Plan | None = None) -> np.ndarray:
        """Rows `positions` of array `name`, as read (maps times their scale: the raw maps)."""
        plan = self.plan(positions) if plan is None else plan
        out = np.empty((len(positions), *self.shape(name)[1:]), dtype=READ_DTYPES[name])
        for rank, batch, slots, rows in plan:
            out[slots] = self.chunk(name, rank, batch)[rows]
        if name == "lowres":
            out *= self.read("scale", positions, plan).reshape(-1, *([1] * len(self.spatial)))
        return out


def positions_of(key: Any, length: int) -> tuple[np.ndarray, bool]:
    """The row positions a key selects in `length` rows, and whether it selects a single row (dropped axis)."""
    if isinstance(key, Tensor):
        key = key.item() if key.dim() == 0 and not key.dtype.is_floating_point else key.cpu().numpy()
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        if not -length <= key < length:
            raise IndexError(f"row {key} out of range for a run of {length} samples")
        return np.array([key % length], dtype=np.int64), True
    if isinstance(key, slice):
        return np.arange(*key.indices(length), dtype=np.int64), False
    array = np.asarray(key)
    if array.dtype == bool:
        if array.shape != (length,):
            raise IndexError(f"a boolean index must have {length} entries, got shape {array.shape}")
        return np.flatnonzero(array), False
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise IndexError(f"rows must be integers, slices or booleans, got {array.dtype}")
    array = array.astype(np.int64).reshape(-1)
    if array.size and (array.min() < -length or array.max() >= length):
        raise IndexError(f"rows out of range for a run of {length} samples")
    return array % max(length, 1), False


class RunArray:
    """One array of a run, read lazily: `a[i]`, `a[i:j]`, `a[index_tensor]`, `a[bool_mask]` read (and verify)
    only the chunks they touch and give CPU tensors; `len`, `shape`, `dtype` and `dim()` read nothing;
    `load()` (or any torch function, `np.asarray`) reads the whole array, for small runs."""

    def __init__(self, source: RunSource, name: str) -> None:
        self.source, self.name = source, name

    @property
    def shape(self) -> torch.Size:
        """(rows, *tail)."""
        return torch.Size(self.source.shape(self.name))

    @property
    def dtype(self) -> torch.dtype:
        """The dtype rows are read in: float32 (maps, scales, logits) or int64 (classes)."""
        return torch.from_numpy(np.zeros(0, READ_DTYPES[self.name])).dtype

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def size(self, dim: int | None = None) -> Any:
        """The shape, or its size along `dim`."""
        return self.shape if dim is None else self.shape[dim]

    def __getitem__(self, key: Any) -> Tensor:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        positions, single = positions_of(key, len(self))
        values = torch.from_numpy(self.source.read(self.name, positions))
        values = values[0] if single else values
        return values[(slice(None),) * (0 if single else 1) + rest] if rest else values

    def load(self) -> Tensor:
        """The whole array (for small runs: a million 7x7 maps are 200 MB)."""
        return self[:]

    def __iter__(self) -> Iterator[Tensor]:
        step = 4096
        for start in range(0, len(self), step):
            yield from self[start:start + step]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.load().numpy()
        return values if dtype is None else values.astype(dtype)

    def __repr__(self) -> str:
        return f"RunArray({self.name!r}, shape={tuple(self.shape)}, dtype={self.dtype})"

    @classmethod
    def __torch_function__(cls, func: Callable[..., Any], types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        """Any torch function of a RunArray runs on the loaded tensor."""
        def load(value: Any) -> Any:
            if isinstance(value, RunArray):
                return value.load()
            if isinstance(value, (list, tuple)):
                return type(value)(load(v) for v in value)
            return value

        return func(*load(tuple(args)), **{k: load(v) for k, v in (kwargs or {}).items()})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("source", "name"):
            raise AttributeError(name)
        return getattr(self.load(), name)  # tensor methods (.float(), .tolist(), .mean(), ...) on the loaded array

    __hash__ = None  # type: ignore[assignment]


def _on_loaded(op: str) -> Callable[..., Any]:
    """The tensor operator `op` applied to the loaded array (and to a loaded other operand)."""
    def apply(self: RunArray, *other: Any) -> Any:
        return getattr(self.load(), op)(*(o.load() if isinstance(o, RunArray) else o for o in other))

    apply.__name__ = op
    return apply


for _op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__add__", "__radd__", "__sub__", "__rsub__",
            "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__neg__", "__abs__"):
    setattr(RunArray, _op, _on_loaded(_op))
