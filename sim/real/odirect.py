"""Reading a file as the simulated flash device does, for real: ``O_DIRECT`` (no page cache), queue depth as threads.

``O_DIRECT`` moves whole aligned blocks into aligned memory: a request for bytes ``[off, off + len)`` reads the
covering blocks ``[floor(off / A) * A, ceil((off + len) / A) * A)`` (A = :data:`ALIGN_BYTES`) into a page-aligned
buffer (a numpy array whose address is a multiple of the alignment). Requests are the extents a plan names, merged
when adjacent (``merge``, as the simulated device merges them) and, after alignment, joined where their blocks touch
or overlap (a real reader never reads one block twice); with ``merge=False`` every extent is its own aligned
request. The simulated device with ``aligned: true`` prices exactly these requests. ``queue_depth`` threads issue
them, each ``os.preadv`` releasing the GIL, so up to ``queue_depth`` requests are outstanding at once -- the knob
the device's throughput curve is measured over.

:class:`DirectReader` returns the same :class:`~sim.lab.flash_image.reader.ReadBuffer` as the buffered reader of the
flash image; it counts the bytes asked for (``bytes_read``), the bytes the device moved (``bytes_moved``) and the
requests (``requests``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.devices.extents import merged
from sim.errors import SimError
from sim.lab.flash_image.reader import ReadBuffer

ALIGN_BYTES = 4096  # O_DIRECT alignment of offsets, lengths and buffers (the page size; >= any logical block)


class DirectIOUnavailableError(SimError):
    """The file system (tmpfs, some network and overlay file systems) or the OS refuses ``O_DIRECT``."""


@dataclass(frozen=True)
class Requests:
    """Aligned requests of one read: file offsets and lengths [m] and where each lands in the buffer [m]."""

    offsets: np.ndarray  # [m] int64, multiples of ALIGN_BYTES
    lengths: np.ndarray  # [m] int64, multiples of ALIGN_BYTES
    at: np.ndarray  # [m] int64 buffer offset of each request

    @property
    def moved_bytes(self) -> int:
        return int(self.lengths.sum())


def aligned_requests(extents: np.ndarray, merge: bool = True) -> tuple[np.ndarray, Requests, np.ndarray]:
    """[n, 2] extents -> (the extents as delivered [k, 2] sorted, the aligned requests, [k] where each extent's
    first byte lands in the buffer). ``merge``: adjacent extents are one extent (else each is its own)."""
    ext = np.asarray(extents, np.int64).reshape(-1, 2)
    start, length = merged(ext) if merge else unmerged_sorted(ext)
    if start.size == 0:
        empty = np.zeros(0, np.int64)
        return np.zeros((0, 2), np.int64), Requests(empty, empty, empty), empty
    lo = start // ALIGN_BYTES * ALIGN_BYTES  # [k] covering blocks of each extent
    hi = -(-(start + length) // ALIGN_BYTES) * ALIGN_BYTES
    reach = np.maximum.accumulate(hi)  # extents are sorted by start, so lo is non-decreasing
    new = np.ones(start.size, bool)
    if merge:  # extents meeting in a block are one request (else each extent is its own)
        new[1:] = lo[1:] > reach[:-1]
    first = np.flatnonzero(new)  # [m]
    req_lo = lo[first]
    req_hi = np.maximum.reduceat(hi, first)  # [m]
    req_len = req_hi - req_lo
    at = np.concatenate([[0], np.cumsum(req_len)[:-1]]).astype(np.int64)  # [m] buffer offset of each request
    owner = np.cumsum(new) - 1  # [k] request of each extent
    lands = at[owner] + start - req_lo[owner]  # [k]
    return np.stack([start, length], axis=1), Requests(req_lo, req_len, at), lands


def unmerged_sorted(ext: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every non-empty extent on its own, sorted by offset (what ``merge=False`` reads)."""
    if (ext < 0).any():
        raise ValueError("extents: offsets and lengths must be >= 0")
    kept = ext[ext[:, 1] > 0]
    order = np.argsort(kept[:, 0], kind="stable")
    return kept[order, 0], kept[order, 1]


class DirectReader:
    """Reads byte extents of one file with ``O_DIRECT`` at a queue depth (threads); see the module docstring.

    Use as a context manager (closes the file and the threads). ``bytes_read`` / ``bytes_moved`` / ``requests``
    count what every read asked for and what the device moved."""

    def __init__(self, path: str | Path, queue_depth: int = 1):
        self.path = Path(path)
        if queue_depth < 1:
            raise ValueError(f"queue_depth must be >= 1 (got {queue_depth})")
        self.queue_depth = queue_depth
        self.fd = open_direct(self.path)
        self.pool = ThreadPoolExecutor(queue_depth, thread_name_prefix="odirect") if queue_depth > 1 else None
        self._bufs: dict[object, np.ndarray] = {}  # slot -> buffer, grown on demand, reused between reads
        self.bytes_read = self.bytes_moved = self.requests = 0

    def __enter__(self) -> DirectReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, extents: np.ndarray, merge: bool = True, slot: object = 0, keep: bool = False) -> ReadBuffer:
        """Read ``extents`` ([n, 2] int64 offset, length). The returned buffer's ``flat`` is a view of this reader's
        buffer for ``slot``, overwritten by the next read into the same slot (a ring of slots lets reads issued
        ahead land while earlier ones are used; slot buffers are allocated and touched once, so reads never pay
        for page faults), unless ``keep`` (then a fresh buffer of its own)."""
        ext, reqs, lands = aligned_requests(extents, merge)
        buf = aligned_empty(reqs.moved_bytes) if keep else self._buffer(slot, reqs.moved_bytes)
        self.read_requests(reqs, buf)
        nbytes = int(ext[:, 1].sum())
        self.bytes_read += nbytes
        self.bytes_moved += reqs.moved_bytes
        self.requests += len(reqs.offsets)
        return ReadBuffer(ext, buf[: reqs.moved_bytes], lands, nbytes)

    def read_requests(self, reqs: Requests, buf: np.ndarray) -> None:
        """Issue aligned requests into ``buf``, ``queue_depth`` at a time (each thread takes every qd-th request)."""
        m = len(reqs.offsets)
        if m == 0:
            return
        view = memoryview(buf)  # [B] uint8, aligned
        offsets, lengths, at = reqs.offsets.tolist(), reqs.lengths.tolist(), reqs.at.tolist()

        def run(first: int) -> None:
            for i in range(first, m, self.queue_depth):
                got = os.preadv(self.fd, [view[at[i] : at[i] + lengths[i]]], offsets[i])
                if got != lengths[i]:
                    raise SimError(f"{self.path}: short read at offset {offsets[i]} ({got} of {lengths[i]} bytes)")

        if self.pool is None or m == 1:
            for first in range(min(self.queue_depth, m)):
                run(first)
        else:
            for future in [self.pool.submit(run, i) for i in range(min(self.queue_depth, m))]:
                future.result()

    def _buffer(self, slot: object, nbytes: int) -> np.ndarray:
        buf = self._bufs.get(slot)
        if buf is None or buf.size < nbytes:
            buf = self._bufs[slot] = aligned_empty(max(nbytes, 2 * (0 if buf is None else buf.size)))
            buf.fill(0)  # touch every page now, not during a timed read
        return buf


def aligned_empty(nbytes: int) -> np.ndarray:
    """[nbytes rounded up to the alignment] uint8 whose first byte's address is a multiple of ALIGN_BYTES."""
    size = -(-max(nbytes, 1) // ALIGN_BYTES) * ALIGN_BYTES
    raw = np.empty(size + ALIGN_BYTES, np.uint8)
    skip = -raw.ctypes.data % ALIGN_BYTES
    return raw[skip : skip + size]


MEMORY_FILE_SYSTEMS = ("tmpfs", "ramfs")  # O_DIRECT may be accepted there, but no device is read


def file_system(path: Path) -> str:
    """The type of the file system holding ``path`` (from /proc/self/mounts; "" where unknown)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return ""
    target = str(Path(path).resolve())
    best = max((m for m in mounts if target == m[0] or target.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=("", ""))  # fmt: skip
    return best[1]


def check_disk(path: Path) -> None:
    """DirectIOUnavailableError if ``path`` lies on a file system in memory (tmpfs, ramfs)."""
    fs = file_system(path)
    if fs in MEMORY_FILE_SYSTEMS:
        raise DirectIOUnavailableError(f"{path}: is on {fs}, a file system in memory: no device to read; use a "
                                       "folder on a disk")  # fmt: skip


def open_direct(path: Path) -> int:
    """An ``O_RDONLY | O_DIRECT`` descriptor of ``path``, or :class:`DirectIOUnavailableError` saying why not (no
    O_DIRECT here, a file system that refuses it, or one in memory where it would read no device)."""
    check_disk(path)
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        raise DirectIOUnavailableError(
            f"{path}: this OS has no O_DIRECT (Linux only): the page cache cannot be bypassed"
        )
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except FileNotFoundError:
        raise SimError(f"{path}: no such file") from None
    except OSError as err:
        raise DirectIOUnavailableError(f"{path}: the file system refuses O_DIRECT ({err.strerror}); use a disk-backed "
                                  "folder (not tmpfs)") from None  # fmt: skip
    try:
        os.preadv(fd, [aligned_empty(ALIGN_BYTES)], 0)
    except OSError as err:
        os.close(fd)
        raise DirectIOUnavailableError(f"{path}: O_DIRECT reads fail here ({err.strerror})") from None
    return fd
