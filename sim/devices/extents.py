"""Extents -> the requests a device serves: pure numpy kernels under :class:`~sim.devices.flash.Flash`.

An extent is (offset, length) in bytes, an [n, 2] int64 row. A read batch's overlapping and adjacent extents merge
into one request (as a device or the host's block layer serves them) unless the reader issues each extent alone;
empty extents are dropped and negative values are a ValueError. The many-batch kernels give, per batch, exactly the
requests of the one-batch kernels (the flash prices every layer's preload in one pass). The flash prices requests by
length, so the histogram kernels count each batch's requests per distinct length (a policy's neuron reads have a
few: one bundle, or runs of adjacent bundles).
"""

from __future__ import annotations

import numpy as np


def merged(ext: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and lengths of the merged requests of [n, 2] int64 extents (checked, zero lengths dropped)."""
    if ext.size == 0:
        return ext[:, 0], ext[:, 1]
    lowest = ext.min()
    if lowest < 0:
        raise ValueError("extents: offsets and lengths must be >= 0")
    if lowest == 0:  # maybe a zero length (or just offset 0): drop empty extents
        ext = ext[ext[:, 1] > 0]
        if ext.shape[0] == 0:
            return ext[:, 0], ext[:, 1]
    order = np.argsort(ext[:, 0], kind="stable")  # [n]
    start = ext[:, 0].take(order)  # [n] contiguous (take beats fancy indexing of a strided column)
    reach = np.maximum.accumulate(start + ext[:, 1].take(order))  # [n] furthest end covered so far
    new = np.empty(start.size, dtype=bool)
    new[0] = True
    np.greater(start[1:], reach[:-1], out=new[1:])  # a gap before this extent starts a new request
    first = np.flatnonzero(new)  # [m]
    end = np.empty(first.size, dtype=np.int64)  # [m] reach at the last extent of each request
    end[:-1] = reach[first[1:] - 1]
    end[-1] = reach[-1]
    return start[first], end - start[first]


def merge_many(ext: np.ndarray, seg: np.ndarray, merge: bool) -> tuple[np.ndarray, np.ndarray]:
    """Request lengths of several batches at once: ext [N, 2] int64, seg [N] batch of each extent (ascending)
    -> (lengths [M] int64 grouped by batch in batch order, batch of each request [M]).

    Per batch the lengths equal ``merged(batch)[1]`` (``merge``) or ``unmerged(batch)``: batch b's offsets are
    shifted by b * span (span > every end), so one stable sort and one running maximum serve all batches and
    no request can reach across a batch boundary. Fast paths with the same integers: no 2-D boolean mask when no
    extent is empty, no sort when the extents are in order, and no running maximum when they are also disjoint
    (then every end is its own running maximum)."""
    if ext.size and ext.min() < 0:
        raise ValueError("extents: offsets and lengths must be >= 0")
    off, length = ext[:, 0], ext[:, 1]  # [N] views
    if not (length > 0).all():  # empty extents are dropped (1-D masks: a 2-D boolean index is far slower)
        keep = length > 0
        off, length, seg = off[keep], length[keep], seg[keep]
    if not merge or off.size == 0:
        return length, seg
    end = off + length  # [N]
    shift = seg * (int(end.max()) + 1)  # [N] batch-major offsets (in place below: fresh arrays cost page faults)
    end += shift
    start = np.add(off, shift, out=shift)  # [N]
    if not (start[1:] >= start[:-1]).all():  # a policy's neuron extents are already in order: no sort
        order = np.argsort(start, kind="stable")  # [N]
        start, end, seg = start.take(order), end.take(order), seg.take(order)
    disjoint = (start[1:] >= end[:-1]).all()
    reach = end if disjoint else np.maximum.accumulate(end)  # [N] furthest end covered so far
    first = np.empty(start.size, dtype=bool)  # [N] starts a request
    first[0] = True
    np.greater(start[1:], reach[:-1], out=first[1:])  # a gap (or a new batch) starts a new request
    if first.all():  # nothing merges
        return end - start, seg
    last = np.empty_like(first)  # [N] the extent before a request's first ends the previous one
    last[:-1] = first[1:]
    last[-1] = True
    lengths = reach[last]  # [M]
    lengths -= start[first]
    return lengths, seg[first]


def unmerged(ext: np.ndarray) -> np.ndarray:
    """Lengths of [n, 2] extents issued as they are (checked, zero lengths dropped)."""
    if ext.size and ext.min() < 0:
        raise ValueError("extents: offsets and lengths must be >= 0")
    return ext[ext[:, 1] > 0, 1]


def merge_in_order(ext: np.ndarray, sizes: np.ndarray, merge: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`merge_many` for batches like a policy's neuron reads, without its batch-major keys: ext [N, 2] int64
    of B batches of ``sizes`` [B] extents back to back -> (lengths [M] int64 grouped by batch, requests per batch
    [B]); None unless every extent is non-empty and, when merging, each batch is in offset order and disjoint
    (then an extent joins the previous one's request exactly when it starts where that one ends, and a batch's
    first extent always starts a request). Offsets and lengths must already be checked >= 0."""
    length = ext[:, 1]  # [N]
    if length.size and length.min() == 0:
        return None
    if not merge or length.size < 2:
        return length, sizes
    off = ext[:, 0]  # [N]
    end = off + length  # [N]
    starts = np.cumsum(sizes) - sizes  # [B] first extent of each batch
    gap = off[1:] - end[:-1]  # [N - 1] bytes from the previous extent's end to this one's start
    gap[starts[(starts > 0) & (starts < off.size)] - 1] = 1  # a batch's first extent starts a request regardless
    if gap.min() < 0:  # out of order or overlapping
        return None
    after_gap = np.flatnonzero(gap > 0)  # [M - 1]
    begin = np.zeros(1 + after_gap.size, np.int64)  # [M] first extent of each request: extent 0 and each one
    np.add(after_gap, 1, out=begin[1:])  # after a gap
    if begin.size == off.size:  # nothing merges
        return length, sizes
    last = np.append(after_gap, off.size - 1)  # [M] last extent of each request
    lengths = end.take(last)
    lengths -= off.take(begin)
    counts = np.diff(np.searchsorted(begin, np.append(starts, off.size)))  # [B]
    return lengths, counts


MAX_MULTIPLE = 64  # other request lengths that are all multiples k <= this of the shortest are counted by k


def length_histogram(lengths: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct request lengths and how many of each every batch has: lengths [M] int64 > 0 of B batches back to
    back (``counts`` [B] requests each) -> (values [U] int64 ascending, hist [B, U] int64).

    A policy's neuron reads are mostly one bundle long (the shortest), the rest runs of adjacent bundles merged:
    one pass finds the requests longer than the shortest, and only those R are counted by batch and length (by
    their multiple of the shortest, else with np.unique, a sort of R)."""
    counts = np.asarray(counts, dtype=np.int64)
    if lengths.size == 0:
        return np.zeros(0, np.int64), np.zeros((counts.size, 0), np.int64)
    unit = lengths.min()
    other = np.flatnonzero(lengths != unit)  # [R]
    longer = lengths.take(other)  # [R]
    k = longer // unit
    multiples = k.size and int(k.max()) <= MAX_MULTIPLE and (k * unit == longer).all()
    if multiples:  # column k: k * unit
        width, shortest = MAX_MULTIPLE + 1, 1
    else:  # column 0: unit, column 1 + i: the i-th longer length
        longer_values, k = np.unique(longer, return_inverse=True)
        width, shortest = longer_values.size + 1, 0
        k += 1
    batch = np.searchsorted(np.cumsum(counts), other, side="right")  # [R] batch of each longer request
    batch *= width
    batch += k
    hist = np.bincount(batch, minlength=counts.size * width).reshape(counts.size, width)  # [B, width]
    hist[:, shortest] = counts - hist.sum(axis=1)
    used = np.flatnonzero(hist.any(axis=0))  # [U]
    values = used * unit if multiples else np.concatenate([[unit], longer_values])[used]
    return values.astype(np.int64, copy=False), hist[:, used]


def histogram_in_order(ext: np.ndarray, sizes: np.ndarray, merge: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`length_histogram` of the requests of B batches of equal-length extents (a bundled layout's neuron
    reads), straight from the extents: ext [N, 2] int64 back to back, ``sizes`` [B] -> (values [U], hist [B, U]);
    None unless every extent has the same length g > 0 and, when merging, each batch is in offset order and
    disjoint. Then a request is a run of extents each starting where the previous one ends, k of them long
    (k * g bytes): only the J joins (extent i + 1 continuing extent i) are looked at after one pass over the
    offsets. Offsets and lengths must already be checked >= 0."""
    sizes = np.asarray(sizes, dtype=np.int64)
    length = ext[:, 1]  # [N]
    if length.size == 0 or length[0] == 0 or length.min() != length[0] or length.max() != length[0]:
        return None
    unit = int(length[0])
    if not merge:
        return np.array([unit], np.int64), sizes[:, None].copy()
    off = ext[:, 0]  # [N]
    gap = np.diff(off)  # [N - 1] bytes from extent i's end to extent i + 1's start, once g is taken off
    gap -= unit
    starts = np.cumsum(sizes) - sizes  # [B] first extent of each batch
    gap[starts[(starts > 0) & (starts < off.size)] - 1] = 1  # a batch's first extent starts a request regardless
    if gap.size and gap.min() < 0:  # out of order or overlapping
        return None
    joins = np.flatnonzero(gap == 0)  # [J] ascending
    requests = sizes - np.diff(np.searchsorted(joins, np.append(starts, off.size)))  # [B]
    width = 2  # column k: requests of k extents (column 1: single extents, filled below)
    batch = k = np.zeros(0, np.int64)
    if joins.size:
        breaks = np.flatnonzero(np.diff(joins) != 1)  # [R - 1] runs of consecutive joins: one merged request each
        first = np.append(joins[0], joins.take(breaks + 1))  # [R]
        k = np.append(joins.take(breaks), joins[-1]) - first + 2  # [R] extents per merged request
        batch = np.searchsorted(np.cumsum(sizes), first, side="right")  # [R]
        width = int(k.max()) + 1
        if sizes.size * width > 4 * off.size + 4096:  # a few very long requests: leave them to np.unique
            return None
    hist = np.bincount(batch * width + k, minlength=sizes.size * width).reshape(sizes.size, width)  # [B, width]
    hist[:, 1] = requests - hist.sum(axis=1)
    used = np.flatnonzero(hist.any(axis=0))  # [U]
    return used * unit, hist[:, used]
