"""``kv_offload``: every weight resident with the processor (a GPU), the KV cache wherever the placement puts it,
and attention through a KV policy on either processor -- the settings MagicPIG (arXiv 2410.16179) compares.

Per decode layer the step's graph is

    qkv (processor) -> attention -> o_proj + FFN (processor)      (the LM head after the last layer)

and the attention part, for the keys the KV policy reads (:mod:`sim.kv.selection`; per request of T cached keys):

- ``attention_on`` = the run's processor: the keys read are fetched over the link first when the placement keeps
  the KV cache in another memory (``placement.kv: dram`` on a GPU box: the "fetch over PCIe" baseline), then the
  processor attends;
- ``attention_on`` = another processor (``cpu``): q crosses to it, it attends over the KV cache in its own memory,
  the output crosses back. For ``magicpig`` the processor also computes the K x L projections of q (their codes
  cross with q), the sinks + window stay with the processor (attended there in parallel), and the CPU reads, per
  head and table, the bucket of q (T / 2^K index entries) before gathering the sampled keys.

Keys read per request of T cached keys: full T; streaming min(T, sinks + window); h2o / topk ceil(budget T);
quest whole pages up to budget T plus every page's min/max key (2 keys per page); magicpig sinks + window exactly
plus ``sampled_fraction`` of the rest. ``sampled_fraction`` defaults to the mean of u(theta) over the real
SmolLM2 (q, k) pairs of ``traces/smollm2-135m-qk.trace`` (:mod:`sim.kv.stats`; summary column
``kv_sampled_fraction``, said in the step rows): a statistic of a real model applied to the timed shape.

``speculate`` (TriForce's self-speculation, one model): a decode step is a round -- ``gamma`` draft passes, each
one token attending through the ``draft`` KV policy (weights read every pass), then one verifying pass over
gamma + 1 tokens attending through ``attention`` (the full cache, read once) -- and each request gets its accepted
drafts plus one token (``accepted`` per round, or from a per-token ``acceptance_rate``). The summary's
``tokens_per_step`` says how many; ``total_ms`` is then a round's latency and ``tokens_per_s`` counts tokens.

``dense_layers`` attend fully on the processor (MagicPIG keeps layers 0 and 16 dense; their KV stays with it).
MagicPIG's hash tables are a tenant of the KV memory: (layers - dense) x kv_heads x L x context x index bytes
per request (index bytes 2 below 64K tokens, 4 above; papers.md). Prefill chunks attend fully on the processor and
their new K/V cross to the KV memory.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from sim.config.base import StrictModel
from sim.config.profiles import REPO_ROOT
from sim.devices.processor import Op
from sim.engine.graph import Graph
from sim.engine.requests import Step
from sim.errors import ConfigError
from sim.kv.selection import Full, KVPolicy
from sim.kv.stats import mean_sample_probability
from sim.models.profile import dtype_bytes
from sim.policies.base import RunContext
from sim.policies.ops import StepOps, attended_positions

QK_TRACE = REPO_ROOT / "traces" / "smollm2-135m-qk.trace"


class Speculation(StrictModel):
    """Self-speculative decoding (TriForce's target level): the same model drafts ``gamma`` tokens attending through
    the ``draft`` KV policy, then verifies all of them in one pass over the full KV cache."""

    gamma: int = Field(6, ge=1, le=32, description="tokens drafted per round (TriForce: gamma2 = 6)")
    draft: KVPolicy = Field(description="the sparse KV the draft passes attend through (streaming, h2o, topk, quest)")
    accepted: float | None = Field(None, ge=0, description="mean drafted tokens accepted per round (kind: kv_accuracy)")
    acceptance_rate: float | None = Field(
        None, ge=0, le=1, description="per-token acceptance a; a round then accepts a + a^2 + ... + a^gamma"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Speculation:
        if (self.accepted is None) == (self.acceptance_rate is None):
            raise ValueError("give exactly one of accepted (per round) or acceptance_rate (per token)")
        if self.accepted is not None and self.accepted > self.gamma:
            raise ValueError(f"accepted {self.accepted} exceeds gamma {self.gamma}")
        if self.draft.name in ("full", "magicpig", "kivi"):
            raise ValueError(f"draft: {self.draft.name} -- the draft attends through streaming, h2o, topk or quest")
        return self

    @property
    def accepted_per_round(self) -> float:
        if self.accepted is not None:
            return self.accepted
        a = self.acceptance_rate
        return float(sum(a**i for i in range(1, self.gamma + 1)))


class KVOffloadConfig(StrictModel):
    name: Literal["kv_offload"]
    attention: KVPolicy = Field(default_factory=lambda: Full(name="full"), description="which keys each query reads")
    attention_on: str | None = Field(None, description="processor that attends over the KV cache (default: the run's)")
    dense_layers: list[int] = Field([], description="layers with full attention on the run's processor")
    sampled_fraction: float | None = Field(
        None, gt=0, le=1, description="magicpig: share of keys outside sinks + window sampled (default: from the trace)"
    )
    qk_trace: str = Field(str(QK_TRACE.relative_to(REPO_ROOT)), description="trace with q and k for the default")
    speculate: Speculation | None = Field(None, description="self-speculative decoding (a round per decode step)")


class KVOffload:
    def __init__(self, config: KVOffloadConfig):
        self.config = config

    def setup(self, ctx: RunContext) -> None:
        cfg, model, dtype = self.config, ctx.model, ctx.dtype
        self.ctx, self.ops = ctx, StepOps(model, dtype, ctx.kv_dtype)
        self.processor = ctx.processor
        self.attention_on = cfg.attention_on or self.processor
        if cfg.attention.name == "kivi":
            reason = "KIVI changes the KV cache's bytes, not the keys read: time it with kv_dtype (e.g. q4_0)"
            raise ConfigError("experiment", "policy.attention.name", reason, "kivi")
        if self.attention_on not in ctx.hardware.processors:
            known = ", ".join(ctx.hardware.processors)
            raise ConfigError(
                "experiment", "policy.attention_on", f"no such processor; known: {known}", cfg.attention_on
            )
        bad = [l for l in cfg.dense_layers if not 0 <= l < model.n_layers]
        if bad:
            raise ConfigError("experiment", "policy.dense_layers", f"layers are 0..{model.n_layers - 1}", bad[0])
        self.dense = set(cfg.dense_layers)
        self.policy = cfg.attention
        self.draft = cfg.speculate.draft if cfg.speculate else None
        self._carry: dict[int, float] = {}  # request -> fractional tokens owed by its speculative rounds so far
        self.sampled_fraction = 0.0
        if self.policy.name == "magicpig":
            self.sampled_fraction = cfg.sampled_fraction or self._trace_fraction(ctx)
        weights = ctx.devices.memories[ctx.placement.weights]
        weights.allocate("embeddings", model.embedding_bytes(dtype))
        weights.allocate("attention", model.n_layers * model.attention_bytes_per_layer(dtype))
        weights.allocate("ffn", model.n_layers * model.ffn_bytes_per_layer(dtype))
        if self.policy.name == "magicpig":
            ctx.devices.memories[ctx.placement.kv].allocate("hash_tables", self._table_bytes(ctx), budgeted=False)
        self.here = ctx.placement.memory_of(self.processor)
        self.there = ctx.placement.memory_of(self.attention_on)

    def _trace_fraction(self, ctx: RunContext) -> float:
        p = self.policy
        path = Path(self.config.qk_trace)
        path = path if path.is_absolute() else REPO_ROOT / path
        return mean_sample_probability(path, p.K, p.L, p.sinks, p.window)

    def _table_bytes(self, ctx: RunContext) -> float:
        m, T = ctx.model, ctx.max_context_tokens
        index = 2 if T < 65536 else 4
        return (m.n_layers - len(self.dense)) * m.n_kv_heads * self.policy.L * T * index * ctx.max_batch

    # ---- keys read ------------------------------------------------------------------------------------
    def keys(self, T: int) -> tuple[float, float]:
        """(keys read on the attending processor, keys kept with the run's processor) for T cached keys."""
        p = self.policy
        if p.name == "full":
            return float(T), 0.0
        if p.name == "streaming":
            return float(min(T, p.sinks + p.window)), 0.0
        if p.name == "topk":
            return float(math.ceil(p.budget * T)), 0.0
        if p.name == "h2o":  # the budget includes the recent tokens (sim/kv/selection.py)
            return float(min(T, max(math.ceil(p.budget * T), p.recent))), 0.0
        if p.name == "quest":
            pages = math.ceil(T / p.page_tokens)
            chosen = min(pages, max(1, math.ceil(p.budget * T / p.page_tokens)))
            return float(min(T, chosen * p.page_tokens) + pages), 0.0  # + each page's min and max key (K-sized)
        exact = float(min(T, p.sinks + p.window))  # magicpig: sinks + window with the processor
        return self.sampled_fraction * max(T - exact, 0.0), exact

    # ---- per step -------------------------------------------------------------------------------------
    def plan(self, step: Step) -> Graph:
        spec, g = self.config.speculate, Graph()
        if spec is None or step.phase != "decode":
            self._layers(g, step, ())
            return g
        verify_with, done = self.policy, ()
        self.policy = self.draft  # the draft passes read the draft's keys, one token a pass
        for i in range(spec.gamma):
            done = self._layers(g, replace(step, kv_tokens=tuple(k + i for k in step.kv_tokens)), done, f"draft {i} ")
        self.policy = verify_with  # one pass over the full cache verifies every drafted token and adds one
        self._layers(g, replace(step, new_tokens=(spec.gamma + 1,) * step.batch), done, "verify ")
        return g

    def emitted(self, step: Step) -> tuple[int, ...]:
        """Tokens each request gets from a round: its accepted drafts and the verifier's own; the mean accepted
        per round is fractional, so each request carries the remainder to its next round."""
        spec = self.config.speculate
        if spec is None:
            return (1,) * step.batch
        out = []
        for rid in step.requests:
            due = self._carry.get(rid, 0.0) + spec.accepted_per_round + 1.0
            n = min(int(due), spec.gamma + 1)
            self._carry[rid] = due - n
            out.append(n)
        return tuple(out)

    def _layers(self, g: Graph, step: Step, done: tuple[int, ...], prefix: str = "") -> tuple[int, ...]:
        """Every layer of one forward pass over ``step``'s tokens, after ``done``; returns the last job."""
        n_layers = self.ctx.model.n_layers
        ffn = self.ops.ffn(self.ctx.model.d_ff * self.ctx.model.experts_top_k, step.n_tokens)
        for layer in range(n_layers):
            qkv = g.run(self.processor, self.ops.qkv(step), done, tag=f"L{layer} qkv")
            if step.phase == "prefill" or layer in self.dense or self.policy.name == "full":
                att = self._full(g, step, layer, qkv)
            else:
                att = self._sparse(g, step, layer, qkv)
            tail = self.ops.o_proj(step) + ffn + (self.ops.lm_head(step) if layer == n_layers - 1 else ())
            done = (g.run(self.processor, tail, att, tag=f"{prefix}L{layer} o+ffn"),)
        return done

    def _full(self, g: Graph, step: Step, layer: int, after: int) -> tuple[int, ...]:
        """Full attention: on the processor for prefill and dense layers, else where ``attention_on`` says."""
        kv, keys = self.ctx.placement.kv, float(sum(step.kv_tokens))
        core = self.ops.core(keys, attended_positions(step))
        where = self.processor if step.phase == "prefill" or layer in self.dense else self.attention_on
        if where != self.processor:
            return self._remote(g, step, layer, after, core, extra=())
        deps = (after,)
        if kv != self.here and keys > 0 and layer not in self.dense:  # fetch the KV cache over the link
            deps = (g.transfer(kv, self.here, self._kv_bytes(keys), deps, tag=f"L{layer} kv fetch"),)
        att = g.run(self.processor, core, deps, tag=f"L{layer} attention")
        if step.phase == "prefill" and kv != self.here and layer not in self.dense:  # new K/V to the KV memory
            return (att, g.transfer(self.here, kv, self._kv_bytes(step.n_tokens), (after,), tag=f"L{layer} kv store"))
        return (att,)

    def _sparse(self, g: Graph, step: Step, layer: int, after: int) -> tuple[int, ...]:
        read = [self.keys(T) for T in step.kv_tokens]
        remote, local = sum(r for r, _ in read), sum(e for _, e in read)
        core = self.ops.core(remote, remote, name=f"attention ({self.policy.name})")
        jobs: tuple[int, ...] = ()
        if local:  # magicpig: sinks + window with the processor, beside the sampled part
            jobs += (g.run(self.processor, self.ops.core(local, local, name="attention (sinks+window)"), (after,)),)
        if self.attention_on != self.processor:
            return jobs + self._remote(g, step, layer, after, core, extra=self._lsh(g, step, layer, after))
        deps = (after,)
        if self.ctx.placement.kv != self.here and remote > 0:
            deps = (
                g.transfer(self.ctx.placement.kv, self.here, self._kv_bytes(remote), deps, tag=f"L{layer} kv fetch"),
            )
        return jobs + (g.run(self.processor, core, deps, tag=f"L{layer} attention"),)

    def _lsh(self, g: Graph, step: Step, layer: int, after: int) -> tuple[int, ...]:
        """MagicPIG's K x L projections of q on the processor (before q leaves)."""
        if self.policy.name != "magicpig":
            return ()
        m, p = self.ctx.model, self.policy
        flops = 2.0 * step.n_tokens * m.n_heads * m.head_dim * p.K * p.L
        op = Op("lsh_proj", flops, dtype_bytes(self.ctx.dtype, m.head_dim * p.K * p.L), self.ctx.dtype)
        return (g.run(self.processor, (op,), (after,), tag=f"L{layer} lsh"),)

    def _remote(self, g: Graph, step: Step, layer: int, after: int, core, extra: tuple[int, ...]) -> tuple[int, ...]:
        """q (and its hash codes) to the attending processor, attention there, the output back."""
        m = self.ctx.model
        q_bytes = dtype_bytes("fp16", step.n_tokens * m.n_heads * m.head_dim)
        codes = step.n_tokens * m.n_heads * self.policy.L * 2 if self.policy.name == "magicpig" else 0
        sent = g.transfer(self.here, self.there, q_bytes + codes, (after, *extra), tag=f"L{layer} q")
        ops = core + self._probe(step)
        att = g.run(self.attention_on, ops, (sent,), tag=f"L{layer} attention")
        return (g.transfer(self.there, self.here, q_bytes, (att,), tag=f"L{layer} out"),)

    def _probe(self, step: Step) -> tuple:
        """MagicPIG: per head and table the bucket of q (T / 2^K entries of the table's index) read on the CPU."""
        if self.policy.name != "magicpig":
            return ()
        m, p = self.ctx.model, self.policy
        entries = sum(T / 2**p.K for T in step.kv_tokens) * m.n_heads * p.L
        index = 2 if self.ctx.max_context_tokens < 65536 else 4  # bytes per index entry, as the tables'
        return (Op("hash_probe", entries, entries * index, self.ctx.kv_dtype, gathered=True),)

    def _kv_bytes(self, keys: float) -> float:
        m = self.ctx.model
        return dtype_bytes(self.ctx.kv_dtype, 2 * keys * m.n_kv_heads * m.head_dim)

    def kv_tokens_held(self, tokens: int) -> float:
        """Streaming and H2O evict (their cache holds what they read); the others keep every token, since any may
        be read later (top-k, Quest and MagicPIG choose per query)."""
        p = self.policy
        if p.name == "streaming":
            return float(min(tokens, p.sinks + p.window))
        if p.name == "h2o":
            return float(min(tokens, max(math.ceil(p.budget * tokens), p.recent)))
        return float(tokens)

    def step_stats(self) -> dict[str, float]:
        return {"kv_sampled_fraction": self.sampled_fraction} if self.policy.name == "magicpig" else {}
