"""A PNG writer for the view's frames (8-bit RGB, zlib): enough for a screenshot, and no imaging
library to install."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | Path, rgba: np.ndarray) -> None:
    """Write an H x W x 4 (or x 3) uint8 image as an RGB PNG (alpha dropped: frames are opaque)."""
    img = np.ascontiguousarray(np.asarray(rgba, np.uint8)[:, :, :3])
    h, w = img.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1)   # filter 0 per row
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + _chunk(b"IEND", b""))
    Path(path).write_bytes(data)


def read_png(path: str | Path) -> np.ndarray:
    """Read back what write_png wrote (RGB, 8-bit, filter 0 rows only): for tests and checks."""
    b = Path(path).read_bytes()
    if b[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    i, idat, w, h = 8, b"", 0, 0
    while i < len(b):
        n, kind = struct.unpack(">I4s", b[i: i + 8])
        data = b[i + 8: i + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", data[:10])
            if (depth, ctype) != (8, 2):
                raise ValueError(f"{path}: only 8-bit RGB PNGs are read here")
        elif kind == b"IDAT":
            idat += data
        i += 12 + n
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 3)
    if rows[:, 0].any():
        raise ValueError(f"{path}: filtered rows are not read here")
    return rows[:, 1:].reshape(h, w, 3)
