"""Co-activation ("closest friend") bundled layout — LLM in a Flash §3.2, reported there as a negative result.

Each neuron i is stored as a double bundle: i's row-column bundle followed by a duplicate of the bundle of its
closest friend f(i) (the neuron co-activated with i most often in a trace). Reading neuron i reads the double
bundle (``2 * neuron_bytes``) and brings f(i) too. The FFN region is twice the bundled one (duplicate storage).

Friends come from co-activation counts ``C = M^T M`` of a bool mask ``M [T, n_neurons]`` per layer, computed in
row blocks so memory stays ``O(block * n_neurons)``; ties go to the lowest index; i is never its own friend.
"""

from __future__ import annotations

import numpy as np

from sim.layout.base import BaseLayout, as_neuron_index
from sim.models.profile import ModelProfile


def closest_friends(mask: np.ndarray, block: int = 1024) -> np.ndarray:
    """mask [T, n] bool -> friend [n] int64: argmax_j!=i of co-activation count(i, j)."""
    m = np.asarray(mask, dtype=np.float32)  # [T, n]
    n = m.shape[1]
    if n < 2:
        raise ValueError(f"co-activation needs at least 2 neurons (got {n})")
    friend = np.empty(n, np.int64)
    for start in range(0, n, block):  # loop over blocks of neurons, vectorised inside
        stop = min(start + block, n)
        counts = m[:, start:stop].T @ m  # [b, n]
        counts[np.arange(stop - start), np.arange(start, stop)] = -1.0  # never self
        friend[start:stop] = np.argmax(counts, axis=1)
    return friend


class CoactivationLayout(BaseLayout):
    name = "coactivation"

    def __init__(self, model: ModelProfile, dtype: str, friends: np.ndarray):
        super().__init__(model, dtype)
        friends = np.asarray(friends, dtype=np.int64)
        if friends.shape != (model.n_layers, self.n_neurons):
            raise ValueError(f"friends has shape {friends.shape}, expected ({model.n_layers}, {self.n_neurons})")
        if friends.size and (friends.min() < 0 or friends.max() >= self.n_neurons):
            raise ValueError(f"friend index out of range 0..{self.n_neurons - 1}")
        self.friends = friends  # [L, n]
        self.bundle_bytes = 2 * self.neuron_bytes
        self._place(self.n_neurons * self.bundle_bytes)

    @staticmethod
    def from_masks(model: ModelProfile, dtype: str, masks: np.ndarray) -> CoactivationLayout:
        """masks [T, L, n_neurons] bool (a trace's activations) -> layout with per-layer closest friends."""
        masks = np.asarray(masks, dtype=bool)
        friends = np.stack([closest_friends(masks[:, layer]) for layer in range(masks.shape[1])])  # [L, n]
        return CoactivationLayout(model, dtype, friends)

    def neuron_extents(self, layer: int, neurons: np.ndarray) -> np.ndarray:
        idx = as_neuron_index(neurons, self.n_neurons)  # [n]
        off = self.ffn_offset(layer) + idx * self.bundle_bytes
        return np.stack([off, np.full(off.shape, self.bundle_bytes, np.int64)], axis=1)

    def neurons_brought(self, layer: int, neurons: np.ndarray) -> np.ndarray:
        idx = as_neuron_index(neurons, self.n_neurons)
        return np.union1d(idx, self.friends[layer, idx])

    def ffn_placement(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m, n = len(self.ffn_ops), self.n_neurons
        slot = np.repeat(np.arange(n, dtype=np.int64), 2 * m)  # [n*2m] bundle index
        copy = np.tile(np.repeat(np.arange(2, dtype=np.int64), m), n)  # 0: own rows, 1: friend's
        op_idx = np.tile(np.arange(m, dtype=np.int64), 2 * n)
        neuron = np.where(copy == 0, slot, self.friends[layer][slot])
        off = self.ffn_offset(layer) + slot * self.bundle_bytes + (copy * m + op_idx) * self.row_bytes
        return off, neuron, op_idx, copy
