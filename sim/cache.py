"""Row caches: which rows (FFN neurons, input channels) of each layer stay in DRAM from token to token.

One protocol, three policies, so LLM in a Flash's window and ActiveFlow's hot-weight cache are interchangeable
(``llm_in_flash`` ``cache:``) and measured by the same code (:mod:`sim.activeflow.stats`):

- :class:`~sim.lif.window.SlidingWindow`: the union of the last k tokens' sets (LLM in a Flash §3.1);
- :class:`LFUCache`: per-layer use counters; a missed row is admitted when its count exceeds the coldest cached
  row's, which it evicts (ActiveFlow's contextual cache, §3.3); rows not admitted are read for this token only;
- :class:`LRUCache`: every missed row is admitted, evicting the least recently used (the usual baseline).

A step takes the token's needed rows, packed ``[L, nw]`` uint64 (:mod:`sim.lif.bits`), and returns a
:class:`CacheStep`: ``read`` (needed and not resident: what comes from flash), ``load`` (read rows that stay),
``evict`` and ``resident`` after the step. For the window read = load (every needed row is stored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sim.lif import bits
from sim.lif.bits import flat_indices, n_words, pack_rows, unpack_rows


@dataclass(frozen=True, slots=True)
class CacheStep:
    load_bits: np.ndarray  # [L, nw] uint64: read rows that become resident
    evict_bits: np.ndarray  # [L, nw] uint64: rows that leave DRAM this step
    resident_bits: np.ndarray  # [L, nw] uint64: resident after the step
    n: int  # rows per layer
    read_bits: np.ndarray | None = field(default=None)  # [L, nw]: rows read from flash (None: exactly load_bits)

    @property
    def read(self) -> np.ndarray:
        return unpack_rows(self.read_bits if self.read_bits is not None else self.load_bits, self.n)

    @property
    def load(self) -> np.ndarray:
        return unpack_rows(self.load_bits, self.n)  # [L, n] bool

    @property
    def evict(self) -> np.ndarray:
        return unpack_rows(self.evict_bits, self.n)  # [L, n] bool

    @property
    def resident(self) -> np.ndarray:
        return unpack_rows(self.resident_bits, self.n)  # [L, n] bool

    def read_flat(self) -> np.ndarray:
        """[N] int64 sorted flat indices ``l * n + i`` of the rows read from flash."""
        return flat_indices(self.read_bits if self.read_bits is not None else self.load_bits, self.n)

    def load_flat(self) -> np.ndarray:
        """[N] int64 sorted flat indices ``l * n + i`` of the rows that became resident."""
        return flat_indices(self.load_bits, self.n)

    def evict_flat(self) -> np.ndarray:
        return flat_indices(self.evict_bits, self.n)

    def resident_counts(self) -> np.ndarray:
        """[L] int64 rows resident after the step."""
        return bits.row_counts(self.resident_bits)


class RowCache(Protocol):
    shape: tuple[int, int]  # (layers, rows per layer)
    shortened: int  # (layer, step) pairs where the cache could not keep what its policy wanted (window: cut)

    @property
    def resident_bits(self) -> np.ndarray:
        """[L, nw] uint64: rows in DRAM now."""

    def missing_bits(self, needed_bits: np.ndarray) -> np.ndarray:
        """[L, nw]: needed rows not resident."""

    def step_bits(self, needed_bits: np.ndarray, extra_bits: np.ndarray | None = None) -> CacheStep:
        """Advance one token needing ``needed_bits`` (``extra_bits``: rows that arrive with them unasked, kept
        like needed ones where the policy keeps what it reads)."""


class _Counted:
    """Shared state of the counter caches: per-layer capacity, the resident mask and what a step packs."""

    shortened = 0  # a counter cache never cuts a token's set: rows it does not admit are read for the token only

    def __init__(self, n_layers: int, n_rows: int, capacity: np.ndarray | int):
        self.shape = (n_layers, n_rows)
        self.capacity = np.broadcast_to(np.asarray(capacity, np.int64), (n_layers,)).copy()  # [L]
        if (self.capacity < 0).any() or (self.capacity > n_rows).any():
            raise ValueError(f"cache capacity must be in 0..{n_rows} rows per layer (got {self.capacity.tolist()})")
        self._resident = np.zeros(self.shape, bool)  # [L, n]
        self.t = 0  # steps so far

    @property
    def resident_bits(self) -> np.ndarray:
        return pack_rows(self._resident)

    def missing_bits(self, needed_bits: np.ndarray) -> np.ndarray:
        return needed_bits & ~pack_rows(self._resident)

    def step_bits(self, needed_bits: np.ndarray, extra_bits: np.ndarray | None = None) -> CacheStep:
        n = self.shape[1]
        if needed_bits.shape != (self.shape[0], n_words(n)):
            raise ValueError(f"needed set has {needed_bits.shape} words, expected {(self.shape[0], n_words(n))}")
        needed = unpack_rows(needed_bits if extra_bits is None else needed_bits | extra_bits, n)  # [L, n]
        before = self._resident.copy()
        self._update(needed)
        self.t += 1
        after = self._resident
        read = needed & ~before
        pack = pack_rows
        return CacheStep(pack(read & after), pack(before & ~after), pack(after), n, read_bits=pack(read))

    def _update(self, needed: np.ndarray) -> None:
        """Change ``self._resident`` for a token needing ``needed`` [L, n] bool."""
        raise NotImplementedError


class LFUCache(_Counted):
    """Per-layer use counters over the context; a missed row enters when its count is higher than the coldest
    resident row's (or a slot is free). Counts include the current token, so a row seen once more than the coldest
    resident one displaces it: the cache holds the ``capacity`` most used rows so far (ties keep the resident)."""

    def __init__(self, n_layers: int, n_rows: int, capacity: np.ndarray | int):
        super().__init__(n_layers, n_rows, capacity)
        self.counts = np.zeros(self.shape, np.int64)  # [L, n] tokens each row was needed in

    def _update(self, needed: np.ndarray) -> None:
        self.counts += needed
        for layer in np.flatnonzero((needed & ~self._resident).any(axis=1)).tolist():
            cap = int(self.capacity[layer])
            if cap == 0:
                continue
            counts, held = self.counts[layer], self._resident[layer]
            incoming = np.flatnonzero(needed[layer] & ~held)
            incoming = incoming[np.argsort(-counts[incoming], kind="stable")]  # hottest first
            free = cap - int(held.sum())
            admit, incoming = incoming[:free], incoming[free:]
            held[admit] = True
            if incoming.size:  # rows this token uses are not displaced by it
                resident = np.flatnonzero(held & ~needed[layer])
                resident = resident[np.argsort(counts[resident], kind="stable")]  # coldest first
                m = min(incoming.size, resident.size)
                swap = counts[incoming[:m]] > counts[resident[:m]]  # pairwise: hottest incoming vs coldest held
                held[resident[:m][swap]] = False
                held[incoming[:m][swap]] = True


class LRUCache(_Counted):
    """Every missed row is admitted; when a layer is full, the rows used longest ago leave (the current token's
    rows are the most recent, so they stay unless the token alone needs more than the capacity: then the rows it
    just read beyond the capacity are read for this token only, and its rows already held stay)."""

    def __init__(self, n_layers: int, n_rows: int, capacity: np.ndarray | int):
        super().__init__(n_layers, n_rows, capacity)
        self.last = np.full(self.shape, -1, np.int64)  # [L, n] step each row was last needed at

    def _update(self, needed: np.ndarray) -> None:
        self.last[needed] = self.t
        held = self._resident | needed
        over = held.sum(axis=1) - self.capacity  # [L]
        for layer in np.flatnonzero(over > 0).tolist():
            rows = np.flatnonzero(held[layer])
            was_held = self._resident[layer, rows]  # among rows used as recently, the ones just read leave first
            order = np.lexsort((was_held, self.last[layer, rows]))  # oldest use first, then not held before
            held[layer, rows[order[: int(over[layer])]]] = False
        self._resident = held
