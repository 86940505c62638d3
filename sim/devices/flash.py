"""Flash (SSD / UFS) read path: calibrated throughput curve, request merging, contention between readers.

Modelled:
- throughput as a function of request (chunk) size and of outstanding requests (queue depth), interpolated
  bilinearly in log-log space in the profile's calibration table and clamped at the table edges;
- a read of many (offset, length) extents is served as a device would: overlapping and adjacent extents merge
  into one larger request, and the batch keeps min(max_queue_depth, n_requests) requests outstanding;
- a request shorter than the device's ``page_bytes`` (if the profile gives one) costs a whole page; with
  ``aligned`` a request moves the whole pages it covers and requests meeting in a page are one (an O_DIRECT
  reader: what ``python -m sim calibrate`` measures and ``sim/real`` reads with);
- one fixed latency per read batch (a pure delay, not contended), then the transfer as a job on a
  :class:`FairShare` server, so reads issued by concurrent processes share the device's throughput.

Not modelled: writes, the page cache, FTL / garbage collection, per-channel parallelism beyond what the
calibration curve captures, tail latency, thermal throttling.

One verb, :meth:`Flash.read`, of a batch already priced by :meth:`Flash.price` (a pure function of the extents:
the engine prices all reads of a step in one vectorised pass). Each read is ONE SimPy job.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import simpy

from sim.config.hardware import FlashSpec
from sim.devices.extents import histogram_in_order, length_histogram, merge_in_order, merge_many, merged, unmerged
from sim.devices.fairshare import FairShare


class Priced(NamedTuple):
    """A read batch as the device serves it: seconds of exclusive transfer, requests after merging, bytes."""

    transfer_s: float
    n_requests: int
    nbytes: float


MEMO_MAX_EXTENTS = 16  # batches of at most this many extents have their service time memoised
MAX_LENGTH_COLUMNS = 64  # more distinct request lengths: each batch's seconds summed on its own


class Flash:
    """A flash device reading into ``spec.target_memory``; see the module docstring for the model."""

    def __init__(self, env: simpy.Environment, spec: FlashSpec, name: str = "flash"):
        self.env = env
        self.spec = spec
        self.name = name
        self.server = FairShare(env, name)
        self._log_chunk = np.log(np.asarray(spec.curve.chunk_sizes, dtype=float))  # [n_chunk]
        self._log_qd = np.log(np.asarray(spec.curve.queue_depths, dtype=float))  # [n_qd]
        self._log_thr = np.log(np.asarray(spec.curve.throughput, dtype=float))  # [n_qd, n_chunk]
        self._rows: dict[float, np.ndarray] = {}  # queue depth -> log throughput over chunk sizes [n_chunk]
        self._memo: dict[tuple[bytes, int | None, bool], Priced] = {}  # small batch -> its price

    def throughput_Bps(self, chunk_bytes: np.ndarray | float, queue_depth: float) -> np.ndarray | float:  # noqa: N802
        """Device throughput (B/s) for requests of ``chunk_bytes`` with ``queue_depth`` outstanding."""
        chunk = np.asarray(chunk_bytes, dtype=float)
        if not queue_depth > 0 or (chunk <= 0).any():
            raise ValueError(f"{self.name}: chunk_bytes and queue_depth(={queue_depth!r}) must be > 0")
        out = self._throughput(chunk, float(queue_depth))
        return float(out) if out.ndim == 0 else out

    def _throughput(self, chunk: np.ndarray, queue_depth: float) -> np.ndarray:
        """throughput_Bps without the argument checks (chunk > 0 and queue_depth > 0 already hold)."""
        return np.exp(np.interp(np.log(chunk), self._log_chunk, self._row(queue_depth)))  # clamped

    def _row(self, queue_depth: float) -> np.ndarray:
        """Log throughput over the chunk-size grid at ``queue_depth``: linear in log qd, clamped. Cached."""
        row = self._rows.get(queue_depth)
        if row is None:
            grid, table = self._log_qd, self._log_thr
            x = min(max(math.log(queue_depth), grid[0]), grid[-1])
            hi = min(max(int(np.searchsorted(grid, x, side="right")), 1), grid.size - 1)
            w = 0.0 if grid.size == 1 else (x - grid[hi - 1]) / (grid[hi] - grid[hi - 1])
            row = table[0] if grid.size == 1 else table[hi - 1] * (1 - w) + table[hi] * w  # [n_chunk]
            if len(self._rows) < 1024:
                self._rows[queue_depth] = row
        return row

    @staticmethod
    def merge_extents(extents: np.ndarray) -> np.ndarray:
        """[n, 2] int64 (offset, length) -> [m, 2] sorted, overlapping and adjacent extents merged.

        Zero-length extents are dropped; a negative offset or length is a ValueError.
        """
        start, length = merged(np.asarray(extents, dtype=np.int64).reshape(-1, 2))  # [m], [m]
        return np.stack([start, length], axis=1)

    def price_one(self, extents: np.ndarray, merge: bool = True, queue_depth: int | None = None) -> Priced:
        """The price of one batch (see :meth:`price`); ``queue_depth`` overrides the host's (tests, what-ifs).

        ``merge=False``: the host issues every extent as its own request (separate pread calls), none merge.
        Batches of a few extents (whole ops, as the dense policies read the same ones every token) are memoised by
        content; the result is a pure function of it."""
        ext = self._pages(np.asarray(extents, dtype=np.int64).reshape(-1, 2))
        key = (ext.tobytes(), queue_depth, merge) if ext.shape[0] <= MEMO_MAX_EXTENTS else None
        found = self._memo.get(key) if key else None
        if found is None:
            found = self._service(merged(ext)[1] if merge else unmerged(ext), queue_depth)
            if key and len(self._memo) < 1024:
                self._memo[key] = found
        return found

    def _service(self, lengths: np.ndarray, queue_depth: int | None) -> Priced:
        """lengths [m] int64 of the merged requests (all > 0) -> (transfer seconds, m, bytes)."""
        n = int(lengths.size)
        if n == 0:
            return Priced(0.0, 0, 0.0)
        qd = min(self.spec.max_queue_depth, n) if queue_depth is None else queue_depth
        if not qd > 0:
            raise ValueError(f"{self.name}: chunk_bytes and queue_depth(={qd!r}) must be > 0")
        values, hist = length_histogram(lengths, np.array([n]))  # [U], [1, U]
        return Priced(float(self._seconds(values, hist, float(qd))[0]), n, float(hist[0] @ values))

    def _seconds(self, values: np.ndarray, hist: np.ndarray, queue_depth: float) -> np.ndarray:
        """[B] transfer seconds of B batches holding hist [B, U] requests of each length values [U] (ascending) at
        ``queue_depth``: per batch, the running sum in ascending length of count * (length / throughput) -- a
        batch's float depends on its own requests only (a length it lacks adds an exact 0.0), whichever batches
        are priced with it."""
        moved = np.maximum(values.astype(float), self.spec.page_bytes)  # a request reads whole pages at least
        per = moved / self._throughput(moved, queue_depth)  # [U] seconds of one request
        if hist.shape[0] == 1 or per.size > MAX_LENGTH_COLUMNS:
            return np.array([np.cumsum(row * per)[-1] if per.size else 0.0 for row in hist])  # (cumsum: in order)
        out = np.zeros(hist.shape[0])  # [B]
        for u in range(per.size):
            out += hist[:, u] * per[u]
        return out

    def price(self, batches: list[np.ndarray], merge: bool = True) -> list[Priced]:
        """(transfer seconds, requests, bytes) of each of several read batches, the same floats as pricing them one
        by one with :meth:`price_one` (a batch's seconds come from its own request lengths, :meth:`_seconds`), in a
        few vectorised passes over all of them (the throughput curve once per distinct request length). Batches of
        [n, 2] int64 extents; queue depth from each batch. Small batches (whole ops, read again every token) come
        from the memo of :meth:`price_one` instead."""
        small = [i for i, b in enumerate(batches) if b.shape[0] <= MEMO_MAX_EXTENTS]
        if small:
            large = [i for i, b in enumerate(batches) if b.shape[0] > MEMO_MAX_EXTENTS]
            out = [None] * len(batches)
            for i, found in zip(large, self.price([batches[i] for i in large], merge), strict=True):
                out[i] = found
            for i in small:
                out[i] = self.price_one(batches[i], merge)
            return out
        if not batches:
            return []
        sizes = np.fromiter((b.shape[0] for b in batches), np.int64, len(batches))  # [B]
        ext = self._pages(np.concatenate(batches).reshape(-1, 2).astype(np.int64, copy=False))  # [N, 2]
        if ext.min() < 0:
            raise ValueError("extents: offsets and lengths must be >= 0")
        found = histogram_in_order(ext, sizes, merge)  # a bundled layout's neuron reads: from the extents
        if found is None:
            found = merge_in_order(ext, sizes, merge)  # other in-order reads: no sort, no batch keys
            if found is None:
                lengths, seg = merge_many(ext, np.repeat(np.arange(len(batches)), sizes), merge)  # [M], [M]
                found = lengths, np.bincount(seg, minlength=len(batches))
            found = length_histogram(*found)
        values, hist = found  # [U] distinct request lengths, [B, U] requests of each per batch
        counts = hist.sum(axis=1)  # [B] requests per batch
        nbytes = (hist @ values).tolist()  # [B] exact integers
        qd_max = self.spec.max_queue_depth
        seconds = self._seconds(values, hist, float(qd_max)).tolist()  # [B] at full queue depth
        out = []
        for b, n in enumerate(counts.tolist()):
            if n == 0:
                out.append(Priced(0.0, 0, 0.0))
                continue
            if n < qd_max:  # fewer requests than the host keeps outstanding: its own queue depth
                seconds[b] = float(self._seconds(values, hist[b : b + 1], float(n))[0])
            out.append(Priced(seconds[b], n, float(nbytes[b])))
        return out

    def _pages(self, ext: np.ndarray) -> np.ndarray:
        """[n, 2] extents as the device moves them: unchanged, or (``aligned``) the whole pages each covers (an
        empty extent stays empty)."""
        if not self.spec.aligned:
            return ext
        page = int(self.spec.page_bytes)
        lo = ext[:, 0] // page * page
        hi = np.where(ext[:, 1] > 0, -(-(ext[:, 0] + ext[:, 1]) // page) * page, lo)
        return np.stack([lo, hi - lo], axis=1)

    def service_s(self, priced: Priced) -> tuple[float, float]:
        """(latency, transfer seconds) of a priced read alone on the device; an empty batch has no latency."""
        return (self.spec.latency if priced.n_requests else 0.0), priced.transfer_s

    def read(self, priced: Priced) -> simpy.Event:
        """Read a priced batch: the latency (a pure delay, skipped for an empty batch), then the transfer as a
        FairShare job shared with concurrent reads. The event succeeds when the last byte has arrived."""
        latency_s, transfer_s = self.service_s(priced)
        done = self.env.event()
        if latency_s > 0:
            self.env.timeout(latency_s).callbacks.append(lambda _: self.server.submit(transfer_s, done))
        else:
            self.server.submit(transfer_s, done)
        return done
