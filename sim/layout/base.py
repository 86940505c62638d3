"""The flash-layout seam: where every weight of a model lives in one flash file, as byte extents.

A :class:`Layout` answers two questions the policies ask every token, vectorised:

* ``op_extents(layer, ops)`` — the extents of whole ops of one layer (``q k v o gate up down``), or of the
  embedding tables with ``layer = EMBEDDINGS`` and ops ``embed``, ``pos``, ``lm_head``;
* ``neuron_extents(layer, neurons)`` — the extents holding FFN neurons' rows (each FFN matrix's share).

Extents are ``[n, 2] int64`` ``(offset, length)`` rows sorted by offset. Neuron extents are NOT merged here
(the flash device merges adjacent ones, as a device would); whole-op extents are coalesced.

Neurons of a MoE layer are numbered expert-major: neuron ``e * d_ff + i`` is neuron i of expert e.

Every stored row of every FFN matrix is described by :meth:`BaseLayout.ffn_placement` (offset, neuron, op,
copy) so that the flash-image writer and the verifying reader need no layout-specific code.

Byte sizes: one row is ``ceil(d_model * bits / 8)`` bytes and one whole op ``ceil(weights * bits / 8)``; for
every shipped dtype and model these are exact (block-quantised rows hold whole 32-weight blocks), so the
padding is zero and ``total_bytes == model.total_bytes(dtype)``. ``padding_bytes`` reports any rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sim.devices.flash import Flash
from sim.models.profile import ATTENTION_OPS, ModelProfile, dtype_bytes

EMBEDDINGS = -1  # the pseudo-layer holding the embedding tables
EMBEDDING_OPS = ("embed", "pos", "lm_head")


class Layout(Protocol):
    name: str
    total_bytes: int

    def op_extents(self, layer: int, ops: Sequence[str]) -> np.ndarray:
        """Whole ops of one layer -> [n, 2] int64 (offset, length), sorted, coalesced."""

    def neuron_extents(self, layer: int, neurons: np.ndarray) -> np.ndarray:
        """FFN neurons (distinct indices) of one layer -> [n, 2] int64, sorted by offset, not merged."""


def whole_bytes(dtype: str, n_weights: int) -> int:
    """Bytes of ``n_weights`` weights rounded up to a whole byte."""
    return math.ceil(dtype_bytes(dtype, n_weights))


def coalesce(extents: np.ndarray) -> np.ndarray:
    """Sort [n, 2] extents by offset and merge touching ones: [n, 2] -> [m, 2], m <= n.

    The same merge the flash device applies to a read (one implementation: Flash.merge_extents)."""
    return Flash.merge_extents(extents)


def as_neuron_index(neurons: np.ndarray, n_neurons: int) -> np.ndarray:
    """Bool mask [n_neurons] or distinct indices -> sorted int64 indices, range-checked."""
    neurons = np.asarray(neurons)
    if neurons.dtype == bool:
        if neurons.shape != (n_neurons,):
            raise ValueError(f"neuron mask has shape {neurons.shape}, expected ({n_neurons},)")
        return np.flatnonzero(neurons).astype(np.int64)
    idx = np.sort(neurons.astype(np.int64, copy=False))
    if len(idx) and (idx[0] < 0 or idx[-1] >= n_neurons):
        raise ValueError(f"neuron index out of range 0..{n_neurons - 1} (got {idx[0]}..{idx[-1]})")
    return idx


class BaseLayout:
    """Shared bookkeeping: embeddings first, then per layer the attention ops then the FFN region.

    Subclasses set ``ffn_region_bytes`` (per layer) before calling ``_place()`` and implement
    ``neuron_extents`` and ``ffn_placement``.
    """

    name = "base"

    def __init__(self, model: ModelProfile, dtype: str):
        dtype_bytes(dtype, 0)  # validates the dtype name
        self.model, self.dtype = model, dtype
        self.n_neurons = model.n_experts * model.d_ff
        self.ffn_ops: tuple[str, ...] = model.ffn_ops
        self.row_bytes = whole_bytes(dtype, model.d_model)
        self.neuron_bytes = self.row_bytes * len(self.ffn_ops)

    # ---- placement of the fixed regions ---------------------------------------------------------------
    def _place(self, ffn_region_bytes: int) -> None:
        m = self.model
        emb = {
            "embed": whole_bytes(self.dtype, m.vocab_size * m.d_model),
            "pos": whole_bytes(self.dtype, m.max_positions_learned * m.d_model),
            "lm_head": 0 if m.tied_embeddings else whole_bytes(self.dtype, m.vocab_size * m.d_model),
        }
        self._emb_off = dict(zip(EMBEDDING_OPS, np.cumsum([0, *emb.values()])[:-1].tolist(), strict=True))
        self._emb_len = emb
        self._attn_len = {op: whole_bytes(self.dtype, m.op_weights(op)) for op in ATTENTION_OPS}
        self._attn_rel = dict(zip(ATTENTION_OPS, np.cumsum([0, *self._attn_len.values()])[:-1].tolist(), strict=True))
        attn_bytes = sum(self._attn_len.values())
        self.ffn_region_bytes = ffn_region_bytes
        self.layer_stride = attn_bytes + ffn_region_bytes
        self.layers_offset = sum(emb.values())
        self._ffn_rel = attn_bytes
        self.total_bytes = int(self.layers_offset + m.n_layers * self.layer_stride)
        self.padding_bytes = self.total_bytes - m.total_bytes(self.dtype)

    def layer_offset(self, layer: int) -> int:
        if not 0 <= layer < self.model.n_layers:
            raise ValueError(f"layer {layer} out of range 0..{self.model.n_layers - 1}")
        return self.layers_offset + layer * self.layer_stride

    def ffn_offset(self, layer: int) -> int:
        return self.layer_offset(layer) + self._ffn_rel

    # ---- whole ops ------------------------------------------------------------------------------------
    def op_extents(self, layer: int, ops: Sequence[str]) -> np.ndarray:
        rows = [self._one_op(layer, op) for op in ops]
        return coalesce(np.concatenate(rows)) if rows else np.zeros((0, 2), np.int64)

    def _one_op(self, layer: int, op: str) -> np.ndarray:
        if layer == EMBEDDINGS:
            if op not in EMBEDDING_OPS:
                raise ValueError(f"unknown embedding op {op!r}; known: {', '.join(EMBEDDING_OPS)}")
            return np.array([[self._emb_off[op], self._emb_len[op]]], np.int64)[: 1 if self._emb_len[op] else 0]
        if op in ATTENTION_OPS:
            return np.array([[self.layer_offset(layer) + self._attn_rel[op], self._attn_len[op]]], np.int64)
        if op not in self.ffn_ops:
            raise ValueError(f"unknown op {op!r} for {self.model.name}; known: {ATTENTION_OPS + self.ffn_ops}")
        off, _, op_idx, copy = self.ffn_placement(layer)
        keep = (op_idx == self.ffn_ops.index(op)) & (copy == 0)
        return coalesce(np.stack([off[keep], np.full(int(keep.sum()), self.row_bytes)], axis=1))

    # ---- FFN rows (implemented by subclasses) ---------------------------------------------------------
    def neuron_extents(self, layer: int, neurons: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def neuron_extents_all(self, flat: np.ndarray) -> list[np.ndarray]:
        """Every layer's neuron extents at once: flat [N] sorted ``layer * n_neurons + neuron`` -> per layer
        ``neuron_extents(layer, its neurons)`` (a list of L arrays; layouts may vectorise this over layers)."""
        n, n_layers = self.n_neurons, self.model.n_layers
        bounds = np.searchsorted(flat, np.arange(n_layers + 1) * n).tolist()  # [L + 1]
        return [self.neuron_extents(l, flat[bounds[l] : bounds[l + 1]] - l * n) for l in range(n_layers)]

    def ffn_placement(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every stored FFN row of one layer: (offset, neuron, op index into ffn_ops, copy) each [P] int64.

        Each row is ``row_bytes`` long; ``copy`` is 0 for a neuron's primary row and 1.. for duplicates.
        """
        raise NotImplementedError

    def neurons_brought(self, layer: int, neurons: np.ndarray) -> np.ndarray:
        """Neurons fully present in DRAM after reading ``neuron_extents(layer, neurons)`` (sorted indices)."""
        return as_neuron_index(neurons, self.n_neurons)
