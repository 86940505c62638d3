"""Policies that need no sparsity: all weights in DRAM, naive (everything from flash), hybrid.

- ``all_dram``: every weight resident; no flash I/O (fails clearly if the DRAM budget is too small).
- ``naive``: nothing resident; every layer's weights and the LM head are read from flash each token
  (LLM in a Flash Table 2 row 1).
- ``hybrid``: attention and embeddings resident; then, if ``fill_budget``, the same fraction of every
  layer's FFN neurons as the remaining budget holds; the rest of the FFN is streamed (Table 2 row 2, where
  the paper keeps half of the model in DRAM).
``overlap`` lets the read of layer l+1 run while layer l computes.
Streaming buffers are not charged to DRAM (as in the paper's DRAM column).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sim.config.base import StrictModel
from sim.engine.plan import NO_EXTENTS, LayerPlan
from sim.layout import EMBEDDINGS, coalesce
from sim.models.profile import ATTENTION_OPS
from sim.policies.base import RunContext
from sim.policies.ops import dense_layer_ops


class AllDramConfig(StrictModel):
    name: Literal["all_dram"]


class NaiveConfig(StrictModel):
    name: Literal["naive"]
    overlap: bool = False


class HybridConfig(StrictModel):
    name: Literal["hybrid"]
    overlap: bool = False
    fill_budget: bool = True


class _Dense:
    """Shared plan building: dense compute of every layer, preload extents fixed per layer."""

    overlap = False

    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        n = ctx.model.n_layers
        self.preloads = [NO_EXTENTS] * n

    def plan_token(self, t: int) -> list[LayerPlan]:
        ctx, n = self.ctx, self.ctx.model.n_layers
        kv_len = ctx.context_tokens + t
        return [
            LayerPlan(
                layer=l,
                issue_at=l - 1 if self.overlap else l,
                preload=self.preloads[l],
                ops=dense_layer_ops(ctx.model, ctx.dtype, kv_len, last=l == n - 1),
                processor=ctx.processor,
            )
            for l in range(n)
        ]

    def token_stats(self) -> dict[str, float]:
        return {}


class AllDram(_Dense):
    def __init__(self, config: AllDramConfig):
        self.config = config

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        dram = ctx.devices.memories["dram"]
        dram.allocate("embeddings", ctx.model.embedding_bytes(ctx.dtype))
        dram.allocate("attention", ctx.model.n_layers * ctx.model.attention_bytes_per_layer(ctx.dtype))
        dram.allocate("ffn", ctx.model.n_layers * ctx.model.ffn_bytes_per_layer(ctx.dtype))


class Naive(_Dense):
    def __init__(self, config: NaiveConfig):
        self.config, self.overlap = config, config.overlap

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        layout, ops = ctx.layout, ATTENTION_OPS + ctx.model.ffn_ops
        self.preloads = [layout.op_extents(l, ops) for l in range(ctx.model.n_layers)]
        # The LM head (tied: the embedding table) is needed at the last layer; the one embedding row of
        # the input token is negligible and not charged.
        lm_head = layout.op_extents(EMBEDDINGS, ("lm_head",) if not ctx.model.tied_embeddings else ("embed",))
        self.preloads[-1] = np.concatenate([self.preloads[-1], lm_head])


class Hybrid(_Dense):
    def __init__(self, config: HybridConfig):
        self.config, self.overlap = config, config.overlap

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        model, dtype, dram = ctx.model, ctx.dtype, ctx.devices.memories["dram"]
        dram.allocate("embeddings", model.embedding_bytes(dtype))
        dram.allocate("attention", model.n_layers * model.attention_bytes_per_layer(dtype))
        n_neurons = model.n_experts * model.d_ff
        n_resident = self._resident_neurons(ctx, n_neurons) if self.config.fill_budget else 0
        if n_resident:
            dram.allocate("ffn", n_resident * model.n_layers * model.neuron_bytes(dtype))
        streamed = np.arange(n_resident, n_neurons)
        self.preloads = [coalesce(ctx.layout.neuron_extents(l, streamed)) for l in range(model.n_layers)]
        self.resident_fraction = n_resident / n_neurons

    @staticmethod
    def _resident_neurons(ctx: RunContext, n_neurons: int) -> int:
        dram = ctx.devices.memories["dram"]
        free = dram.capacity_bytes - dram.used_bytes
        per_neuron_all_layers = ctx.model.n_layers * ctx.model.neuron_bytes(ctx.dtype)
        return int(np.clip(free // per_neuron_all_layers, 0, n_neurons))

    def token_stats(self) -> dict[str, float]:
        return {"ffn_resident_fraction": self.resident_fraction}
