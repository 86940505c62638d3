"""The ``activeflow`` policy (Jia, Cao et al., arXiv 2504.08378): top-k active weights of a non-ReLU model, read
from an op -> channel -> layer flash layout with cross-layer group preloading and a hot-channel cache.

Per decode step and layer l the graph has

    T_l  top-k of the layer's inputs (processor)            after C_{l-1}
    L_l  read of the active channels the preload missed     after T_l       (on demand, one column per channel)
    C_l  the layer over its active channels (gathered GEMVs) after T_l, L_l and its group's preload
    PL   the preload of the next group of ``group`` layers, issued after T of the current group's last layer
         (layer n's top-k predicts layers n+1 ... n+N), one read per channel of N columns

so loading overlaps computing wherever the graph allows; ``group: 0`` is serial loading (no preload: every
active channel read on demand, then computed). Each op keeps ``round((1 - sparsity) x in_channels)`` input
channels; of those, the share ``hit_rate`` is in the hot-channel cache (read nothing), and of the rest the share
``precision(delta)`` came with the preload (delta = the layer's distance from the predicting layer); the others
are read on demand. Which channels: drawn at random per step (their positions only decide how reads merge).

With ``channels: trace`` (the model must be the trace's: SmolLM2) gate and up use the real channels instead: each
token's top-k of the trace's mlp_in per layer, layer n's real set as the preload of layers n+1 .. n+N (the first
group: layer 0's own), and a :mod:`sim.cache` LFU/LRU over the real sets as the hot-channel cache, cold at each of
the trace's contexts; the step rows then report the precision and hit rate those sets gave.

``precision`` and ``hit_rate`` default to what the real SmolLM2 trace measures at this sparsity
(:mod:`sim.activeflow.stats`: per-distance precision of layer n's top-k for layer n + delta; the LFU/LRU cache's
hit rate at ``cache_fraction`` of the channels), applied to the timed model and reported in the step rows
(``af_precision``, ``af_hit_rate``). Beside the simulation, each step row carries the §4.1 cost model's estimate
(``af_cost_model_s``, :mod:`sim.activeflow.cost`) for the same inputs.

DRAM: embeddings and LM head resident; the hot-channel cache (``cache_fraction`` of every layer's weights) and a
double preload buffer (2 groups of active weights) in the window memory. One request at a time (``batch: 1``).
Prefill reads each group's weights whole and computes densely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from sim.activeflow.channels import ChannelLayout, in_out
from sim.activeflow.cost import CostInputs, greedy_group, token_s
from sim.activeflow.stats import active_sets, cache_hit_rates, cross_layer, trace_inputs
from sim.cache import LFUCache, LRUCache, RowCache
from sim.config.base import StrictModel
from sim.config.profiles import REPO_ROOT
from sim.devices.processor import Op
from sim.engine.graph import Graph
from sim.engine.requests import Step
from sim.errors import CapacityError, ConfigError
from sim.lif.bits import pack_rows
from sim.policies.base import RunContext
from sim.policies.ops import StepOps, attended_positions
from sim.units import format_bytes

TRACED_OPS = ("gate", "up")  # the ops whose input (mlp_in) a trace records


@dataclass
class RealChannels:
    """The real active channels of gate/up per decode step (``channels: trace``) and the hot-channel cache over them."""

    active: np.ndarray  # [T, L, d] bool: top-k of mlp_in per token and layer
    context: np.ndarray  # [T] the trace's context id of each token
    cache: RowCache | None  # None: no hot-channel cache
    _context: int = -1

    def token(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(active [L, d], not cached [L, d]) of decode step t (trace token t); the cache steps over the token's sets
        and starts cold at each new context and request (the contextual cache warms on its own prompt)."""
        active = self.active[t]
        if self.cache is None:
            return active, active
        if t == 0 or self.context[t] != self._context:  # a new request, or the trace's next context
            self.cache = type(self.cache)(*self.cache.shape, self.cache.capacity)
            self._context = int(self.context[t])
        return active, self.cache.step_bits(pack_rows(active)).read


class ActiveFlowConfig(StrictModel):
    name: Literal["activeflow"]
    sparsity: float = Field(0.6, ge=0, lt=1, description="sp: share of each op's input channels skipped")
    group: int = Field(4, ge=0, le=64, description="N layers preloaded together; 0 = serial loading")
    layout: Literal["op_channel_layer", "layer_channel"] = "op_channel_layer"
    cache_fraction: float = Field(0.0, ge=0, lt=1, description="share of every layer's channels kept hot in DRAM")
    cache: Literal["lfu_context", "lru_context", "lfu_task"] = "lfu_context"
    precision: float | None = Field(None, gt=0, le=1, description="si for every distance (default: the trace's)")
    hit_rate: float | None = Field(None, ge=0, le=1, description="cache hit rate (default: the trace's)")
    trace: str = Field("traces/smollm2-135m.trace", description="real trace whose mlp_in gives the statistics")
    coalesce_reads: bool = Field(True, description="adjacent channels merge into one read")
    optimize: bool = Field(
        False,
        description="ActiveFlow's optimizer at this sparsity: group N by the greedy search of the cost model (grow "
        "N while the preload outlasts compute and a larger N still gains 2%), the hot-channel cache filling what the "
        "DRAM budget leaves after embeddings, the KV cache and the double preload buffer (group and "
        "cache_fraction are then chosen, not read; the step rows report them)",
    )
    max_group: int = Field(8, ge=1, le=64, description="largest N the optimizer tries")
    channels: Literal["statistical", "trace"] = Field(
        "statistical",
        description="statistical: each op's channels drawn at random, the measured precision and hit rate applied "
        "as shares; trace: gate and up use the trace's real top-k of mlp_in per token and layer (the model must be "
        "the trace's), the preload is layer n's real set for layers n+1..n+N and the hot-channel cache a "
        "sim.cache LFU/LRU over the real sets, cold at each context (q/k/v/o/down stay statistical: their inputs "
        "are not in the trace)",
    )


class ActiveFlow:
    def __init__(self, config: ActiveFlowConfig):
        self.config = config
        self._stats: dict[str, float] = {}
        self._real: RealChannels | None = None  # channels: trace
        self._sets: tuple[np.ndarray, np.ndarray] | None = None  # this step's real (active, not cached) sets

    def setup(self, ctx: RunContext) -> None:
        cfg, model, dtype = self.config, ctx.model, ctx.dtype
        if ctx.max_batch != 1:
            reason = "activeflow models one request at a time (set batch: 1)"
            raise ConfigError("experiment", "batch", reason, ctx.max_batch)
        self.ctx, self.ops, self.rng = ctx, StepOps(model, dtype, ctx.kv_dtype), ctx.rng
        self.trace = Path(cfg.trace) if Path(cfg.trace).is_absolute() else REPO_ROOT / cfg.trace
        weights = ctx.devices.memories[ctx.placement.weights]
        weights.allocate("embeddings", model.embedding_bytes(dtype))
        self.group, self.cache_fraction = cfg.group, cfg.cache_fraction
        if cfg.optimize:
            self.group, self.cache_fraction = self._optimize(ctx)
        self.layout = ChannelLayout(model, dtype, self.group, grouped=cfg.layout == "op_channel_layer")
        self.keep = {op: int(round((1 - cfg.sparsity) * in_out(model, op)[0])) for op in self.layout.ops}
        self.precision = self._precision(max(self.group, 1))
        self.hit_rate = self._hit_rate(self.cache_fraction)
        active_layer = self.layout.layer_bytes * (1 - cfg.sparsity)
        window = ctx.devices.memories[ctx.placement.window]
        if self.cache_fraction:
            window.allocate("hot_channels", self.cache_fraction * self.layout.total_bytes)
        window.allocate("preload_buffer", 2 * active_layer * max(self.group, 1))
        self._compute = self._layer_compute()
        self._real = self._real_channels(ctx) if cfg.channels == "trace" else None
        self._cost = token_s(self._cost_inputs(ctx, self.group, self.hit_rate, float(np.mean(self.precision))))

    def _real_channels(self, ctx: RunContext) -> RealChannels:
        x, context, _ = trace_inputs(self.trace)  # [T, L, d] mlp_in, [T] context ids
        model, cfg = ctx.model, self.config
        if x.shape[1:] != (model.n_layers, model.d_model):
            reason = (f"the trace's mlp_in is {x.shape[1]} layers x {x.shape[2]} channels, model {model.name} has "
                      f"{model.n_layers} x {model.d_model} (use channels: statistical for another model)")  # fmt: skip
            raise ConfigError("experiment", "policy.channels", reason, cfg.channels)
        if ctx.decode_tokens > len(x):
            reason = f"{ctx.decode_tokens} decode steps need as many trace tokens; {self.trace.name} has {len(x)}"
            raise ConfigError("experiment", "decode_tokens", reason, ctx.decode_tokens)
        if cfg.cache == "lfu_task":
            reason = "a task-level cache is learnt offline from other contexts; channels: trace runs lfu/lru_context"
            raise ConfigError("experiment", "policy.cache", reason, cfg.cache)
        capacity = int(round(self.cache_fraction * model.d_model))
        cache = (LFUCache if cfg.cache.startswith("lfu") else LRUCache)(model.n_layers, model.d_model, capacity)
        return RealChannels(active_sets(x[: ctx.decode_tokens], cfg.sparsity), context, cache if capacity else None)

    def _precision(self, distances: int) -> list[float]:
        """si per layer distance 1 .. distances: the config's, or what the real trace measures at this sparsity."""
        cfg = self.config
        if cfg.precision is not None:
            return [cfg.precision] * distances
        measured = cross_layer(self.trace, round(cfg.sparsity, 6), distances)
        return [measured.get(d, measured[max(measured)])[1] for d in range(1, distances + 1)]

    def _hit_rate(self, cache_fraction: float) -> float:
        cfg = self.config
        if cfg.hit_rate is not None:
            return cfg.hit_rate
        if not cache_fraction:
            return 0.0
        return cache_hit_rates(self.trace, round(cfg.sparsity, 6), round(cache_fraction, 3))[cfg.cache]

    def _optimize(self, ctx: RunContext) -> tuple[int, float]:
        """(N, cache_fraction) by ActiveFlow's greedy search under the window memory's budget (class docstring)."""
        cfg, model = self.config, ctx.model
        total = ChannelLayout(model, ctx.dtype, 1).total_bytes  # S_m: every layer's weights
        active_layer = total / model.n_layers * (1 - cfg.sparsity)
        kv = model.kv_bytes_per_token(ctx.kv_dtype) * ctx.max_context_tokens
        free = ctx.devices.memories[ctx.placement.window].budget_free_bytes - kv

        def cache_fraction(n: int) -> float:  # what the budget leaves after the double preload buffer
            return float(np.clip((free - 2 * active_layer * n) / total, 0.0, 1 - cfg.sparsity))

        if free < 2 * active_layer:
            need = format_bytes(2 * active_layer + kv)
            raise CapacityError(f"activeflow: the preload buffer of one layer and the KV cache need {need} beside "
                                "the embeddings; the DRAM budget leaves less")  # fmt: skip
        fits = min(cfg.max_group, int(free // (2 * active_layer)))  # the largest N whose double buffer fits
        precision = self._precision(fits)

        def make(n: int) -> CostInputs:
            return self._cost_inputs(ctx, n, self._hit_rate(cache_fraction(n)), float(np.mean(precision[:n])))

        n = greedy_group(make, fits)
        return n, cache_fraction(n)

    def _layer_compute(self) -> tuple[Op, ...]:
        """The layer's GEMVs over its active channels (gathered columns) -- the same every decode step."""
        m, sp = self.ctx.model, self.config.sparsity
        n_weights = (1 - sp) * sum(m.op_weights(op) for op in self.layout.ops)
        nbytes = (1 - sp) * self.layout.layer_bytes
        rows = sum(self.keep.values())  # the active channels (columns) of every op
        return (Op("active_weights", 2.0 * n_weights, nbytes, self.ctx.dtype, gathered=True, rows=rows),)

    def _topk(self, step: Step) -> tuple[Op, ...]:
        m = self.ctx.model
        inputs = 3 * m.d_model + m.d_ff + m.n_heads * m.head_dim  # attn_in, o's input, mlp_in (twice), down's input
        return (Op("topk", 10.0 * inputs * step.n_tokens, 4.0 * inputs, "fp32"),)

    def _cost_inputs(self, ctx: RunContext, group: int, hit_rate: float, precision: float) -> CostInputs:
        cfg, flash = self.config, ctx.devices.flash
        proc = ctx.hardware.processors[ctx.processor]
        layout = ChannelLayout(ctx.model, ctx.dtype, group)
        column = float(np.mean(list(layout.column_bytes.values())))
        qd = flash.spec.max_queue_depth
        small, large = (max(column, flash.spec.page_bytes), max(column * max(group, 1), flash.spec.page_bytes))
        return CostInputs(
            layer_bytes=layout.layer_bytes, n_layers=ctx.model.n_layers, sparsity=cfg.sparsity, group=group,
            hit_rate=hit_rate, precision=precision,
            bw_small_Bps=flash.throughput_Bps(small, qd) * column / small,  # a column moves a whole page at least
            bw_large_Bps=flash.throughput_Bps(large, qd) * column * max(group, 1) / large,
            bw_mem_Bps=proc.mem_bandwidth * proc.bandwidth_efficiency * proc.gather_efficiency,
        )  # fmt: skip

    # ---- per step -------------------------------------------------------------------------------------
    def plan(self, step: Step) -> Graph:
        if step.phase == "prefill":
            return self._prefill(step)
        cfg, L, N = self.config, self.ctx.model.n_layers, self.group
        g, proc = Graph(), self.ctx.processor
        merge = cfg.coalesce_reads
        preload: dict[int, int] = {}
        read_bytes = {"preload": 0.0, "on_demand": 0.0}
        self._sets = self._real.token(step.positions[0]) if self._real is not None else None
        self._predicted: dict[int, np.ndarray] = {}  # group's first layer -> the real set predicting the group
        self._preloaded: dict[int, np.ndarray] = {}  # group's first layer -> the channels its preload read
        if N:
            preload[0] = self._preload(g, 0, (), read_bytes, merge)
        prev: tuple[int, ...] = ()
        for layer in range(L):
            core = self.ops.core(sum(step.kv_tokens), attended_positions(step))
            topk = g.run(proc, self._topk(step), prev, tag=f"L{layer} T")
            if N and layer % N == N - 1 and layer + 1 < L:  # layer n's top-k predicts layers n+1 .. n+N
                preload[layer + 1] = self._preload(g, layer + 1, (topk,), read_bytes, merge)
            deps = [topk]
            missed = self._misses(layer, read_bytes)
            if len(missed):
                deps.append(g.read(missed, (topk,), tag=f"L{layer} L", merge=merge))
            if N:
                deps.append(preload[layer - layer % N])
            ops = self._compute + core + (self.ops.lm_head(step) if layer == L - 1 else ())
            prev = (g.run(proc, ops, deps, tag=f"L{layer} C"),)
        precision, hit_rate = (float(np.mean(self.precision)) if N else 0.0), self.hit_rate
        if self._sets is not None:  # what the real sets gave this token (gate/up)
            precision, hit_rate = self._measured(N)
        self._stats = {
            "af_preload_bytes": read_bytes["preload"],
            "af_on_demand_bytes": read_bytes["on_demand"],
            "af_precision": precision,
            "af_hit_rate": hit_rate,
            "af_cost_model_s": self._cost["T_token"],
            "af_group": float(N),
            "af_cache_fraction": self.cache_fraction,
        }
        return g

    def _channels(self, op: str, n: int) -> np.ndarray:
        total = in_out(self.ctx.model, op)[0]
        return np.sort(self.rng.choice(total, size=min(n, total), replace=False))

    def _measured(self, N: int) -> tuple[float, float]:
        """(precision of the preloads, cache hit rate) of this token's real gate/up sets."""
        active, uncached = self._sets
        hit_rate = 1.0 - float(uncached.sum()) / max(float(active.sum()), 1.0)
        if not N:
            return 0.0, hit_rate
        layers = range(self.ctx.model.n_layers)
        found = sum(int((active[l] & self._predicted[l - l % N]).sum()) for l in layers)
        return found / max(float(active.sum()), 1.0), hit_rate

    def _preload(self, g: Graph, first: int, after: tuple[int, ...], read_bytes: dict, merge: bool) -> int:
        """One read of the predicted, uncached channels of every op for the group starting at ``first``."""
        ops = self.layout.ops
        if self._sets is not None:  # layer first-1's real set predicts the group (the first group: layer 0's own)
            active, uncached = self._sets
            self._predicted[first] = active[max(first - 1, 0)]
            self._preloaded[first] = self._predicted[first] & uncached[first]  # what the read brings, every layer
            real = np.flatnonzero(self._preloaded[first])
        parts = [
            self.layout.group_extents(op, first, real if self._sets is not None and op in TRACED_OPS
                                      else self._channels(op, self._uncached(op)))
            for op in ops
        ]  # fmt: skip
        extents = np.concatenate(parts)
        read_bytes["preload"] += float(extents[:, 1].sum())
        return g.read(extents, after, tag=f"PL {first}", merge=merge)

    def _uncached(self, op: str) -> int:
        return int(round(self.keep[op] * (1 - self.hit_rate)))

    def _misses(self, layer: int, read_bytes: dict) -> np.ndarray:
        """Extents of the layer's active, uncached channels its group's preload did not bring."""
        N = self.group
        miss = 1.0 if not N else 1.0 - self.precision[layer % N]
        real = None
        if self._sets is not None:  # the layer's real set, not cached, not brought by its group's preload
            active, uncached = self._sets
            need = active[layer] & uncached[layer]
            real = np.flatnonzero(need & ~self._preloaded[layer - layer % N] if N else need)
        parts = [self.layout.layer_extents(op, layer, real if real is not None and op in TRACED_OPS
                                           else self._channels(op, int(round(self._uncached(op) * miss))))
                 for op in self.layout.ops]  # fmt: skip
        extents = np.concatenate(parts)
        read_bytes["on_demand"] += float(extents[:, 1].sum())
        return extents

    def _prefill(self, step: Step) -> Graph:
        """Every group's weights read whole, the chunk computed densely layer by layer."""
        g, proc, m = Graph(), self.ctx.processor, self.ctx.model
        lay, span = self.layout, max(self.group, 1)
        reads = {}
        prev: tuple[int, ...] = ()
        for layer in range(m.n_layers):
            first = layer - layer % span
            if first not in reads:
                n = min(span, m.n_layers - first)
                block = np.array([[first * lay.layer_bytes, n * lay.layer_bytes]], np.int64)
                reads[first] = g.read(block, prev, tag=f"prefill {first}")
            ops = self.ops.dense_layer(step, last=False)
            prev = (g.run(proc, ops, (*prev, reads[first]), tag=f"L{layer} C"),)
        self._stats = {}
        return g

    def run_notes(self, summary: dict[str, Any]) -> list[str]:
        """How far the §4.1 cost model is from the simulation, and where the gap sits, when it is over 5%."""
        model_ms, sim_ms = 1e3 * self._cost["T_token"], summary["total_ms"]
        gap = 100.0 * (model_ms / sim_ms - 1.0)
        if abs(gap) <= 5.0:
            return []
        c = {k: 1e3 * v for k, v in self._cost.items()}
        io_model = c["T_token"] - c["T_comp"] * max(1, math.ceil(self.ctx.model.n_layers / max(self.group, 1)))
        queueing = (
            "queueing of on-demand misses behind the group's preload on the one flash device, " if self.group else ""
        )
        return [f"activeflow: the §4.1 cost model gives {model_ms:.1f} ms/token, the simulation {sim_ms:.1f} "
                f"({gap:+.0f}%); simulated I/O stall {summary['io_ms']:.1f} ms against the model's ~{io_model:.1f} ms "
                "of loading not hidden by compute: the model prices every read at the curve's throughput, with no "
                f"{queueing}per-request latency or partial pages"]  # fmt: skip

    def kv_tokens_held(self, tokens: int) -> float:
        return float(tokens)

    def step_stats(self) -> dict[str, float]:
        return self._stats
