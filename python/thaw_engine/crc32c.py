"""CRC-32C (Castagnoli) of checkpoint chunks.

Uses the ``google-crc32c`` C extension when it is installed (hardware CRC, GB/s); otherwise a
vectorised numpy version: the data is cut into 4 KiB lanes whose CRCs advance together four bytes
at a time (slicing-by-4), then the lane CRCs are folded together with GF(2) shift operators.
CRC is linear, so leading zero bytes do not change a CRC started from zero, and the initial value
0xFFFFFFFF is the same as XOR-ing the first four bytes with 0xFF.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import numpy as np

_POLY = 0x82F63B78
_LANE = 4096  # bytes per lane; a power of two


@lru_cache(maxsize=1)
def _tables() -> np.ndarray:
    t0 = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0[i] = c
    tables = [t0]
    for _ in range(3):
        prev = tables[-1]
        tables.append((prev >> np.uint32(8)) ^ t0[prev & np.uint32(0xFF)])
    return np.stack(tables)


def _apply(op: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Applies a linear operator given as 4 byte tables [4, 256] to uint32 values."""
    return (
        op[0][x & np.uint32(0xFF)]
        ^ op[1][(x >> np.uint32(8)) & np.uint32(0xFF)]
        ^ op[2][(x >> np.uint32(16)) & np.uint32(0xFF)]
        ^ op[3][x >> np.uint32(24)]
    )


def _op_from_images(images: np.ndarray) -> np.ndarray:
    """Byte tables of the linear map that sends bit k to images[k]."""
    op = np.zeros((4, 256), dtype=np.uint32)
    for i in range(4):
        for bit in range(8):
            mask = (np.arange(256) >> bit) & 1
            op[i] ^= np.where(mask == 1, images[8 * i + bit], np.uint32(0)).astype(np.uint32)
    return op


@lru_cache(maxsize=1)
def _zero_byte_op() -> np.ndarray:
    t0 = _tables()[0]
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    images = t0[basis & np.uint32(0xFF)] ^ (basis >> np.uint32(8))
    return _op_from_images(images)


def _compose_square(op: np.ndarray) -> np.ndarray:
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    return _op_from_images(_apply(op, _apply(op, basis)))


@lru_cache(maxsize=1)
def _lane_op() -> np.ndarray:
    op = _zero_byte_op()
    n = 1
    while n < _LANE:
        op = _compose_square(op)
        n *= 2
    return op


def _crc_small(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    t0 = _tables()[0]
    for b in data:
        crc = int(t0[(crc ^ b) & 0xFF]) ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc32c_numpy(data: Any) -> int:
    """CRC-32C of a bytes-like object, computed with numpy only."""
    buf = np.frombuffer(data, dtype=np.uint8)
    n = buf.size
    if n < 64:
        return _crc_small(bytes(buf))
    lanes = -(-n // _LANE)
    total_lanes = 1 << (lanes - 1).bit_length()
    pad = total_lanes * _LANE - n
    arr = np.zeros(total_lanes * _LANE, dtype=np.uint8)
    arr[pad:] = buf
    arr[pad : pad + 4] ^= np.uint8(0xFF)
    # only the lanes that hold data need the byte loop; leading all-zero lanes have CRC 0
    first = pad // _LANE
    words = arr[first * _LANE :].view("<u4").reshape(total_lanes - first, _LANE // 4).T.copy()
    t = _tables()
    crc = np.zeros(total_lanes - first, dtype=np.uint32)
    for row in words:
        crc ^= row
        crc = (
            t[3][crc & np.uint32(0xFF)]
            ^ t[2][(crc >> np.uint32(8)) & np.uint32(0xFF)]
            ^ t[1][(crc >> np.uint32(16)) & np.uint32(0xFF)]
            ^ t[0][crc >> np.uint32(24)]
        )
    crcs = np.zeros(total_lanes, dtype=np.uint32)
    crcs[first:] = crc
    op = _lane_op()
    while crcs.size > 1:
        crcs = _apply(op, crcs[0::2]) ^ crcs[1::2]
        op = _compose_square(op)
    return int(crcs[0]) ^ 0xFFFFFFFF


def _google() -> Callable[[Any], int] | None:
    try:
        from google_crc32c import cext  # type: ignore[import-not-found]
    except Exception:  # not installed, or only its slow pure-Python fallback
        return None

    def value(data: Any) -> int:
        view = memoryview(data).cast("B")
        crc = 0
        step = 16 << 20
        for start in range(0, len(view), step):
            crc = cext.extend(crc, bytes(view[start : start + step]))
        return int(crc)

    return value


@lru_cache(maxsize=1)
def _impl() -> tuple[str, Callable[[Any], int]]:
    g = _google()
    if g is not None:
        return "google-crc32c", g
    return "numpy", crc32c_numpy


def crc32c(data: Any) -> int:
    """CRC-32C of a bytes-like object (bytes, memoryview, mmap, numpy array)."""
    return _impl()[1](data)


def implementation() -> str:
    """Which implementation :func:`crc32c` uses ("google-crc32c" or "numpy")."""
    return _impl()[0]
