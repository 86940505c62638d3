"""Neuron memory management (LLM in a Flash §3.3): one preallocated row matrix per layer in DRAM.

Each layer's resident neurons occupy rows ``0 .. n_rows-1`` of a matrix of ``capacity`` rows (one row =
one neuron's bundle, ``row_bytes``). Per token, first deletions, then insertions:

* delete: every hole below the new end ``n_rows - d`` is filled by copying the last surviving row into it
  ("copy the last row into the hole"; rows that are themselves being deleted are never copied). So deleting
  a row that is already last copies nothing, and the number of copies is exactly the number of surviving rows
  above the new end -- the minimum any compaction needs.
* insert: new neurons are appended at ``n_rows ..`` in ascending neuron order (their bytes arrive from
  flash; ``appended_bytes`` reports them separately from the copies).

The row order is tracked exactly with index arrays ``slot_of [L, n]`` and ``neuron_at [L, capacity]``,
updated for all layers at once (no loop over layers or neurons), touching only the rows that change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.lif.window import SlidingWindow


@dataclass(frozen=True, slots=True)
class MemStep:
    moves: np.ndarray  # [L] int64: rows copied inside the matrix (deletions)
    copied_bytes: np.ndarray  # [L] float: moves * row_bytes
    appended_bytes: np.ndarray  # [L] float: inserted rows * row_bytes
    n_rows: np.ndarray  # [L] int64: resident rows after the step


class NeuronMatrix:
    """Row order per layer, kept in flat views: ``slot_of`` [L * n] and ``neuron_at`` [L * cap] (``layer * width +
    index``), so each step is a few gathers and scatters over the changed neurons (no [L, n] pass)."""

    def __init__(self, n_neurons: int, capacity_rows: np.ndarray, row_bytes: float):
        self.capacity = np.asarray(capacity_rows, dtype=np.int64)  # [L]
        if self.capacity.ndim != 1 or (self.capacity < 0).any() or (self.capacity > n_neurons).any():
            raise ValueError(f"capacity_rows must be [L] in 0..{n_neurons} (got {capacity_rows!r})")
        n_layers, width = len(self.capacity), int(self.capacity.max(initial=0))
        self.row_bytes = float(row_bytes)
        self.n, self.width = n_neurons, width
        self.slot_of = np.full((n_layers, n_neurons), -1, np.int32)  # [L, n] row of each neuron, -1: absent
        self.neuron_at = np.full((n_layers, width), -1, np.int32)  # [L, cap] neuron in each row
        self.n_rows = np.zeros(n_layers, np.int64)  # [L]
        self._slot, self._neuron = self.slot_of.reshape(-1), self.neuron_at.reshape(-1)  # flat views

    @property
    def allocated_bytes(self) -> float:
        """Bytes of all preallocated matrices (what the DRAM tenant holds)."""
        return float(self.capacity.sum()) * self.row_bytes

    @property
    def resident(self) -> np.ndarray:
        return self.slot_of >= 0  # [L, n]

    def step(self, insert: np.ndarray, evict: np.ndarray, new: np.ndarray | None = None) -> MemStep:
        """Delete neurons evict [L, n] bool (resident), then append insert [L, n] bool (not resident after deletion).

        ``new``: ``np.flatnonzero(insert)`` if the caller already has it (saves a scan of the mask)."""
        return self.step_flat(np.flatnonzero(insert) if new is None else new, np.flatnonzero(evict))

    def step_flat(self, new: np.ndarray, gone: np.ndarray) -> MemStep:
        """As :meth:`step` with flat indices ``layer * n + neuron``: delete ``gone`` [d], then append ``new`` [a]
        (both distinct and ascending)."""
        slot = self._slot.take(gone)  # [d]
        if len(gone) and slot.min() < 0:
            layer, neuron = divmod(int(gone[np.argmax(slot < 0)]), self.n)  # the first offending, row-major
            raise ValueError(f"layer {layer}: cannot delete neuron {neuron}: it is not resident")
        moves = self._delete(gone, slot, self._per_layer(gone))
        present = self._slot.take(new) >= 0
        if present.any():
            layer, neuron = divmod(int(new[np.argmax(present)]), self.n)
            raise ValueError(f"layer {layer}: cannot insert neuron {neuron}: it is already resident")
        appended = self._append(new, self._per_layer(new))
        return MemStep(moves, moves * self.row_bytes, appended * self.row_bytes, self.n_rows.copy())

    def _per_layer(self, flat: np.ndarray) -> np.ndarray:
        """[L] int64 entries of the ascending flat indices in each layer."""
        return np.diff(np.searchsorted(flat, np.arange(len(self.n_rows) + 1) * self.n))

    def _delete(self, gone: np.ndarray, slot: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Delete the neurons at flat indices ``gone`` [d] (ascending) whose rows are ``slot`` [d]; count [L] of
        them per layer.

        Work is O(d): only the deleted rows and the d_l rows of each layer's tail [new_n, n_rows) are touched.
        Holes (deleted rows below the new end, ascending) are filled by the tail's surviving rows, last first.
        """
        n_layers, width = len(self.n_rows), self.width
        layers = np.arange(n_layers)
        new_n = self.n_rows - count  # [L]
        below = slot < np.repeat(new_n, count)  # [d] holes; the other deleted rows are in the tail
        hole_l, hole_s = _by_layer_then_slot(np.compress(below, np.repeat(layers, count)), np.compress(below, slot))
        self._slot[gone] = -1
        tail_l = np.repeat(layers, count)  # [d] the tail rows, last row first within each layer
        tail = np.repeat(layers * width + self.n_rows - 1 + np.cumsum(count) - count, count) - np.arange(len(gone))
        tail_neuron = self._neuron.take(tail)  # [d]
        tail_flat = tail_l * self.n + tail_neuron  # [d]
        survives = self._slot.take(tail_flat) >= 0  # [d] tail rows not deleted: the movers, per layer one per hole
        self._neuron[hole_l * width + hole_s] = np.compress(survives, tail_neuron)  # holes ascending, movers last first
        self._slot[np.compress(survives, tail_flat)] = hole_s
        self._neuron[tail] = -1
        self.n_rows = new_n
        return np.bincount(hole_l, minlength=n_layers).astype(np.int64)

    def _append(self, new: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Append the neurons at flat indices ``new`` (ascending; count [L] per layer) at the end of their layers."""
        n_layers = len(self.n_rows)
        over = np.flatnonzero(self.n_rows + count > self.capacity)
        if len(over):
            lay = int(over[0])
            need = int(self.n_rows[lay] + count[lay])
            raise ValueError(f"layer {lay}: {need} resident neurons exceed the preallocated {self.capacity[lay]} rows")
        first = np.cumsum(count) - count  # [L] index of each layer's first insert
        slot = np.arange(len(new)) + np.repeat(self.n_rows - first, count)  # [a]
        layers = np.arange(n_layers)
        self._neuron[slot + np.repeat(layers * self.width, count)] = new - np.repeat(layers * self.n, count)
        self._slot[new] = slot
        self.n_rows = self.n_rows + count
        return count.astype(np.int64)


def _by_layer_then_slot(layer: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(layer, slot) pairs [h] sorted by layer, then slot: two stable radix passes (16-bit keys) when they fit."""
    if len(slot) and max(int(slot.max()), int(layer.max())) < 1 << 16:
        order = np.argsort(slot.astype(np.uint16), kind="stable")  # numpy sorts 16-bit keys by radix
        order = order.take(np.argsort(layer.take(order).astype(np.uint16), kind="stable"))
    else:
        order = np.lexsort((slot, layer))
    return layer.take(order), slot.take(order)


def max_resident_rows(masks: np.ndarray, k: int) -> np.ndarray:
    """masks [T, L, n] predicted (stored) masks -> [L] max over t of |union of masks t-k+1..t| (window size)."""
    win = SlidingWindow(masks.shape[1], masks.shape[2], k)
    peak = np.zeros(masks.shape[1], np.int64)
    for t in range(masks.shape[0]):  # one vectorised step per token
        peak = np.maximum(peak, win.step(masks[t]).resident.sum(axis=1))
    return peak
