"""One chunk file of a shard array, read and verified: the one place that decodes a chunk.

A run's arrays are written by Zarr (v3) with the codecs `bytes` (little-endian) and `crc32c`, no
compression: a chunk file is the chunk's raw bytes followed by the CRC-32C of those bytes. Zarr decodes
a chunk through its async codec pipeline at about 0.5 ms per call; reading the file and checking its
CRC here costs about 0.02 ms (`bench/bench_store_scale.py`), which is what makes a streaming pass over a
million samples (tens of thousands of chunks) take seconds. The array metadata (each array's
`zarr.json`, Zarr v3's documented JSON) are read and checked against this exact layout first
(`array_spec`), so any other layout is refused rather than misread, and any Zarr v3 reader still reads
the files. Reading a run imports no Zarr (its import alone takes about a second).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: the codec names of every array of a run (store format 2): raw bytes (little-endian where the dtype has
#: a byte order), then the CRC-32C
CODECS = ["bytes", "crc32c"]
#: the dtypes a run stores (`schema.SCHEMA`), as Zarr v3 names them
DATA_TYPES = ("float16", "float32", "int64", "uint8", "uint64")


class ChunkProblem(Exception):
    """A chunk file that does not read back as written; the message says what is wrong with it."""


@dataclass(frozen=True)
class ChunkSpec:
    """How the chunks of one array are stored.

    Attributes:
        shape: the array's shape (rows first).
        chunk: one chunk's shape (batch_size rows).
        dtype: the stored dtype (little-endian).
    """

    shape: tuple[int, ...]
    chunk: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of a chunk's data (the file holds 4 more: the CRC-32C)."""
        return math.prod(self.chunk) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        """Dimensions of the array."""
        return len(self.shape)


def read_node(folder: Path) -> dict[str, Any]:
    """The Zarr v3 metadata (`zarr.json`) of a group or array folder; OSError or ValueError if unreadable."""
    with open(folder / "zarr.json", encoding="utf-8") as f:
        meta = json.load(f)
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
        raise ValueError("not Zarr v3 metadata")
    return meta


def array_spec(folder: Path, rows: int, batch_size: int) -> tuple[ChunkSpec | None, str, Path]:
    """The chunk layout of the array stored in `folder`, or (None, what is wrong, the file or folder at fault)."""
    try:
        meta = read_node(folder)
    except FileNotFoundError:
        return None, "array missing", folder
    except (OSError, ValueError) as exc:
        return None, f"unreadable array metadata ({type(exc).__name__}: {exc})", folder / "zarr.json"
    try:
        codecs = meta["codecs"]
        names = [c.get("name") for c in codecs]
        endian = codecs[0].get("configuration", {}).get("endian", "little") if codecs else None
        chunk = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        shape, dtype = tuple(meta["shape"]), meta["data_type"]
        keys = meta["chunk_key_encoding"]
        layout_ok = (meta.get("node_type") == "array" and dtype in DATA_TYPES and names == CODECS
                     and endian == "little" and meta["chunk_grid"].get("name") == "regular"
                     and keys.get("name") == "default" and keys.get("configuration", {}).get("separator") == "."
                     and not meta.get("storage_transformers"))
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        return None, f"unreadable array metadata ({type(exc).__name__}: {exc})", folder / "zarr.json"
    if not layout_ok or not shape or shape[0] != max(rows, 1) or chunk != (batch_size, *shape[1:]):
        return None, (f"array metadata do not match the run (shape {shape}, chunks {chunk}, codecs {names})"), \
            folder / "zarr.json"
    return ChunkSpec(shape, chunk, np.dtype(dtype).newbyteorder("<")), "", folder


def chunk_paths(directory: Any, rank: int, world: int, name: str, ndim: int) -> Callable[[int], str]:
    """batch -> the chunk file of `directory.chunk(rank, world, name, batch, ndim)` (a `RunDirectory`),
    from the text of one name it gives (building each path with pathlib costs more than reading the chunk)."""
    text = str(directory.chunk(rank, world, name, 0, ndim))
    cut = text.rindex("c.0") + 2
    head, tail = text[:cut], text[cut + 1:]
    return lambda batch: f"{head}{batch}{tail}"


def read_chunk(path: str | Path, spec: ChunkSpec) -> np.ndarray:
    """The chunk stored at `path`, its size and CRC-32C checked; ChunkProblem says what is wrong."""
    import google_crc32c

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ChunkProblem("chunk missing") from None
    except OSError as exc:
        raise ChunkProblem(f"chunk unreadable ({type(exc).__name__}: {exc})") from None
    if len(raw) != spec.nbytes + 4:
        raise ChunkProblem(f"chunk {'truncated' if len(raw) < spec.nbytes + 4 else 'too long'} ({len(raw)} bytes, "
                           f"expected {spec.nbytes + 4})")
    if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
        raise ChunkProblem("chunk altered (its CRC-32C checksum does not match its content)")
    return np.frombuffer(raw, dtype=spec.dtype, count=math.prod(spec.chunk)).reshape(spec.chunk)
