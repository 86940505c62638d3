"""``moe_offload``: a mixture-of-experts model whose experts are the units of loading (Mixtral-offloading, Eliseev
& Mazur arXiv 2312.17238; the survey's MoE section).

Attention, router, embeddings and LM head stay resident in the processor's memory. Each expert of each layer is
one blob (gate, up, down) of ``expert_dtype`` bytes, stored on ``experts_on``: ``flash`` (read into the memory
flash reads into, then across the link if the processor computes elsewhere) or a memory (``dram``: copied over
PCIe to a GPU). Per decode step and layer:

    attention -> router -> for each routed expert: [load if not cached] -> its FFN       (on the processor)

so an expert's compute overlaps another's load. The expert cache holds ``cache_experts`` experts per layer in the
processor's memory: ``lru`` (Mixtral-offloading's), ``lfu`` (use counts), or ``static`` (the most popular experts
of a warm-up, never replaced). ``prefetch``: after layer l's attention, layer l+1's experts are guessed (correct
with probability ``prefetch_accuracy`` each, as applying l+1's gate to l's hidden state does) and loaded early; a
wrong guess is read for nothing.

Routing (which experts each token uses) comes from :mod:`sim.moe.routing`: by default a chain fitted per layer to
the Mixtral paper's repetition rates (papers.md); ``routing: trace`` replays a real routing trace (the MoEfied
SmolLM2 of :mod:`sim.lab.moefy`), ``routing: trace_rates`` fits the chain to that trace's rates instead. The
summary's ``activations`` column names the source. Each request of the batch has its own
routing chain; a step loads the union of the batch's experts. Bytes: ``expert_dtype`` / ``attention_dtype`` (HQQ
formats of papers.md included, :data:`sim.models.profile.DTYPE_BITS`) for what is stored and moved, embeddings and
LM head at the run's ``dtype``; kernels compute in the run's ``dtype`` (the attention kernels' bytes read are
charged at it too: a limitation for 4-bit attention, whose GEMVs would read a quarter as much).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from sim.config.base import StrictModel
from sim.config.profiles import REPO_ROOT
from sim.devices.processor import Op
from sim.engine.graph import Graph
from sim.engine.requests import Step
from sim.errors import ConfigError, TraceError
from sim.models.profile import DTYPE_BITS, dtype_bytes
from sim.moe import routing
from sim.policies.base import RunContext
from sim.policies.ops import StepOps


class MoEOffloadConfig(StrictModel):
    name: Literal["moe_offload"]
    experts_on: str = Field("flash", description="flash, or the memory holding every expert")
    expert_dtype: str | None = Field(None, description="bytes per expert weight (default: the run's dtype)")
    attention_dtype: str | None = Field(None, description="bytes of the resident weights (default: the run's dtype)")
    cache_experts: int = Field(0, ge=0, description="experts per layer cached in the processor's memory")
    cache_policy: Literal["lru", "lfu", "static"] = "lru"
    prefetch: bool = False
    prefetch_accuracy: float = Field(
        0.0, ge=0, le=1, description="share of next-layer experts guessed right (a replayed trace's own guesses win)"
    )
    warmup_tokens: int = Field(64, ge=1, description="routing tokens that pick the static cache's experts")
    routing: Literal["mixtral_table5", "trace", "trace_rates"] = Field(
        "mixtral_table5",
        description="mixtral_table5: a chain fitted to the Mixtral paper's repetition rates; trace: routing_trace "
        "replayed as it is (the model must have its layers, experts and top-k); trace_rates: a chain fitted to "
        "routing_trace's per-layer rates and, where the expert counts match, popularity (layers interpolated)",
    )
    routing_trace: str | None = Field(None, description="a routing trace (kind: moefication writes them)")

    @field_validator("expert_dtype", "attention_dtype")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPE_BITS:
            raise ValueError(f"unknown dtype; known: {', '.join(DTYPE_BITS)}")
        return v


class MoEOffload:
    def __init__(self, config: MoEOffloadConfig):
        self.config = config
        self._stats: dict[str, float] = {}

    def setup(self, ctx: RunContext) -> None:
        cfg, m = self.config, ctx.model
        if m.n_experts < 2:
            raise ConfigError("experiment", "policy", f"moe_offload needs an MoE model ({m.name} has one expert)")
        if cfg.cache_experts > m.n_experts:
            raise ConfigError(
                "experiment", "policy.cache_experts", f"{m.name} has {m.n_experts} experts", cfg.cache_experts
            )
        if cfg.experts_on != "flash" and cfg.experts_on not in ctx.devices.memories:
            known = ", ".join(["flash", *ctx.devices.memories])
            raise ConfigError("experiment", "policy.experts_on", f"no such store; known: {known}", cfg.experts_on)
        self.ctx, self.ops, self.rng = ctx, StepOps(m, ctx.dtype, ctx.kv_dtype), ctx.rng
        self.expert_dtype = cfg.expert_dtype or ctx.dtype
        attention_dtype = cfg.attention_dtype or ctx.dtype
        expert_weights = sum(m.op_weights(op) for op in m.ffn_ops)  # one expert of one layer
        self.expert_bytes = dtype_bytes(self.expert_dtype, expert_weights)
        self.here = ctx.placement.compute
        resident = ctx.devices.memories[ctx.placement.weights]
        resident.allocate("embeddings", dtype_bytes(ctx.dtype, m.embedding_weights))  # 16-bit, as the setups keep them
        resident.allocate("attention", m.n_layers * dtype_bytes(attention_dtype, m.attention_weights_per_layer))
        if cfg.cache_experts:
            ctx.devices.memories[self.here].allocate("expert_cache", cfg.cache_experts * m.n_layers * self.expert_bytes)
        if cfg.experts_on != "flash":
            ctx.devices.memories[cfg.experts_on].allocate("experts", m.n_experts * m.n_layers * self.expert_bytes)
        self.replay, points, popularity = self._routing_source(m)
        targets = routing.table_rates(m.n_layers, points) if self.replay is None else []  # a replay needs no chain
        self.popularity = [None if popularity is None else popularity[round(l * (len(popularity) - 1) /
                           max(m.n_layers - 1, 1))] for l in range(len(targets))]  # fmt: skip
        self.chain = [routing.fit(m.n_experts, m.experts_top_k, round(a, 4), round(b, 4),
                                  None if p is None else tuple(np.round(p, 4))) + (p,)
                      for (a, b), p in zip(targets, self.popularity, strict=True)]  # fmt: skip
        self.tokens_routed: dict[tuple[int, int], int] = {}  # (request, layer) -> its tokens routed so far
        self.prev: dict[tuple[int, int], np.ndarray] = {}  # (request, layer) -> its last token's experts
        self.cache = [self._initial_cache(l) for l in range(m.n_layers)]  # per layer: expert -> last use / count
        self.clock = 0
        self._expert_weights = expert_weights
        self.model_bytes = (  # the whole model at these formats (block scales included), for the record
            m.n_layers * m.n_experts * self.expert_bytes
            + dtype_bytes(attention_dtype, m.n_layers * m.attention_weights_per_layer)
            + dtype_bytes(ctx.dtype, m.embedding_weights)
        )
        self._planned: dict[tuple[int, int], dict[int, int]] = {}
        self._replayed: dict[tuple[int, int], list[int]] = {}  # (step, layer) -> trace rows its tokens replayed
        self._router_op = (
            Op(
                "router",
                2.0 * m.d_model * m.n_experts,
                dtype_bytes(attention_dtype, m.d_model * m.n_experts),
                ctx.dtype,
            ),
        )

    def _routing_source(self, m) -> tuple[routing.TraceRouting | None, dict, np.ndarray | None]:
        """(the trace to replay, or None; the per-layer rates the chain is fitted to; the trace's per-layer
        popularity [L_trace, E] when it has the model's experts, else None: uniform)."""
        cfg = self.config
        if cfg.routing == "mixtral_table5":
            self.driven_by = routing.SOURCE + ", uniform popularity"
            return None, routing.MIXTRAL_TABLE5, None
        if cfg.routing_trace is None:
            raise ConfigError("experiment", "policy.routing_trace", f"routing: {cfg.routing} needs a trace", None)
        path = Path(cfg.routing_trace)
        path = path if path.is_absolute() or path.is_file() else REPO_ROOT / path
        k = m.experts_top_k if cfg.routing == "trace" else None
        try:
            trace = routing.TraceRouting(path, m.n_layers if k else None, m.n_experts if k else None, k)
        except TraceError as err:
            raise ConfigError("experiment", "policy.routing_trace", str(err), cfg.routing_trace) from None
        if k:
            self.driven_by = f"{trace.name}, replayed"
            return trace, trace.rates(), None
        same = trace.n_experts == m.n_experts  # an expert's share transfers only between equal expert counts
        self.driven_by = f"{trace.name}, its per-layer rates{' and popularity' if same else ''} fitted"
        return None, trace.rates(), trace.popularity() if same else None

    def _initial_cache(self, layer: int) -> dict[int, float]:
        cfg, m = self.config, self.ctx.model
        if not cfg.cache_experts or cfg.cache_policy != "static":  # lru and lfu caches start empty
            return {}
        if self.replay is not None:  # the trace's first tokens
            warm = np.stack([self.replay.experts(0, t, layer) for t in range(cfg.warmup_tokens)])
        else:
            rng = np.random.default_rng([layer, 7])
            warm = routing.route(rng, cfg.warmup_tokens, m.n_experts, m.experts_top_k, *self.chain[layer])
        popular = np.argsort(-np.bincount(warm.ravel(), minlength=m.n_experts), kind="stable")[: cfg.cache_experts]
        return {int(e): 0.0 for e in popular}

    # ---- routing and the cache -------------------------------------------------------------------------
    def _routed(self, step: Step, layer: int) -> dict[int, int]:
        """{expert: tokens of the step routed to it} at ``layer``, each request's chain advanced by each of its new
        tokens (a prefill chunk routes every prompt token). Computed once per (step, layer): a prefetch that peeks at
        the next layer sees what that layer will use."""
        key = (step.index, layer)
        if key not in self._planned:
            m, counts, rows = self.ctx.model, {}, []
            for rid, n_new in zip(step.requests, step.new_tokens, strict=True):
                now = self.prev.get((rid, layer))
                for _ in range(n_new):
                    if self.replay is not None:
                        seen = self.tokens_routed.get((rid, layer), 0)
                        now, self.tokens_routed[(rid, layer)] = self.replay.experts(rid, seen, layer), seen + 1
                        rows.append(self.replay.row(rid, seen))
                    else:
                        now = routing.step(self.rng, now, m.n_experts, m.experts_top_k, *self.chain[layer])
                    for e in now.tolist():
                        counts[e] = counts.get(e, 0) + 1
                self.prev[(rid, layer)] = now
            self._planned = {k: v for k, v in self._planned.items() if k[0] == step.index} | {key: counts}
            self._replayed = {k: v for k, v in self._replayed.items() if k[0] == step.index} | {key: rows}
        return self._planned[key]

    def _expert(self, n_tokens: int) -> tuple[Op, ...]:
        """One expert over the tokens routed to it: its weights read once, 2 FLOPs per weight per token."""
        return (Op("expert", 2.0 * self._expert_weights * n_tokens, self.expert_bytes, self.ctx.dtype),)

    def _lookup(self, layer: int, experts: list[int]) -> tuple[list[int], list[int]]:
        cache = self.cache[layer]
        return [e for e in experts if e in cache], [e for e in experts if e not in cache]

    def _admit(self, layer: int, experts: list[int]) -> None:
        cfg, cache = self.config, self.cache[layer]
        self.clock += 1
        if cfg.cache_policy == "static" or not cfg.cache_experts:  # a static cache never changes
            return
        for e in experts:
            if e in cache:
                cache[e] = self.clock if cfg.cache_policy == "lru" else cache[e] + 1
                continue
            if len(cache) >= cfg.cache_experts:
                del cache[min(cache, key=cache.get)]  # lru: the oldest use; lfu: the fewest uses
            cache[e] = self.clock if cfg.cache_policy == "lru" else 1

    # ---- the step ---------------------------------------------------------------------------------------
    def _load(self, g: Graph, layer: int, expert: int, after: tuple[int, ...]) -> int:
        """Jobs that bring one expert into the processor's memory; returns the last one."""
        cfg, ctx = self.config, self.ctx
        if cfg.experts_on == "flash":
            offset = int((layer * ctx.model.n_experts + expert) * np.ceil(self.expert_bytes))
            extent = np.array([[offset, int(np.ceil(self.expert_bytes))]], np.int64)
            job = g.read(extent, after, tag=f"L{layer} E{expert} read")
            src = ctx.hardware.flash.target_memory
            if src != self.here:
                job = g.transfer(src, self.here, self.expert_bytes, (job,), tag=f"L{layer} E{expert} xfer", stage="io")
            return job
        if cfg.experts_on == self.here:
            return g.copy(self.here, 0.0, after, tag="resident")  # already there: an empty job keeps the graph simple
        return g.transfer(cfg.experts_on, self.here, self.expert_bytes, after, tag=f"L{layer} E{expert} xfer")

    def plan(self, step: Step) -> Graph:
        cfg, ctx, m = self.config, self.ctx, self.ctx.model
        g, proc = Graph(), ctx.processor
        prev: tuple[int, ...] = ()
        hits = misses = prefetch_hits = 0
        loaded = 0.0
        prefetched: dict[int, int] = {}  # expert -> its load job, for the current layer
        for layer in range(m.n_layers):
            attn = g.run(proc, self.ops.attention(step), prev, tag=f"L{layer} attention")
            router = g.run(proc, self._router_op, (attn,), tag=f"L{layer} router")
            routed = self._routed(step, layer)
            cached, missing = self._lookup(layer, sorted(routed))
            hits, misses = hits + len(cached), misses + len(missing)
            next_prefetch: dict[int, int] = {}
            if cfg.prefetch and layer + 1 < m.n_layers:
                next_prefetch, issued_bytes = self._prefetch(g, step, layer + 1, (attn,))
                loaded += issued_bytes
            computes = []
            for e, n_tok in sorted(routed.items()):
                deps = [router]
                if e in missing:
                    if e in prefetched:
                        deps.append(prefetched[e])
                        prefetch_hits += 1
                    else:
                        deps.append(self._load(g, layer, e, (router,)))
                        loaded += self.expert_bytes
                computes.append(g.run(proc, self._expert(n_tok), tuple(deps), tag=f"L{layer} E{e}"))
            self._admit(layer, sorted(routed))
            prefetched = next_prefetch
            prev = tuple(computes) or (router,)
        g.run(proc, self.ops.lm_head(step), prev, tag="lm_head")
        total = max(hits + misses, 1)
        self._stats = {"moe_hit_rate": hits / total, "moe_prefetch_hit_rate": prefetch_hits / max(misses, 1),
                       "moe_experts_loaded_bytes": loaded, "moe_model_bytes": self.model_bytes}  # fmt: skip
        return g

    def _prefetch(self, g: Graph, step: Step, layer: int, after: tuple[int, ...]) -> tuple[dict[int, int], float]:
        """Guess ``layer``'s experts (a replayed trace's real guesses, made from the previous layer's hidden state;
        else each routed expert right with prefetch_accuracy, otherwise a random one) and load each guess not cached,
        once; returns (expert -> load job for every guess the layer routes, bytes read, wasted or not)."""
        m, cfg = self.ctx.model, self.config
        routed = self._routed(step, layer)
        if self.replay is not None and self.replay.guesses is not None:  # the trace's real guesses
            named = self.replay.guesses[self._replayed[(step.index, layer)], layer].ravel()
            guesses = sorted({int(e) for e in named if e >= 0})
        else:
            guesses = [e if self.rng.random() < cfg.prefetch_accuracy else int(self.rng.integers(m.n_experts))
                       for e in sorted(routed)]  # fmt: skip
        issued: dict[int, int] = {}
        for guess in guesses:
            if guess not in self.cache[layer] and guess not in issued:
                issued[guess] = self._load(g, layer, guess, after)
        useful = {e: job for e, job in issued.items() if e in routed}
        return useful, len(issued) * self.expert_bytes

    def kv_tokens_held(self, tokens: int) -> float:
        return float(tokens)

    def step_stats(self) -> dict[str, float]:
        return self._stats
