"""What a shard holds: the one table of its arrays (name, dtype, fill value, shape after the row axis) and
the one shard geometry (which dataset indices a shard holds, and which rows each batch covers)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: the format run.json records (`fastcam_run`); 1 was written without checksums (read by the reader only)
STORE_FORMAT = 2
RUN_JSON = "run.json"
IDS_JSON = "ids.json"
#: `status` values; 0, the fill value, means "never written"
EXPLAINED, SKIPPED = 1, 2


@dataclass(frozen=True)
class ArraySpec:
    """One array of a shard.

    Attributes:
        name: the array's name in the shard's Zarr group.
        dtype: its storage dtype; None for the maps, stored in the run's `dtype` (float16 or float32).
        fill: the value of rows never written (and of skipped rows).
        tail: the shape after the row axis: "row" (none), "map" (the map's spatial shape) or "classes" (K).
    """

    name: str
    dtype: str | None
    fill: float
    tail: str = "row"

    def storage_dtype(self, map_dtype: str | np.dtype = "float32") -> np.dtype:
        """The dtype the array is stored in (`map_dtype` for the maps)."""
        return np.dtype(map_dtype if self.dtype is None else self.dtype)

    def tail_shape(self, spatial: Sequence[int] = (), classes: int = 0) -> tuple[int, ...]:
        """The shape after the row axis for maps of `spatial` shape and `classes` classes."""
        return {"row": (), "map": tuple(int(s) for s in spatial), "classes": (int(classes),)}[self.tail]

    def empty(self, rows: int, spatial: Sequence[int] = (), classes: int = 0,
              map_dtype: str | np.dtype = "float32") -> np.ndarray:
        """`rows` rows of the fill value."""
        return np.full((rows, *self.tail_shape(spatial, classes)), self.fill, dtype=self.storage_dtype(map_dtype))


#: every array of a shard, in the order a batch writes them (status and fingerprint last: a batch's
#: status chunk exists only once its data chunks do)
SCHEMA: dict[str, ArraySpec] = {spec.name: spec for spec in (
    ArraySpec("lowres", None, 0, "map"),  # each map divided by its max (`scale`)
    ArraySpec("scale", "float32", 0),
    ArraySpec("logits", "float32", math.nan, "classes"),
    ArraySpec("targets", "int64", -1),
    ArraySpec("predicted", "int64", -1),
    ArraySpec("status", "uint8", 0),
    ArraySpec("fingerprint", "uint64", 0),
)}
#: every array of a shard, in the order a batch writes them
ARRAYS = tuple(SCHEMA)
#: the arrays whose rows hold an explanation (written for every batch once they exist)
DATA_ARRAYS = tuple(name for name in ARRAYS if name not in ("status", "fingerprint"))


def shard_indices(n_items: int, rank: int, world: int) -> range:
    """The dataset indices shard `rank` of `world` holds, in row order: rank, rank + world, ... below n_items
    (strided: no padding duplicates, and the shards interleave back into dataset order)."""
    return range(rank, n_items, world)


def shard_rows(n_items: int, rank: int, world: int) -> int:
    """Rows of shard `rank`: the dataset indices rank, rank + world, ... below n_items."""
    return len(shard_indices(n_items, rank, world))


@dataclass(frozen=True)
class ShardGeometry:
    """Shard `rank` of `world` over `n_items` samples, in batches of `batch_size` rows: row r holds dataset
    index rank + world * r, and batch b covers rows [b * batch_size, (b + 1) * batch_size)."""

    n_items: int
    rank: int
    world: int
    batch_size: int

    @property
    def rows(self) -> int:
        """Rows of the shard."""
        return shard_rows(self.n_items, self.rank, self.world)

    @property
    def num_batches(self) -> int:
        """Batches of the shard (the last may be short)."""
        return -(-self.rows // self.batch_size)

    def batch_rows(self, batch: int) -> range:
        """The shard rows of batch `batch`."""
        return range(batch * self.batch_size, min((batch + 1) * self.batch_size, self.rows))

    def dataset_index(self, row: int) -> int:
        """The dataset index of shard row `row`."""
        return self.rank + self.world * row
