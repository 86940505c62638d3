"""Packed neuron sets: an [L, n] bool mask stored as 64 neurons per uint64 word, ``[L, nw]`` with ``nw =
ceil(n / 64)`` (little bit order: neuron i of a row is bit ``i % 64`` of word ``i // 64``; padding bits are 0).

Set algebra on packed rows is 64x less work than on bool masks (``a & ~b`` over 8192 words for OPT-6.7B's
524k neurons). The one costly step is turning bits back into indices; :func:`flat_indices` does it with a
16-bit lookup table, so its work is proportional to the set bits, not to the neurons.
"""

from __future__ import annotations

from functools import cache

import numpy as np


def n_words(n: int) -> int:
    return -(-n // 64)


def pack_rows(mask: np.ndarray) -> np.ndarray:
    """[L, n] bool -> [L, nw] uint64 packed rows."""
    n_layers, n = mask.shape
    out = np.zeros((n_layers, n_words(n) * 8), np.uint8)  # [L, 8 nw] bytes
    out[:, : -(-n // 8)] = np.packbits(mask, axis=1, bitorder="little")
    return out.view(np.uint64)


def unpack_rows(bits: np.ndarray, n: int) -> np.ndarray:
    """[L, nw] uint64 -> [L, n] bool."""
    return np.unpackbits(bits.view(np.uint8), axis=1, count=n, bitorder="little").view(bool)


def row_counts(bits: np.ndarray) -> np.ndarray:
    """[L, nw] uint64 -> [L] int64 set bits per row."""
    return np.bitwise_count(bits).sum(axis=1, dtype=np.int64)


def from_flat(flat: np.ndarray, n_layers: int, n: int) -> np.ndarray:
    """Distinct flat indices ``l * n + i`` (any order) -> [L, nw] packed rows."""
    mask = np.zeros((n_layers, n), bool)
    mask.reshape(-1)[flat] = True
    return pack_rows(mask)


@cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(popcount [65536] uint8, set-bit positions ascending [65536 * 16] uint8, row v = positions in v)."""
    v = np.arange(1 << 16, dtype=np.uint32)
    bit = ((v[:, None] >> np.arange(16, dtype=np.uint32)) & 1).astype(bool)  # [65536, 16]
    order = np.argsort(~bit, axis=1, kind="stable").astype(np.uint8)  # set positions first, ascending
    return bit.sum(axis=1).astype(np.uint8), order.reshape(-1)


def flat_indices(bits: np.ndarray, n: int) -> np.ndarray:
    """[L, nw] uint64 packed rows of n neurons -> sorted int64 flat indices ``l * n + i`` of the set bits.

    Work: one pass over the 16-bit chunks (compare + compress) and a few passes over the set bits."""
    popcount, positions = _tables()
    chunks = bits.reshape(-1).view(np.uint16)  # [L * 4 nw] (little-endian: chunk j holds bits 16 j ..)
    nz = np.flatnonzero(chunks) if len(chunks) < 4096 else np.compress(chunks != 0, arange(len(chunks)))
    vals = chunks.take(nz)  # [c]
    count = popcount.take(vals)  # [c]
    first = np.cumsum(count, dtype=np.int64)
    total = int(first[-1]) if len(first) else 0
    first -= count  # [c] index of each chunk's first set bit in the output
    row_chunks = bits.shape[1] * 4
    base = nz * 16 - (nz // row_chunks) * (row_chunks * 16 - n)  # [c] flat index of each chunk's bit 0
    out = np.repeat(base, count)  # [total]
    lut = np.repeat(vals.astype(np.int64) * 16 - first, count)  # [total] row of the table, minus the rank base
    lut += arange(total)
    out += positions.take(lut)
    return out


@cache
def _arange_cached(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def arange(n: int) -> np.ndarray:
    """np.arange(n) int64, read-only, from a cache of power-of-two sized ranges."""
    size = 1 << max(int(n - 1).bit_length(), 10)
    return _arange_cached(size)[:n]
