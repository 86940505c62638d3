"""Layer-major layout: per layer q, k, v, o, then each FFN matrix stored neuron-major.

Each FFN matrix is ``[n_neurons, d_model]`` (down stored transposed), so neuron i's share of one matrix is
one contiguous row of ``row_bytes``; an unbundled neuron read is ``len(ffn_ops)`` separate extents
(OPT-6.7B fp16: 2 x 8 KiB).
"""

from __future__ import annotations

import numpy as np

from sim.layout.base import BaseLayout, as_neuron_index
from sim.models.profile import ModelProfile


class LayerMajorLayout(BaseLayout):
    name = "layer_major"

    def __init__(self, model: ModelProfile, dtype: str):
        super().__init__(model, dtype)
        self.matrix_bytes = self.n_neurons * self.row_bytes
        self._place(len(self.ffn_ops) * self.matrix_bytes)

    def neuron_extents(self, layer: int, neurons: np.ndarray) -> np.ndarray:
        idx = as_neuron_index(neurons, self.n_neurons)  # [n]
        mat_off = self.ffn_offset(layer) + np.arange(len(self.ffn_ops), dtype=np.int64) * self.matrix_bytes  # [m]
        off = (mat_off[:, None] + idx[None, :] * self.row_bytes).reshape(-1)  # [m*n], sorted (op-major)
        return np.stack([off, np.full(off.shape, self.row_bytes, np.int64)], axis=1)

    def ffn_placement(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m, n = len(self.ffn_ops), self.n_neurons
        op_idx = np.repeat(np.arange(m, dtype=np.int64), n)  # [m*n]
        neuron = np.tile(np.arange(n, dtype=np.int64), m)  # [m*n]
        off = self.ffn_offset(layer) + op_idx * self.matrix_bytes + neuron * self.row_bytes
        return off, neuron, op_idx, np.zeros_like(off)
