"""One chunk file of a shard array, read and verified: the one place that decodes a chunk.

A run's arrays are written by Zarr (v3) with the codecs `bytes` (little-endian) and `crc32c`, no
compression: a chunk file is the chunk's raw bytes followed by the CRC-32C of those bytes. Zarr decodes
a chunk through its async codec pipeline at about 0.5 ms per call; reading the file and checking its
CRC here costs about 0.02 ms (`bench/bench_store_scale.py`), which is what makes a streaming pass over a
million samples (tens of thousands of chunks) take seconds. The array metadata are checked against this
exact layout first (`chunk_spec`), so any other layout is refused rather than misread, and any Zarr v3
reader still reads the files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the codec names of every array of a run (store format 2): raw bytes (little-endian where the dtype has
#: a byte order), then the CRC-32C
CODECS = ["bytes", "crc32c"]


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


def chunk_spec(array: Any, rows: int, batch_size: int) -> tuple[ChunkSpec | None, str]:
    """The chunk layout of an opened Zarr array, or (None, what does not match the run)."""
    codecs = [c.to_dict() for c in array.metadata.codecs]
    names = [c.get("name") for c in codecs]
    endian = codecs[0].get("configuration", {}).get("endian", "little") if codecs else None
    spec = ChunkSpec(tuple(array.shape), tuple(array.chunks), np.dtype(array.dtype).newbyteorder("<"))
    if names != CODECS or endian != "little" or spec.shape[0] != max(rows, 1) or spec.chunk != (batch_size, *spec.shape[1:]):
        return None, (f"array metadata do not match the run (shape {spec.shape}, chunks {spec.chunk}, "
                      f"codecs {names})")
    return spec, ""


def read_chunk(path: Path, spec: ChunkSpec) -> np.ndarray:
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
