"""Sliding-window neuron cache (LLM in a Flash §3.1): DRAM holds the union of the last k tokens' neurons.

State: a ring buffer of the last k stored masks ``[k, L, n]`` and a per-neuron count ``uint16 [L, n]`` of how
many of them hold the neuron, so one step is O(L·n) vectorised whatever k is. A step with predicted mask P::

    resident_before = count > 0
    load   = (P | extra) & ~resident_before        # only neurons not yet in DRAM are read
    push P | extra, drop the mask of k tokens ago
    resident_after  = count > 0                    # union of the last k stored masks
    evict  = resident_before & ~resident_after

``extra`` are neurons that arrive without being predicted (a co-activation bundle's friends); they are kept like
predicted ones. A neuron is resident after step t iff it was stored at one of steps t-k+1 .. t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_K = np.iinfo(np.uint16).max


@dataclass(frozen=True, slots=True)
class WindowStep:
    load: np.ndarray  # [L, n] bool: newly resident (to read from flash)
    evict: np.ndarray  # [L, n] bool: leave DRAM this step
    resident: np.ndarray  # [L, n] bool: resident after the step


class SlidingWindow:
    def __init__(self, n_layers: int, n_neurons: int, k: int):
        if not 1 <= k <= MAX_K:
            raise ValueError(f"window k must be in 1..{MAX_K} (got {k})")
        self.k, self.shape = k, (n_layers, n_neurons)
        self._ring = np.zeros((k, n_layers, n_neurons), bool)  # last k stored masks
        self._count = np.zeros((n_layers, n_neurons), np.uint16)  # how many ring masks hold each neuron
        self._pos = 0  # ring slot the next step overwrites (the oldest mask)
        self._resident = np.zeros((n_layers, n_neurons), bool)  # count > 0, kept by step()

    @property
    def resident(self) -> np.ndarray:
        """[L, n] bool: neurons in DRAM now (read-only view)."""
        view = self._resident.view()
        view.flags.writeable = False
        return view

    def missing(self, pred: np.ndarray) -> np.ndarray:
        """[L, n] bool: predicted neurons not resident (what a step would have to read)."""
        return pred & ~self._resident

    def step(self, pred: np.ndarray, extra: np.ndarray | None = None) -> WindowStep:
        """Advance one token with predicted mask pred [L, n] (and extra neurons that arrived with it)."""
        if pred.shape != self.shape:
            raise ValueError(f"predicted mask has shape {pred.shape}, expected {self.shape}")
        stored = pred if extra is None else pred | extra  # [L, n]
        before = self._resident
        oldest = self._ring[self._pos]  # [L, n]
        self._count -= oldest  # bool -> 0/1; never underflows: oldest was counted when pushed
        self._count += stored
        self._ring[self._pos] = stored
        self._pos = (self._pos + 1) % self.k
        after = self._resident = self._count > 0
        return WindowStep(load=stored & ~before, evict=before & ~after, resident=after)


def row_counts(mask: np.ndarray) -> np.ndarray:
    """[L, n] bool -> [L] int64 True entries per row (a popcount of the packed bits: 3x a bool sum)."""
    return np.bitwise_count(np.packbits(mask, axis=1)).sum(axis=1, dtype=np.int64)
