"""Sliding-window neuron cache (LLM in a Flash §3.1): DRAM holds the union of the last k tokens' neurons.

State: a ring buffer of the last k stored sets as packed bits ``[k, L, nw]`` (:mod:`sim.lif.bits`, 64 neurons
per word) and their union. A step with predicted set P (and extra neurons X)::

    resident_before = union of the ring
    load   = (P | X) & ~resident_before        # only neurons not yet in DRAM are read
    push P | X, drop the set of k tokens ago
    resident_after  = union of the ring        # union of the last k stored sets
    evict  = resident_before & ~resident_after

``extra`` are neurons that arrive without being predicted (a co-activation bundle's friends); they are kept like
predicted ones. A neuron is resident after step t iff it was stored at one of steps t-k+1 .. t. One step is
``k + 4`` passes over ``L * n / 64`` words; the sets come back packed (:class:`sim.cache.CacheStep`: the window
is one of the row caches of :mod:`sim.cache`), with
``load_flat()`` / ``evict_flat()`` giving sorted flat indices ``l * n + i`` and ``load`` / ``evict`` /
``resident`` bool masks [L, n] on demand.
"""

from __future__ import annotations

import numpy as np

from sim.cache import CacheStep
from sim.lif import bits
from sim.lif.bits import n_words, pack_rows, unpack_rows

MAX_K = np.iinfo(np.uint16).max


WindowStep = CacheStep  # a window's step: every read row is stored (read = load)


class SlidingWindow:
    """The :class:`sim.cache.RowCache` of LLM in a Flash. ``capacity`` [L] (optional) bounds the neurons a layer
    may hold: when a step's union exceeds it, that layer forgets its oldest stored sets (the window shortens for
    that layer) until the union fits; the current token's set always stays (a set larger than the capacity is an
    error)."""

    def __init__(self, n_layers: int, n_neurons: int, k: int, capacity: np.ndarray | None = None):
        if not 1 <= k <= MAX_K:
            raise ValueError(f"window k must be in 1..{MAX_K} (got {k})")
        self.k, self.shape = k, (n_layers, n_neurons)
        self.capacity = None if capacity is None else np.asarray(capacity, np.int64)  # [L]
        self.shortened = 0  # (layer, step) pairs whose window was cut to fit the capacity
        self._ring = np.zeros((k, n_layers, n_words(n_neurons)), np.uint64)  # last k stored sets
        self._pos = 0  # ring slot the next step overwrites (the oldest set)
        self._resident = np.zeros((n_layers, n_words(n_neurons)), np.uint64)  # union of the ring

    @property
    def resident(self) -> np.ndarray:
        """[L, n] bool: neurons in DRAM now (a fresh array)."""
        return unpack_rows(self._resident, self.shape[1])

    @property
    def resident_bits(self) -> np.ndarray:
        """[L, nw] uint64: neurons in DRAM now (read-only view)."""
        view = self._resident.view()
        view.flags.writeable = False
        return view

    def missing(self, pred: np.ndarray) -> np.ndarray:
        """[L, n] bool: predicted neurons not resident (what a step would have to read)."""
        return unpack_rows(self.missing_bits(self._pack(pred)), self.shape[1])

    def missing_bits(self, pred_bits: np.ndarray) -> np.ndarray:
        return pred_bits & ~self._resident

    def step(self, pred: np.ndarray, extra: np.ndarray | None = None) -> WindowStep:
        """Advance one token with predicted mask pred [L, n] bool (and extra neurons that arrived with it)."""
        return self.step_bits(self._pack(pred), None if extra is None else self._pack(extra))

    def step_bits(self, pred_bits: np.ndarray, extra_bits: np.ndarray | None = None) -> WindowStep:
        """As :meth:`step` with packed sets [L, nw] uint64."""
        if pred_bits.shape != self._resident.shape:
            raise ValueError(f"predicted set has {pred_bits.shape} words, expected {self._resident.shape}")
        stored = pred_bits if extra_bits is None else pred_bits | extra_bits  # [L, nw]
        before = self._resident
        self._ring[self._pos] = stored
        newest = self._pos
        self._pos = (self._pos + 1) % self.k
        after = self._resident = np.bitwise_or.reduce(self._ring, axis=0) if self.k > 1 else stored.copy()
        if self.capacity is not None:
            self._fit(newest)
            after = self._resident
        return WindowStep(load_bits=stored & ~before, evict_bits=before & ~after, resident_bits=after, n=self.shape[1])

    def _fit(self, newest: int) -> None:
        """Forget the oldest stored sets of every layer over its capacity until its union fits."""
        over = np.flatnonzero(bits.row_counts(self._resident) > self.capacity)  # [m] layers
        for layer in over.tolist():
            held = self._ring[:, layer]  # [k, nw] view of this layer's stored sets
            for age in range(self.k - 1, 0, -1):  # oldest first; the newest set (age 0) stays
                held[(newest - age) % self.k] = 0
                self._resident[layer] = np.bitwise_or.reduce(held, axis=0)
                if int(np.bitwise_count(self._resident[layer]).sum()) <= self.capacity[layer]:
                    break
            self.shortened += 1
            n = int(np.bitwise_count(self._resident[layer]).sum())
            if n > self.capacity[layer]:
                raise ValueError(
                    f"layer {layer}: one token's {n} neurons exceed the window's {self.capacity[layer]} rows"
                )

    def _pack(self, mask: np.ndarray) -> np.ndarray:
        if mask.shape != self.shape:
            raise ValueError(f"predicted mask has shape {mask.shape}, expected {self.shape}")
        return pack_rows(mask)
