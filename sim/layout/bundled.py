"""Row-column bundled layout (LLM in a Flash §3.2): neuron i's rows of every FFN matrix are contiguous.

The FFN region of a layer is ``[n_neurons, len(ffn_ops) * d_model]``: bundle i = (gate row i,) up row i,
down column i, so one neuron is one extent of ``neuron_bytes`` (OPT-6.7B fp16: 16 KiB; gated: 3 rows), and
consecutive neurons are adjacent (the flash device merges them into one larger read).
"""

from __future__ import annotations

import numpy as np

from sim.layout.base import BaseLayout, as_neuron_index
from sim.models.profile import ModelProfile


class BundledLayout(BaseLayout):
    name = "bundled"

    def __init__(self, model: ModelProfile, dtype: str):
        super().__init__(model, dtype)
        self._place(self.n_neurons * self.neuron_bytes)

    def neuron_extents(self, layer: int, neurons: np.ndarray) -> np.ndarray:
        idx = as_neuron_index(neurons, self.n_neurons)  # [n]
        off = self.ffn_offset(layer) + idx * self.neuron_bytes
        return np.stack([off, np.full(off.shape, self.neuron_bytes, np.int64)], axis=1)

    def neuron_extents_all(self, flat: np.ndarray) -> list[np.ndarray]:
        """As the base method, in one pass: bundle of flat index ``l * n + i`` starts at
        ``ffn_offset(l) + i * neuron_bytes`` (flat must be sorted and in range; the layers' arrays are views)."""
        n, n_layers = self.n_neurons, self.model.n_layers
        flat = np.asarray(flat, dtype=np.int64)
        if len(flat) and (flat[0] < 0 or flat[-1] >= n_layers * n or (np.diff(flat) <= 0).any()):
            raise ValueError(f"flat neuron indices must be sorted, distinct and in 0..{n_layers * n - 1}")
        bounds = np.searchsorted(flat, np.arange(n_layers + 1) * n)  # [L + 1]
        layer = np.repeat(np.arange(n_layers, dtype=np.int64), np.diff(bounds))  # [N]
        ext = np.empty((len(flat), 2), np.int64)  # [N, 2]
        ext[:, 0] = self.layers_offset + self._ffn_rel + layer * (self.layer_stride - n * self.neuron_bytes)
        ext[:, 0] += flat * self.neuron_bytes
        ext[:, 1] = self.neuron_bytes
        b = bounds.tolist()
        return [ext[b[l] : b[l + 1]] for l in range(n_layers)]

    def ffn_placement(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        m, n = len(self.ffn_ops), self.n_neurons
        neuron = np.repeat(np.arange(n, dtype=np.int64), m)  # [n*m]
        op_idx = np.tile(np.arange(m, dtype=np.int64), n)  # [n*m]
        off = self.ffn_offset(layer) + neuron * self.neuron_bytes + op_idx * self.row_bytes
        return off, neuron, op_idx, np.zeros_like(off)
