"""Where each input channel of each weight matrix lives on flash, in ActiveFlow's two layouts.

A *channel* of op W [out, in] is one input column: ``out`` weights that multiply input ``c`` (``column_bytes``).

- ``op_channel_layer`` (ActiveFlow §3): op, then channel, then layer within a group of ``group`` layers, so one
  extent holds channel c of op o for every layer of the group -- a group preload of k channels is k reads of
  ``group x column_bytes``, and a miss in one layer reads the slice of that layer;
- ``layer_channel``: each layer's op stored column by column (``group`` 1): a group preload is k reads per layer.

Extents are ``[n, 2] int64 (offset, length)`` sorted by offset; the flash device merges adjacent ones.
"""

from __future__ import annotations

import numpy as np

from sim.models.profile import ATTENTION_OPS, ModelProfile, dtype_bytes

OPS = ATTENTION_OPS + ("gate", "up", "down")


def in_out(model: ModelProfile, op: str) -> tuple[int, int]:
    """(input channels, outputs) of one op of one layer."""
    q_dim, kv_dim = model.n_heads * model.head_dim, model.n_kv_heads * model.head_dim
    d, f = model.d_model, model.d_ff
    return {"q": (d, q_dim), "k": (d, kv_dim), "v": (d, kv_dim), "o": (q_dim, d), "gate": (d, f), "up": (d, f),
            "down": (f, d)}[op]  # fmt: skip


class ChannelLayout:
    def __init__(self, model: ModelProfile, dtype: str, group: int, grouped: bool = True):
        self.model, self.group = model, max(1, group)
        self.grouped = grouped and group > 1
        self.ops = tuple(op for op in OPS if op != "gate" or model.gated)
        self.column_bytes = {op: int(np.ceil(dtype_bytes(dtype, in_out(model, op)[1]))) for op in self.ops}
        self.layer_bytes = sum(in_out(model, op)[0] * self.column_bytes[op] for op in self.ops)
        self.n_groups = -(-model.n_layers // self.group)
        self.total_bytes = self.layer_bytes * model.n_layers

    def _base(self, op: str, layer: int) -> tuple[int, int]:
        """(offset of the block holding ``op`` of ``layer``'s group, layers in that group)."""
        g = layer // self.group
        span = min(self.group, self.model.n_layers - g * self.group)
        offset = g * self.group * self.layer_bytes
        for other in self.ops[: self.ops.index(op)]:
            offset += span * in_out(self.model, other)[0] * self.column_bytes[other]
        return offset, span

    def group_extents(self, op: str, first_layer: int, channels: np.ndarray) -> np.ndarray:
        """Channels ``channels`` of ``op`` for every layer of the group starting at ``first_layer``."""
        col = self.column_bytes[op]
        if not self.grouped:
            return np.concatenate([self.layer_extents(op, l, channels) for l in self._layers(first_layer)])
        offset, span = self._base(op, first_layer)
        starts = offset + np.asarray(channels, np.int64) * span * col
        return np.stack([starts, np.full(len(starts), span * col, np.int64)], axis=1)

    def layer_extents(self, op: str, layer: int, channels: np.ndarray) -> np.ndarray:
        """Channels of ``op`` in one layer only (an on-demand miss)."""
        col = self.column_bytes[op]
        offset, span = self._base(op, layer)
        within = layer - (layer // self.group) * self.group
        stride = span * col if self.grouped else col
        if not self.grouped:  # layer-major: the layer's block of this op, column after column
            offset, within = self._layer_block(op, layer), 0
        starts = offset + np.asarray(channels, np.int64) * stride + within * col
        return np.stack([starts, np.full(len(starts), col, np.int64)], axis=1)

    def _layer_block(self, op: str, layer: int) -> int:
        offset = layer * self.layer_bytes
        for other in self.ops[: self.ops.index(op)]:
            offset += in_out(self.model, other)[0] * self.column_bytes[other]
        return offset

    def _layers(self, first: int) -> range:
        return range(first, min(first + self.group, self.model.n_layers))
