"""Encoded image files built byte by byte for the decoding tests."""
from __future__ import annotations

import struct
import zlib


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of width × height black pixels: tens of kB that decode to
    width·height pixels (a decompression bomb at large sizes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    pixels = zlib.compressobj(9)
    body = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
