"""Flash (SSD / UFS) read path: calibrated throughput curve, request merging, contention between readers.

Modelled:
- throughput as a function of request (chunk) size and of outstanding requests (queue depth), interpolated
  bilinearly in log-log space in the profile's calibration table and clamped at the table edges;
- a read of many (offset, length) extents is served as a device would: overlapping and adjacent extents merge
  into one larger request, and the batch keeps min(max_queue_depth, n_requests) requests outstanding;
- one fixed latency per read batch (a pure delay, not contended), then the transfer as a job on a
  :class:`FairShare` server, so reads issued by concurrent processes share the device's throughput.

Not modelled: writes, the page cache, FTL / garbage collection, per-channel parallelism beyond what the
calibration curve captures, tail latency, thermal throttling. Each read is ONE SimPy job and one span.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from sim.config.hardware import FlashSpec
from sim.devices.extents import histogram_in_order, length_histogram, merge_in_order, merge_many, merged, unmerged
from sim.devices.fairshare import FairShare
from sim.stats.recorder import Recorder


@dataclass(frozen=True, slots=True)
class ReadResult:
    nbytes: float
    n_requests: int
    service_s: float  # seconds the read would take alone on the device (latency + transfer)
    start_s: float
    end_s: float


MEMO_MAX_EXTENTS = 16  # batches of at most this many extents have their service time memoised
MAX_LENGTH_COLUMNS = 64  # more distinct request lengths: each batch's seconds summed on its own


class Flash:
    """A flash device reading into ``spec.target_memory``; see the module docstring for the model."""

    def __init__(self, env: simpy.Environment, spec: FlashSpec, name: str = "flash", recorder: Recorder | None = None):
        self.env = env
        self.spec = spec
        self.name = name
        self.recorder = recorder
        self.server = FairShare(env, name)
        self._log_chunk = np.log(np.asarray(spec.curve.chunk_sizes, dtype=float))  # [n_chunk]
        self._log_qd = np.log(np.asarray(spec.curve.queue_depths, dtype=float))  # [n_qd]
        self._log_thr = np.log(np.asarray(spec.curve.throughput, dtype=float))  # [n_qd, n_chunk]
        self._rows: dict[float, np.ndarray] = {}  # queue depth -> log throughput over chunk sizes [n_chunk]
        self._memo: dict[tuple[bytes, int | None], tuple[float, int, float]] = {}  # small batch -> _transfer
        self.bytes_read = 0.0
        self.n_reads = 0
        self.n_requests = 0

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

    def service_time_s(self, extents: np.ndarray, queue_depth: int | None = None) -> tuple[float, int, float]:
        """(seconds alone on the device, requests after merging, bytes) for one read batch."""
        transfer_s, n, nbytes = self._transfer(extents, queue_depth)
        return (self.spec.latency + transfer_s if n else 0.0), n, nbytes

    def _transfer(self, extents: np.ndarray, queue_depth: int | None, merge: bool = True) -> tuple[float, int, float]:
        """(transfer seconds, requests, bytes) of a batch. Batches of a few extents (whole ops, as the dense
        policies read the same ones every token) are memoised by content; the result is a pure function of it.
        ``merge=False``: the host issues every extent as its own request (separate pread calls), none merge."""
        ext = np.asarray(extents, dtype=np.int64).reshape(-1, 2)
        key = (ext.tobytes(), queue_depth, merge) if ext.shape[0] <= MEMO_MAX_EXTENTS else None
        found = self._memo.get(key) if key else None
        if found is None:
            found = self._service(merged(ext)[1] if merge else unmerged(ext), queue_depth)
            if key and len(self._memo) < 1024:
                self._memo[key] = found
        return found

    def _service(self, lengths: np.ndarray, queue_depth: int | None) -> tuple[float, int, float]:
        """lengths [m] int64 of the merged requests (all > 0) -> (transfer seconds, m, bytes)."""
        n = int(lengths.size)
        if n == 0:
            return 0.0, 0, 0.0
        qd = min(self.spec.max_queue_depth, n) if queue_depth is None else queue_depth
        if not qd > 0:
            raise ValueError(f"{self.name}: chunk_bytes and queue_depth(={qd!r}) must be > 0")
        values, hist = length_histogram(lengths, np.array([n]))  # [U], [1, U]
        return float(self._seconds(values, hist, float(qd))[0]), n, float(hist[0] @ values)

    def _seconds(self, values: np.ndarray, hist: np.ndarray, queue_depth: float) -> np.ndarray:
        """[B] transfer seconds of B batches holding hist [B, U] requests of each length values [U] (ascending) at
        ``queue_depth``: per batch, the running sum in ascending length of count * (length / throughput) -- a
        batch's float depends on its own requests only (a length it lacks adds an exact 0.0), whichever batches
        are priced with it."""
        per = values / self._throughput(values.astype(float), queue_depth)  # [U] seconds of one request
        if hist.shape[0] == 1 or per.size > MAX_LENGTH_COLUMNS:
            return np.array([np.cumsum(row * per)[-1] if per.size else 0.0 for row in hist])  # (cumsum: in order)
        out = np.zeros(hist.shape[0])  # [B]
        for u in range(per.size):
            out += hist[:, u] * per[u]
        return out

    def price(self, batches: list[np.ndarray], merge: bool = True) -> list[tuple[float, int, float]]:
        """(transfer seconds, requests, bytes) of each of several read batches, as :meth:`read` would price them
        one by one (same floats: a batch's seconds come from its own request lengths, :meth:`_seconds`), in a few
        vectorised passes over all of them (the throughput curve once per distinct request length). Batches of
        [n, 2] int64 extents; queue depth from each batch. Small batches (whole ops, read again every token) come
        from the memo of :meth:`_transfer` instead."""
        small = [i for i, b in enumerate(batches) if b.shape[0] <= MEMO_MAX_EXTENTS]
        if small:
            large = [i for i, b in enumerate(batches) if b.shape[0] > MEMO_MAX_EXTENTS]
            out = [None] * len(batches)
            for i, found in zip(large, self.price([batches[i] for i in large], merge), strict=True):
                out[i] = found
            for i in small:
                out[i] = self._transfer(batches[i], None, merge)
            return out
        if not batches:
            return []
        sizes = np.fromiter((b.shape[0] for b in batches), np.int64, len(batches))  # [B]
        ext = np.concatenate(batches).reshape(-1, 2).astype(np.int64, copy=False)  # [N, 2]
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
                out.append((0.0, 0, 0.0))
                continue
            if n < qd_max:  # fewer requests than the host keeps outstanding: its own queue depth
                seconds[b] = float(self._seconds(values, hist[b : b + 1], float(n))[0])
            out.append((seconds[b], n, float(nbytes[b])))
        return out

    def read_priced(self, priced: tuple[float, int, float], tag: str = "read") -> simpy.Event:
        """Start a read already priced by :meth:`price` (transfer seconds, requests, bytes): as :meth:`read`."""
        return self._start(*priced, tag)

    def read(
        self, extents: np.ndarray, tag: str = "read", queue_depth: int | None = None, merge: bool = True
    ) -> simpy.Event:
        """Read a batch of extents; the event's value is a :class:`ReadResult`. One span per read.

        ``merge``: adjacent and overlapping extents become one request, as a device (or the host's block layer)
        serves them; False keeps one request per extent (a reader issuing separate preads that never merge)."""
        return self._start(*self._transfer(extents, queue_depth, merge), tag)

    def read_bytes(self, nbytes: float, chunk_bytes: float, tag: str = "read") -> simpy.Event:
        """Read ``nbytes`` as n = ceil(nbytes / chunk_bytes) separate equal requests (no extents array).

        Equivalent to :meth:`read` on n non-adjacent extents of nbytes / n bytes each.
        """
        if not nbytes >= 0 or not chunk_bytes > 0:
            raise ValueError(f"{self.name}: nbytes(={nbytes!r}) must be >= 0 and chunk_bytes(={chunk_bytes!r}) > 0")
        n = math.ceil(nbytes / chunk_bytes)
        if n == 0:
            return self._start(0.0, 0, 0.0, tag)
        qd = min(self.spec.max_queue_depth, n)
        transfer_s = nbytes / float(self.throughput_Bps(nbytes / n, qd))
        return self._start(transfer_s, n, float(nbytes), tag)

    def _start(self, transfer_s: float, n_requests: int, nbytes: float, tag: str) -> simpy.Event:
        """Latency (pure delay, skipped for an empty batch), then the transfer as a FairShare job."""
        env, start_s = self.env, float(self.env.now)
        done = env.event()

        def result() -> ReadResult:
            return self._finish(transfer_s, n_requests, nbytes, tag, start_s, env.now)

        if n_requests and self.spec.latency > 0:
            env.timeout(self.spec.latency).callbacks.append(lambda _: self.server.submit(transfer_s, done, result))
        else:
            self.server.submit(transfer_s, done, result)
        return done

    def _finish(self, transfer_s: float, n_requests: int, nbytes: float, tag: str, start_s: float, end_s: float):
        """A read completes: counters and its span (only a read with requests has one)."""
        self.bytes_read += nbytes
        self.n_reads += 1
        self.n_requests += n_requests
        if self.recorder is not None and n_requests:
            self.recorder.span(self.name, tag, start_s, end_s, nbytes)
        return ReadResult(nbytes, n_requests, self.spec.latency + transfer_s if n_requests else 0.0, start_s, end_s)

    # -- atomic path: a read that has the device to itself, booked without SimPy events ---------------------------

    def price_one(self, extents: np.ndarray, merge: bool = True) -> tuple[float, int, float]:
        """(transfer seconds, requests, bytes) of one batch, as :meth:`read` prices it."""
        return self._transfer(extents, None, merge)

    def order_alone(self, priced: tuple[float, int, float], start_s: float) -> tuple[float, float, bool]:
        """Where :meth:`read_alone` would complete among jobs on other devices: (end, instant its transfer
        enters the server, whether it entered from the latency timeout). SimPy completes same-time jobs in the
        order their completions were scheduled, which this key sorts by (see Link.order_alone)."""
        transfer_s, n_requests, _ = priced
        enter_s = self._enter_s(n_requests, start_s)
        return FairShare.end_alone_s(enter_s, transfer_s), enter_s, bool(n_requests) and self.spec.latency > 0

    def _enter_s(self, n_requests: int, start_s: float) -> float:
        """When a read issued at ``start_s`` enters the server: after the latency timeout unless it is empty."""
        return start_s + self.spec.latency if n_requests and self.spec.latency > 0 else start_s

    def read_alone(self, priced: tuple[float, int, float], start_s: float, tag: str = "read") -> float:
        """:meth:`read_priced` issued at ``start_s`` on an idle device that nothing else uses until the read ends:
        books the same counters, span and server accounting (:meth:`FairShare.run_alone`) and returns the end time
        the event path would reach (the latency timeout at start + latency, then the transfer)."""
        transfer_s, n_requests, nbytes = priced
        end_s = self.server.run_alone(self._enter_s(n_requests, start_s), transfer_s)
        self._finish(transfer_s, n_requests, nbytes, tag, float(start_s), end_s)
        return end_s
