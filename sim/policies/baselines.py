"""Policies that need no sparsity: all weights resident, naive (everything from flash), hybrid.

- ``all_dram``: every weight resident; no flash I/O (fails clearly if the budget is too small).
- ``naive``: nothing resident; every layer's weights and the LM head are read from flash each step
  (LLM in a Flash Table 2 row 1).
- ``hybrid``: attention and embeddings resident (``embeddings: input_flash``: the input table stays on flash and
  each token's row is read; ``flash``: the LM head is read with the last layer too); then, if ``fill_budget``, the
  same fraction of every layer's FFN neurons as the remaining budget holds; the rest of the FFN is streamed
  (Table 2 row 2, where the paper keeps half of the model in DRAM).

Resident weights live in the placement's ``weights`` memory; if the processor computes out of another memory
they cross the link every step, layer by layer (an offloading setup), as does the KV cache when it lives away from
the processor. A step reads and transfers each weight once whatever its batch; ``overlap`` lets the read of layer
l+1 run while layer l computes (and hybrid's resident attention of a parallel-attention model run while its layer's
FFN rows are read). Streaming buffers are not charged to memory (as in the paper's DRAM column).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from sim.config.base import StrictModel
from sim.engine.graph import NO_EXTENTS, Graph
from sim.engine.layers import LayerPlan, Pipeline, Transfer
from sim.engine.requests import Step
from sim.layout import EMBEDDINGS, coalesce
from sim.models.profile import ATTENTION_OPS, ModelProfile, dtype_bytes
from sim.policies.base import Held, RunContext
from sim.policies.ops import StepOps


class AllDramConfig(StrictModel):
    name: Literal["all_dram"]


class NaiveConfig(StrictModel):
    name: Literal["naive"]
    overlap: bool = False


Embeddings = Literal["dram", "input_flash", "flash"]
EMBEDDINGS_HELP = (
    "dram: the embedding table (and an untied LM head) resident; input_flash: the LM head resident, the input table "
    "left on flash and each token's row read before layer 0 (LLM in a Flash's accounting; tied embeddings: as dram); "
    "flash: neither held, the LM head read with the last layer every decode step and the input rows as input_flash"
)


class HybridConfig(StrictModel):
    name: Literal["hybrid"]
    overlap: bool = False
    fill_budget: bool = True
    embeddings: Embeddings = Field("dram", description=EMBEDDINGS_HELP)


def embedding_bytes_held(model: ModelProfile, dtype: str, where: str) -> float:
    """Bytes of embeddings a policy keeps resident (learned positions stay with what is held)."""
    table = dtype_bytes(dtype, model.vocab_size * model.d_model)
    if where == "flash":
        return 0.0
    if where == "input_flash" and not model.tied_embeddings:
        return model.embedding_bytes(dtype) - table
    return model.embedding_bytes(dtype)


def reads_input_rows(model: ModelProfile, where: str) -> bool:
    """Whether the input embedding rows come from flash (the input table is not resident)."""
    return where == "flash" or (where == "input_flash" and not model.tied_embeddings)


def attention_beside(plan: LayerPlan, input_rows: bool) -> bool:
    """Whether a parallel-attention layer's attention can run beside its reads: nothing it needs is still in
    flight (no weights or KV cache crossing a link first, no input rows being read for layer 0)."""
    return not plan.transfers and not (plan.layer == 0 and input_rows)


def input_row_extents(ctx: RunContext, step: Step) -> np.ndarray:
    """[n, 2] extents of the input embedding rows a step's tokens need (one per token computed). A projected trace
    has no token ids, so the row of a token is a fixed hash of its request and position: what a read costs depends
    on its size and count, not on which row it is."""
    layout, model = ctx.layout, ctx.model
    table_offset = int(layout.op_extents(EMBEDDINGS, ("embed",))[0, 0])
    rows = [
        (request * 1_000_003 + position + j) * 2_654_435_761 % model.vocab_size
        for request, position, n in zip(step.requests, step.positions, step.new_tokens, strict=True)
        for j in range(n)
    ]
    offsets = table_offset + np.unique(np.array(rows, np.int64)) * layout.row_bytes
    return np.stack([offsets, np.full(len(offsets), layout.row_bytes, np.int64)], axis=1)


def kv_bytes_per_layer(model: ModelProfile, kv_dtype: str, step: Step) -> float:
    """The K and V of one layer that a step's attention reads (every request's cached tokens)."""
    return dtype_bytes(kv_dtype, 2 * sum(step.kv_tokens) * model.n_kv_heads * model.head_dim)


def placement_transfers(ctx: RunContext, step: Step, layer: int, resident_bytes: float) -> tuple[Transfer, ...]:
    """What must cross a link before a layer computes: its resident weights and its KV cache, each when it lives
    in a memory other than the processor's."""
    p, out = ctx.placement, []
    if p.weights == p.compute and p.kv == p.compute:
        return ()
    if p.weights != p.compute and resident_bytes > 0:
        out.append(Transfer(p.weights, p.compute, resident_bytes, f"L{layer} weights"))
    kv_bytes = kv_bytes_per_layer(ctx.model, ctx.kv_dtype, step)
    if p.kv != p.compute and kv_bytes > 0:
        out.append(Transfer(p.kv, p.compute, kv_bytes, f"L{layer} kv"))
    return tuple(out)


def lm_head_extents(ctx: RunContext) -> np.ndarray:
    """The LM head's extents (tied: the embedding table), read at the last layer by a policy that does not hold it
    (the input tokens' rows: :func:`input_row_extents`)."""
    model = ctx.model
    return ctx.layout.op_extents(EMBEDDINGS, ("lm_head",) if not model.tied_embeddings else ("embed",))


class _Dense:
    """Shared plan building: dense compute of every layer, preload extents and resident bytes fixed per layer."""

    overlap = False
    _holds_attention = True  # attention resident (all but naive)
    _holds_embeddings = True  # the embedding table resident (all but naive, and hybrid with embeddings: flash)
    _held_neurons = np.zeros(0, np.int64)  # FFN neurons resident in every layer
    _input_rows = False  # the input embedding rows are read from flash before layer 0
    _attention_beside = False  # attention computed while the layer's reads run (parallel attention, overlap)

    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx
        n = ctx.model.n_layers
        self.ops = StepOps(ctx.model, ctx.dtype, ctx.kv_dtype)
        self.pipeline = Pipeline(ctx.placement)
        self.preloads = [NO_EXTENTS] * n
        self.resident_bytes = [0.0] * n  # per layer: bytes of its weights held resident
        self._place(ctx)
        self.plans = [  # made once (the preloads are fixed); plan() updates ops and transfers in place
            LayerPlan(l, l - 1 if self.overlap else l, self.preloads[l], processor=ctx.processor) for l in range(n)
        ]

    def _place(self, ctx: RunContext) -> None:
        """Allocate what the policy keeps resident and set the preloads (each policy's own part of setup)."""

    def plan(self, step: Step) -> Graph:
        ctx, plans, m = self.ctx, self.plans, self.ctx.model
        dense = self.ops.dense_layer(step, last=False), self.ops.dense_layer(step, last=True)
        if self._attention_beside:  # resident attention may run while the layer's streamed FFN rows arrive
            attention, ffn = self.ops.attention(step), self.ops.ffn(m.d_ff * m.experts_top_k, step.n_tokens)
        if self._input_rows:  # the tokens' input rows read with layer 0's weights (the embedding table lies first)
            plans[0].preload = np.concatenate([input_row_extents(ctx, step), self.preloads[0]])
        for plan in plans:  # only the ops (attention's KV length), transfers and input rows change step to step
            last = plan.layer == m.n_layers - 1
            plan.transfers = placement_transfers(ctx, step, plan.layer, self.resident_bytes[plan.layer])
            if self._attention_beside and attention_beside(plan, self._input_rows):
                plan.ops, plan.concurrent = ffn + (self.ops.lm_head(step) if last else ()), attention
            else:
                plan.ops, plan.concurrent = dense[last], ()
        return self.pipeline.graph(plans)

    def step_stats(self) -> dict[str, float]:
        return {}

    # ---- Executable (sim.real.executor) ----
    def held(self) -> Held:
        return Held(self._holds_embeddings, self._holds_attention, [self._held_neurons] * self.ctx.model.n_layers)

    def ffn_neurons(self) -> None:
        return None

    def window_matrix(self) -> None:
        return None

    def kv_tokens_held(self, tokens: int) -> float:
        return float(tokens)

    def _hold(self, tenant: str, bytes_per_layer: float) -> None:
        """Allocate a tenant of ``bytes_per_layer`` in every layer in the weights memory."""
        self.ctx.devices.memories[self.ctx.placement.weights].allocate(
            tenant, bytes_per_layer * len(self.resident_bytes)
        )
        self.resident_bytes = [b + bytes_per_layer for b in self.resident_bytes]

    def _hold_embeddings(self, where: str = "dram") -> None:
        """Allocate the embedding tables (``input_flash``: all but an untied input table); the LM head is used by
        the last layer."""
        model, dtype = self.ctx.model, self.ctx.dtype
        held = embedding_bytes_held(model, dtype, where)
        self.ctx.devices.memories[self.ctx.placement.weights].allocate("embeddings", held)
        self.resident_bytes[-1] += dtype_bytes(dtype, model.vocab_size * model.d_model)


class AllDram(_Dense):
    def __init__(self, config: AllDramConfig):
        self.config = config

    def _place(self, ctx: RunContext) -> None:
        model, dtype = ctx.model, ctx.dtype
        self._hold_embeddings()
        self._hold("attention", model.attention_bytes_per_layer(dtype))
        self._hold("ffn", model.ffn_bytes_per_layer(dtype))
        self._held_neurons = np.arange(model.n_experts * model.d_ff)


class Naive(_Dense):
    _holds_attention = _holds_embeddings = False

    def __init__(self, config: NaiveConfig):
        self.config, self.overlap = config, config.overlap

    def _place(self, ctx: RunContext) -> None:
        layout, ops = ctx.layout, ATTENTION_OPS + ctx.model.ffn_ops
        self.preloads = [coalesce(layout.op_extents(l, ops)) for l in range(ctx.model.n_layers)]
        self.preloads[-1] = coalesce(np.concatenate([self.preloads[-1], lm_head_extents(ctx)]))


class Hybrid(_Dense):
    def __init__(self, config: HybridConfig):
        self.config, self.overlap = config, config.overlap

    def _place(self, ctx: RunContext) -> None:
        model, dtype = ctx.model, ctx.dtype
        where = self.config.embeddings
        if where != "flash":
            self._hold_embeddings(where)
        self._input_rows = reads_input_rows(model, where)
        self._holds_embeddings = not self._input_rows
        self._attention_beside = self.overlap and model.parallel_attention
        self._hold("attention", model.attention_bytes_per_layer(dtype))
        n_neurons = model.n_experts * model.d_ff
        n_resident = self._resident_neurons(ctx, n_neurons) if self.config.fill_budget else 0
        if n_resident:
            self._hold("ffn", n_resident * model.neuron_bytes(dtype))
        self._held_neurons = np.arange(n_resident)
        streamed = np.arange(n_resident, n_neurons)
        self.preloads = [coalesce(ctx.layout.neuron_extents(l, streamed)) for l in range(model.n_layers)]
        if where == "flash":  # the LM head from flash with the last layer, as naive reads it
            self.preloads[-1] = coalesce(np.concatenate([self.preloads[-1], lm_head_extents(ctx)]))
        self.resident_fraction = n_resident / n_neurons

    @staticmethod
    def _resident_neurons(ctx: RunContext, n_neurons: int) -> int:
        free = ctx.devices.memories[ctx.placement.weights].budget_free_bytes
        per_neuron_all_layers = ctx.model.n_layers * ctx.model.neuron_bytes(ctx.dtype)
        return int(np.clip(free // per_neuron_all_layers, 0, n_neurons))

    def step_stats(self) -> dict[str, float]:
        return {"ffn_resident_fraction": self.resident_fraction}
