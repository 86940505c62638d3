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
def _positions() -> np.ndarray:
    """[65536 * 16] uint8 set-bit positions ascending: row v (entries 16 v ..) lists the set bits of v, then zeros."""
    v = np.arange(1 << 16, dtype=np.uint32)
    bit = ((v[:, None] >> np.arange(16, dtype=np.uint32)) & 1).astype(bool)  # [65536, 16]
    return np.argsort(~bit, axis=1, kind="stable").astype(np.uint8).reshape(-1)  # set positions first, ascending


LUT_BITS = 20  # a key's low field: row of the positions table plus the rank in it, 16 v + r < 2^20


def flat_indices(bits: np.ndarray, n: int) -> np.ndarray:
    """[L, nw] uint64 packed rows of n neurons -> sorted int64 flat indices ``l * n + i`` of the set bits.

    Set bit j, the r-th of 16-bit chunk c (value v, bit 0 at flat index b), is ``b + positions[16 v + r]``. Its key
    ``b << 20 | (16 v + r)`` is the chunk's rank-0 key plus r, i.e. the key of the chunk plus j minus the chunk's
    first output index: so all keys come from one running sum over the bits (1 per bit, each chunk's first bit
    jumping from the previous chunk's key) instead of expanding per-chunk values with np.repeat.
    Work: one pass over the 16-bit chunks (compare + compress) and a few passes over the chunks and the set bits."""
    chunks = bits.reshape(-1).view(np.uint16)  # [L * 4 nw] (little-endian: chunk j holds bits 16 j ..)
    nz = np.flatnonzero(chunks != 0)  # [c] (a bool mask: numpy finds its nonzeros several times faster)
    if len(nz) == 0:
        return np.zeros(0, np.int64)
    vals = chunks.take(nz)  # [c]
    first = np.zeros(len(nz) + 1, np.int64)  # [c + 1] output index of each chunk's first set bit, then the total
    np.cumsum(np.bitwise_count(vals), out=first[1:])
    first, total = first[:-1], int(first[-1])
    row_chunks = bits.shape[1] * 4
    key = nz * 16  # [c] flat index of each chunk's bit 0 ...
    if row_chunks * 16 != n:
        key -= (nz // row_chunks) * (row_chunks * 16 - n)  # ... less the padding bits of the rows before
    key <<= LUT_BITS
    key += vals.astype(np.int64) << 4
    key -= first  # [c] rank-0 key minus the output index
    step = np.empty(len(nz), np.int64)  # [c] the running sum's increment at each chunk's first bit
    step[0] = key[0]
    np.subtract(key[1:], key[:-1], out=step[1:])
    step[1:] += 1
    keys = np.ones(total, np.int64)  # [total]
    keys[first] = step
    np.cumsum(keys, out=keys)  # [total] key of every set bit
    out = keys >> LUT_BITS
    keys &= (1 << LUT_BITS) - 1
    out += _positions().take(keys)
    return out


@cache
def _arange_cached(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def arange(n: int) -> np.ndarray:
    """np.arange(n) int64, read-only, from a cache of power-of-two sized ranges."""
    size = 1 << max(int(n - 1).bit_length(), 10)
    return _arange_cached(size)[:n]
