"""Neuron memory management (LLM in a Flash §3.3): one preallocated row matrix per layer in DRAM.

Each layer's resident neurons occupy rows ``0 .. n_rows-1`` of a matrix of ``capacity`` rows (one row =
one neuron's bundle, ``row_bytes``). Per token, first deletions, then insertions:

* delete: every hole below the new end ``n_rows - d`` is filled by copying the last surviving row into it
  ("copy the last row into the hole"; rows that are themselves being deleted are never copied). So deleting
  a row that is already last copies nothing, and the number of copies is exactly the number of surviving rows
  above the new end -- the minimum any compaction needs.
* insert: new neurons are appended at ``n_rows ..`` in ascending neuron order (their bytes arrive from
  flash; ``appended_bytes`` reports them separately from the copies).

The row order is tracked exactly with two flat index arrays (each neuron's row, each row's neuron; shown per
layer as ``slot_of [L, n]`` and ``neuron_at [L, capacity]``), updated for all layers at once (no loop over
neurons; a layer's holes are sorted on their own), touching only the rows that change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.lif.bits import arange


@dataclass(frozen=True, slots=True)
class MemStep:
    moves: np.ndarray  # [L] int64: rows copied inside the matrix (deletions)
    copied_bytes: np.ndarray  # [L] float: moves * row_bytes
    appended_bytes: np.ndarray  # [L] float: inserted rows * row_bytes
    n_rows: np.ndarray  # [L] int64: resident rows after the step


class NeuronMatrix:
    """Row order of all layers in two flat arrays: ``_slot`` [L * n] holds each neuron's row in its layer's matrix
    (-1: absent; int16 while the matrices are narrower than 2^15 rows, else int32: half or a quarter of the cache
    lines its random gathers and scatters touch) and ``_neuron_in`` [L * width] int64 each flat row's (``layer *
    width + slot``) flat neuron ``layer * n + neuron`` (rows at or past a layer's ``n_rows`` are stale), so a step is
    a few gathers and scatters over the changed neurons (no [L, n] pass). ``slot_of`` / ``neuron_at`` show them per
    layer. (numpy scatters fast only with int64 indices and values of the target's dtype, hence the casts.)"""

    def __init__(self, n_neurons: int, capacity_rows: np.ndarray, row_bytes: float):
        self.capacity = np.asarray(capacity_rows, dtype=np.int64)  # [L]
        if self.capacity.ndim != 1 or (self.capacity < 0).any() or (self.capacity > n_neurons).any():
            raise ValueError(f"capacity_rows must be [L] in 0..{n_neurons} (got {capacity_rows!r})")
        n_layers, width = len(self.capacity), int(self.capacity.max(initial=0))
        self.row_bytes = float(row_bytes)
        self.n, self.width = n_neurons, width
        self._slot_dtype = np.int16 if width < 2**15 else np.int32
        self._slot = np.full(n_layers * n_neurons, -1, self._slot_dtype)  # [L * n] row of each neuron in its layer
        self._neuron_in = np.full(n_layers * width, -1, np.int64)  # [L * width] flat neuron in each row
        self._row0 = np.arange(n_layers, dtype=np.int64) * width  # [L] flat row of each layer's slot 0
        self.n_rows = np.zeros(n_layers, np.int64)  # [L]

    @property
    def allocated_bytes(self) -> float:
        """Bytes of all preallocated matrices (what the DRAM tenant holds)."""
        return float(self.capacity.sum()) * self.row_bytes

    @property
    def resident(self) -> np.ndarray:
        return self.slot_of >= 0  # [L, n]

    @property
    def slot_of(self) -> np.ndarray:
        """[L, n] int64 row of each neuron in its layer's matrix, -1: absent (a fresh array)."""
        return self._slot.reshape(len(self.n_rows), self.n).astype(np.int64)  # [L, n]

    @property
    def neuron_at(self) -> np.ndarray:
        """[L, width] int64 neuron in each row of each layer's matrix, -1: free (a fresh array)."""
        n_layers = len(self.n_rows)
        neuron = self._neuron_in.reshape(n_layers, self.width) - np.arange(n_layers)[:, None] * self.n
        return np.where(np.arange(self.width) < self.n_rows[:, None], neuron, -1)

    def step(self, insert: np.ndarray, evict: np.ndarray, new: np.ndarray | None = None) -> MemStep:
        """Delete neurons evict [L, n] bool (resident), then append insert [L, n] bool (not resident after deletion).

        ``new``: ``np.flatnonzero(insert)`` if the caller already has it (saves a scan of the mask)."""
        return self.step_flat(np.flatnonzero(insert) if new is None else new, np.flatnonzero(evict))

    def step_flat(self, new: np.ndarray, gone: np.ndarray) -> MemStep:
        """As :meth:`step` with flat indices ``layer * n + neuron``: delete ``gone`` [d], then append ``new`` [a]
        (both distinct and ascending)."""
        slot = self._slot.take(gone)  # [d] rows in their layers
        if len(gone) and slot.min() < 0:
            layer, neuron = divmod(int(gone[np.argmax(slot < 0)]), self.n)  # the first offending, row-major
            raise ValueError(f"layer {layer}: cannot delete neuron {neuron}: it is not resident")
        moves = self._delete(gone, slot, self._per_layer(gone))
        present = self._slot.take(new)  # [a] -1 unless resident
        if len(new) and present.max() >= 0:
            layer, neuron = divmod(int(new[np.argmax(present >= 0)]), self.n)
            raise ValueError(f"layer {layer}: cannot insert neuron {neuron}: it is already resident")
        appended = self._append(new, self._per_layer(new))
        return MemStep(moves, moves * self.row_bytes, appended * self.row_bytes, self.n_rows.copy())

    def _per_layer(self, flat: np.ndarray) -> np.ndarray:
        """[L] int64 entries of the ascending flat indices in each layer."""
        return np.diff(np.searchsorted(flat, np.arange(len(self.n_rows) + 1) * self.n))

    def _delete(self, gone: np.ndarray, slot: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Delete the neurons at flat indices ``gone`` [d] (ascending) whose rows are ``slot`` [d]; count [L]
        of them per layer. Returns [L] int64 rows moved.

        Work is O(d): only the deleted rows and the d_l rows of each layer's tail [new_n, n_rows) are touched.
        Holes (deleted rows below the new end, ascending) are filled by the tail's surviving rows, last first.
        """
        new_n = self.n_rows - count  # [L]
        below = slot < np.repeat(new_n, count)  # [d] holes; the other deleted rows are in the tail
        bounds = np.zeros(len(count) + 1, np.int64)  # [L + 1] first of each layer in gone
        np.cumsum(count, out=bounds[1:])
        before = np.zeros(len(gone) + 1, np.int64)  # [d + 1] holes before each deleted neuron
        np.cumsum(below, out=before[1:])
        hole_bounds = before[bounds]  # [L + 1] first of each layer's holes
        moves = np.diff(hole_bounds)  # [L]
        hole_slot = _sort_segments(np.compress(below, slot), hole_bounds.tolist())  # [h] per layer ascending
        holes = np.repeat(self._row0, moves)
        holes += hole_slot
        self._slot[gone] = -1
        tail = np.repeat(self._row0 + self.n_rows - 1 + bounds[:-1], count) - arange(len(gone))  # [d] last first
        tail_neuron = self._neuron_in.take(tail)  # [d] flat neurons
        movers = np.compress(self._slot.take(tail_neuron) >= 0, tail_neuron)  # [h] surviving tail rows
        self._neuron_in[holes] = movers  # holes ascending, movers last first: per layer one mover per hole
        self._slot[movers] = hole_slot
        self.n_rows = new_n
        return moves

    def _append(self, new: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Append the neurons at flat indices ``new`` (ascending; count [L] per layer) at the end of their layers."""
        over = np.flatnonzero(self.n_rows + count > self.capacity)
        if len(over):
            lay = int(over[0])
            need = int(self.n_rows[lay] + count[lay])
            raise ValueError(f"layer {lay}: {need} resident neurons exceed the preallocated {self.capacity[lay]} rows")
        first = np.cumsum(count) - count  # [L] index of each layer's first insert
        slot = np.repeat(self.n_rows - first, count)  # [a] row of each insert in its layer ...
        slot += arange(len(new))  # ... appended in order after the layer's last
        self._neuron_in[slot + np.repeat(self._row0, count)] = new
        self._slot[new] = slot.astype(self._slot_dtype)
        self.n_rows = self.n_rows + count
        return count.astype(np.int64)


def _sort_segments(values: np.ndarray, bounds: list[int]) -> np.ndarray:
    """``values`` [h] sorted in place within each segment ``bounds[i] .. bounds[i + 1]`` (a layer's holes): a few
    hundred entries at a time sort several times faster than the whole array."""
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi - lo > 1:
            values[lo:hi].sort()
    return values
