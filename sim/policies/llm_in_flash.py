"""The "LLM in a Flash" policy (Alizadeh et al. 2024): predictor + sliding window + bundling + memory management.

Per decode step t, vectorised over layers:

1. the predictor marks neurons (:mod:`sim.lif.masks`: oracle, none, trained, statistical), a packed set [L, n];
2. the sliding window (:mod:`sim.lif.window`, last ``window_k`` tokens) says which are missing; their
   ``layout.neuron_extents`` are read from flash (the experiment's ``layout``: layer_major = separate up / down
   rows, bundled = one row-column bundle per neuron, coactivation = a double bundle bringing the closest friend,
   which then stays resident too);
3. memory management (:mod:`sim.lif.memmgmt`) deletes evicted rows by moving the last row into the hole and
   appends loaded ones; the bytes copied are charged at the DRAM copy bandwidth. ``memory_management: false``
   models the naive alternative: the resident matrix is rebuilt (copied whole) every token;
4. compute: attention (dense), the predictor's low-rank matmuls, and the FFN either densely over the
   preallocated matrix's resident rows (``ffn_compute: resident``) or gathered over the predicted neurons
   (``active``).

Tenants (setup; CapacityError if over the budget): embeddings (``embeddings: input_flash``: an untied input table
stays on flash and each token's row is read before layer 0; ``flash``: the LM head is read with the last layer every
decode step too), attention and the predictor in the placement's
``weights`` memory; the per-layer preallocated FFN matrices in its ``window`` memory, sized by a dry run of the
window over the first ``capacity_tokens`` decode steps (the mask stream keeps those steps' predictions, so the run
replays them instead of predicting twice); each token the matrices report the rows they hold (``Memory.occupy``:
the summary's <memory>_used_GB vs <memory>_GB). ``overlap``: layer l+1's reads are issued when layer l's compute
starts, and a parallel-attention model (Falcon, Phi-2) computes a layer's attention while its FFN rows are read (the
paper's Table 3 sums I/O and compute, i.e. no overlap, the default).

One request at a time (``batch: 1``, the paper's setting): decode step t of the request is source token t (several
requests run one after another, each reading the source from token 0, the window kept from one to the next). A
prefill step reads every FFN neuron of each layer (a prompt's tokens together activate nearly all of them) and
computes densely; the window starts empty at the first decode step.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from sim import points
from sim.cache import LFUCache, LRUCache, RowCache
from sim.config.base import StrictModel
from sim.devices.processor import Op
from sim.engine.graph import Graph
from sim.engine.layers import LayerPlan, Pipeline
from sim.engine.requests import Step
from sim.errors import CapacityError, ConfigError
from sim.layout import CoactivationLayout, coalesce
from sim.lif import bits
from sim.lif.masks import MaskStream, TokenMasks
from sim.lif.memmgmt import NeuronMatrix
from sim.lif.predictor import LowRankPredictor, TrainConfig, predictor_weights
from sim.lif.statistical import StatisticalPredictor
from sim.lif.window import SlidingWindow
from sim.models.profile import dtype_bytes
from sim.policies.base import Held, RunContext
from sim.policies.baselines import (
    EMBEDDINGS_HELP,
    Embeddings,
    attention_beside,
    embedding_bytes_held,
    input_row_extents,
    lm_head_extents,
    placement_transfers,
    reads_input_rows,
)
from sim.policies.ops import StepOps
from sim.units import format_bytes

MASK_STORE_BYTES = 64e6  # predicted masks of a run up to this size are stored on disk (sim.points.derived_arrays;
# computing them holds them twice: a 256-token OPT-6.7B run's are 16 MB)


class LlmInFlashConfig(StrictModel):
    name: Literal["llm_in_flash"]
    predictor: Literal["none", "oracle", "trained", "statistical"] = "statistical"
    rank: int = Field(128, ge=1, description="predictor rank of the first layers (paper, OPT: 128)")
    rank_last: int = Field(1024, ge=1, description="rank of the last `last_layers` layers (paper, OPT: 1024)")
    last_layers: int = Field(4, ge=0)
    recall: float = Field(0.95, gt=0, le=1, description="statistical recall / trained target recall")
    fp_rate: float = Field(0.07, ge=0, le=1, description="statistical: false positives / inactive neurons")
    fp_weighting: Literal["uniform", "frequency"] = "frequency"
    train_tokens: int = Field(1024, ge=16, description="trained: source tokens to train on (decode starts after)")
    train_epochs: int = Field(30, ge=1)
    predictor_path: str | None = Field(
        None,
        description="trained: load this predictor file (python -m sim predictor train) instead of training on "
        "the source; `recall` picks its stored threshold row; decode starts at source token 0",
    )
    window_k: int = Field(
        5,
        ge=0,
        le=65535,
        description="tokens the neuron window spans; 0 = no reuse: every token reads all its "
        "predicted neurons into a scratch buffer and keeps none (Table 2 '+predictor' row)",
    )
    cache: Literal["window", "lfu", "lru"] = Field(
        "window",
        description="which row cache keeps neurons in DRAM (sim.cache): window = the last window_k tokens' neurons "
        "(the paper); lfu = ActiveFlow's contextual cache, the most used neurons so far; lru = the most recently "
        "used. lfu and lru get as many rows as the window would (window_rows) and read the neurons they do not "
        "admit for the token only",
    )
    memory_management: bool = True
    coalesce_reads: bool = Field(
        True,
        description="merge adjacent neuron rows into one flash request; false: one request per row "
        "(separate preads, as LLM in a Flash's reader issues them)",
    )
    memmgmt_appends: bool = Field(False, description="also charge appended rows as DRAM copies")
    ffn_compute: Literal["resident", "active"] = "active"
    overlap: bool = False
    capacity_tokens: int = Field(256, ge=1, description="decode steps of the dry run sizing the FFN matrices")
    embeddings: Embeddings = Field("dram", description=EMBEDDINGS_HELP)
    window_rows: Literal["peak", "budget"] = Field(
        "peak",
        description="peak: the FFN matrices hold the dry run's peak (the budget must admit it); budget: they fill "
        "what the budget leaves (at most the peak), shared in proportion to the peaks. Either way a layer whose "
        "window outgrows its rows (past the dry run, or over the budget) forgets its oldest tokens' neurons (the "
        "window shortens there; counted in window_shortened_layers and said in the run's notes)",
    )


class LlmInFlash:
    def __init__(self, config: LlmInFlashConfig):
        self.config = config
        self._stats: dict[str, float] = {}
        self._last_token: TokenMasks | None = None  # the last planned decode step's masks (None: a prefill)
        self._totals = dict.fromkeys(("steps", "predicted", "read", "resident"), 0.0)  # over decode steps

    # ---- setup ----------------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        cfg, model = self.config, ctx.model
        if ctx.activations is None and cfg.predictor != "none":
            raise ConfigError("experiment", "policy.predictor", "needs an activation trace", cfg.predictor)
        if ctx.max_batch != 1:
            reason = "models one request at a time, as the paper does (set batch: 1)"
            raise ConfigError("experiment", "batch", f"llm_in_flash {reason}", ctx.max_batch)
        self.ctx, self.n_layers, self.n = ctx, model.n_layers, model.n_experts * model.d_ff
        self.ranks = np.where(np.arange(self.n_layers) >= self.n_layers - cfg.last_layers, cfg.rank_last, cfg.rank)
        self.stream = self._mask_stream(ctx)
        self._predictor_weights = predictor_weights(model.d_model, self.n, self.ranks)  # [L] (after the stream:
        # a trained or loaded predictor sets the ranks)
        self.layout = ctx.layout
        self.ops = StepOps(model, ctx.dtype, ctx.kv_dtype)
        self.pipeline = Pipeline(ctx.placement)
        every = np.arange(self.n)
        self._all_neurons = [coalesce(self.layout.neuron_extents(l, every)) for l in range(self.n_layers)]
        self.neuron_bytes = model.neuron_bytes(ctx.dtype)
        self.reuse = cfg.window_k > 0
        self._allocate_resident(ctx)
        if self.reuse:
            rows = self._rows(ctx, *self._dry_run())
            self.matrix = NeuronMatrix(self.n, rows, self.neuron_bytes)
            self.window = self._cache(rows)
            ctx.devices.memories[ctx.placement.window].allocate("ffn_window", self.matrix.allocated_bytes)
        self._static_ops = self._layer_static_ops(ctx)

    def _mask_stream(self, ctx: RunContext) -> MaskStream:
        cfg, src = self.config, ctx.activations
        seed = int(ctx.rng.integers(2**62))
        shape = (self.n_layers, self.n)
        cache = cfg.capacity_tokens if cfg.window_k > 0 else 0  # the dry run's steps, replayed by the real run
        steps = {"cache_tokens": cache, "n_steps": max(cache, ctx.decode_tokens)}
        if cfg.predictor == "trained" and cfg.predictor_path is not None:
            self.predictor = self._load_predictor(ctx)
            self.ranks = self.predictor.ranks
            return MaskStream(src, "trained", 0, self.predictor, shape=shape, **steps)
        if cfg.predictor == "trained":
            self.predictor = self._train(src, np.random.default_rng(seed))
            self.ranks = self.predictor.ranks
            return MaskStream(src, "trained", cfg.train_tokens, self.predictor, shape=shape, **steps)
        self.predictor = StatisticalPredictor(cfg.recall, cfg.fp_rate) if cfg.predictor == "statistical" else None
        key = self._stream_key(src, seed, steps["n_steps"])
        if key is None:
            return self._computed_stream(src, seed, shape, steps)
        n_steps = steps["n_steps"]
        MaskStream(src, "oracle", 0, shape=shape, n_steps=n_steps)  # the source must hold the steps (one-line error)
        arrays = points.derived_arrays(
            "masks", key, lambda: self._computed_stream(src, seed, shape, steps, fill=n_steps).cached_arrays()
        )  # a rerun, or the next sweep point with the same activations and predictor, reads them back
        return MaskStream.replay(arrays, self.n)

    def _computed_stream(self, src, seed: int, shape: tuple, steps: dict, fill: int = 0) -> MaskStream:
        """The stream of an oracle, dense or statistical predictor, computed from the source (``fill``: its first
        steps computed now)."""
        cfg = self.config
        if cfg.predictor == "statistical":
            weights = None
            if cfg.fp_weighting == "frequency":
                n_freq = min(cfg.capacity_tokens, src.n_tokens)
                weights = src.active_counts(0, n_freq).astype(np.float32) / n_freq + 1e-3  # [L, n] frequency
            self.predictor = StatisticalPredictor(cfg.recall, cfg.fp_rate, weights)
            stream = MaskStream(src, "statistical", 0, self.predictor, seed=seed, shape=shape, **steps)
        else:
            stream = MaskStream(src, cfg.predictor, 0, shape=shape, **steps)
        if fill:
            stream.fill(fill)
        return stream

    def _stream_key(self, src, seed: int, n_steps: int) -> str | None:
        """What the predicted masks of a run depend on, when they are worth storing (None: compute them)."""
        cfg = self.config
        fingerprint = src.fingerprint() if src is not None else None
        stored_bytes = n_steps * self.n_layers * bits.n_words(self.n) * 8
        if cfg.predictor not in ("oracle", "statistical") or fingerprint is None or stored_bytes > MASK_STORE_BYTES:
            return None
        knobs = (cfg.predictor, cfg.recall, cfg.fp_rate, cfg.fp_weighting, cfg.capacity_tokens, seed, n_steps)
        return f"{fingerprint}|{self.n_layers}x{self.n}|{knobs}"

    def _train(self, src, rng: np.random.Generator) -> LowRankPredictor:
        cfg, n = self.config, self.config.train_tokens
        if src.hidden(0, 1) is None:  # e.g. a projection: no hidden states of the target's width exist
            reason = f"{src.describe()} has no hidden states to train on (use predictor: statistical)"
            raise ConfigError("experiment", "policy.predictor", reason, "trained")
        if n >= src.n_tokens:
            reason = f"must be below the source's {src.n_tokens} tokens"
            raise ConfigError("experiment", "policy.train_tokens", reason, n)
        x, y = src.hidden(0, n), np.asarray(src.masks(0, n), bool)  # [T, L, d], [T, L, n]
        cfgs = [TrainConfig(rank=int(r), epochs=cfg.train_epochs, target_recall=cfg.recall) for r in self.ranks]
        return LowRankPredictor.train(x, y, cfgs, rng)

    def _load_predictor(self, ctx: RunContext) -> LowRankPredictor:
        from pathlib import Path

        from sim.config.profiles import REPO_ROOT
        from sim.lif.predictor import load

        path = Path(self.config.predictor_path)
        path = path if path.is_absolute() or path.is_file() else REPO_ROOT / path
        model = ctx.model
        return load(path, model.n_layers, model.d_model, self.n, self.config.recall)[0]

    def _cache(self, rows: np.ndarray) -> RowCache:
        """The run's row cache with ``rows`` [L] rows per layer (the window forgets what outgrows them)."""
        cfg = self.config
        if cfg.cache == "window":
            return SlidingWindow(self.n_layers, self.n, cfg.window_k, rows)
        if isinstance(self.layout, CoactivationLayout):
            raise ConfigError("experiment", "policy.cache", "a co-activation layout needs the window", cfg.cache)
        return (LFUCache if cfg.cache == "lfu" else LRUCache)(self.n_layers, self.n, rows)

    def _dry_run(self) -> tuple[np.ndarray, np.ndarray]:
        """([L] peak resident neurons, [L] largest one-token set) over the first capacity_tokens steps (same
        predictions as the run, which replays them from the stream's cache)."""
        window = SlidingWindow(self.n_layers, self.n, self.config.window_k)
        peak = np.zeros(self.n_layers, np.int64)
        largest = np.zeros(self.n_layers, np.int64)
        for t in range(self.config.capacity_tokens):  # one vectorised step per token
            pred = self.stream.token(t).pred_bits
            step = window.step_bits(pred, self._friends_of(window, pred))
            peak = np.maximum(peak, step.resident_counts())
            largest = np.maximum(largest, bits.row_counts(pred))
        self.stream.reset()
        return peak, largest

    def _allocate_resident(self, ctx: RunContext) -> None:
        """Embeddings, attention and the predictor in the weights memory. (Without reuse the rows read land in a
        streaming buffer, not counted, like naive's; with it the window's matrices follow, :meth:`_rows`.)"""
        model, dtype = ctx.model, ctx.dtype
        weights = ctx.devices.memories[ctx.placement.weights]
        if self.config.embeddings != "flash":
            weights.allocate("embeddings", embedding_bytes_held(model, dtype, self.config.embeddings))
        self._input_rows = reads_input_rows(model, self.config.embeddings)
        self._lm_head = np.zeros((0, 2), np.int64)  # extents the last layer reads each decode step
        if self.config.embeddings == "flash":
            self._lm_head = coalesce(lm_head_extents(ctx))
        weights.allocate("attention", model.n_layers * model.attention_bytes_per_layer(dtype))
        if self.config.predictor in ("trained", "statistical"):
            weights.allocate("predictor", dtype_bytes(dtype, float(self._predictor_weights.sum())))
        self.resident_bytes = model.attention_bytes_per_layer(dtype)  # per layer, in the weights memory

    def _rows(self, ctx: RunContext, peak: np.ndarray, largest: np.ndarray) -> np.ndarray:
        """[L] rows of each layer's FFN matrix: the dry run's peak, or (``window_rows: budget``) what the budget
        leaves: every layer first gets room for 1.25 x its largest one-token set, the rest is shared in proportion
        to what the peaks need beyond that; never more than the peak."""
        if self.config.window_rows == "peak":
            return peak
        free_rows = int(ctx.devices.memories[ctx.placement.window].budget_free_bytes // self.neuron_bytes)
        if free_rows >= peak.sum():
            return peak
        base = np.minimum(np.ceil(1.25 * largest).astype(np.int64), peak)  # [L]
        if base.sum() > free_rows:
            need = format_bytes(float(base.sum()) * self.neuron_bytes)
            raise CapacityError(f"llm_in_flash: the budget leaves {format_bytes(free_rows * self.neuron_bytes)} for "
                                f"the FFN window; one token's neurons with headroom need {need}")  # fmt: skip
        extra = peak - base
        share = np.floor(extra * ((free_rows - base.sum()) / max(int(extra.sum()), 1))).astype(np.int64)
        return base + share

    # ---- per token --------------------------------------------------------------------------------------
    def _friends_of(self, window: SlidingWindow, pred_bits: np.ndarray, needed: np.ndarray | None = None):
        """Co-activation: the friends that arrive with the bundles of the predicted neurons missing from the window,
        packed [L, nw] (else None). ``needed``: those neurons' sorted flat indices if the caller has them."""
        if not isinstance(self.layout, CoactivationLayout):
            return None
        if needed is None:
            needed = bits.flat_indices(window.missing_bits(pred_bits), self.n)
        layer, neuron = np.divmod(needed, self.n)
        return bits.from_flat(layer * self.n + self.layout.friends[layer, neuron], self.n_layers, self.n)

    def plan(self, step: Step) -> Graph:
        if step.phase == "prefill":
            return self._prefill(step)
        return self.pipeline.graph(self.decode_plans(step))

    def decode_plans(self, step: Step) -> list[LayerPlan]:
        """The layer plans of a decode step (step t of the request: source token t)."""
        t = step.positions[0]
        if t == 0 and self.stream.position > 0:  # the next request of a run: it reads the source from token 0 again
            self.stream.reset()
        tok = self._last_token = self.stream.token(t)
        if self.reuse:
            needed, copied, n_ffn = self._window_step(t, tok)
        else:  # every predicted neuron is read, computed from the buffer it lands in, and dropped
            needed, copied, n_ffn = tok.pred_flat(), np.zeros(self.n_layers), tok.n_pred
            self._record(tok, len(needed), len(needed), None, copied)
        extents = self.layout.neuron_extents_all(needed)  # one pass for all layers, layer-major
        if self._lm_head.shape[0]:  # the LM head from flash, with the last layer's neurons
            extents[-1] = np.concatenate([self._lm_head, extents[-1]])  # embeddings lie first on flash: in order
        if self._input_rows:  # the tokens' input rows, with layer 0's neurons
            extents[0] = np.concatenate([input_row_extents(self.ctx, step), extents[0]])
        attention = self.ops.attention(step)  # the same for every layer
        copied, n_ffn = copied.tolist(), n_ffn.tolist()
        return [
            self._layer_plan(step, l, extents[l], float(copied[l]), int(n_ffn[l]), attention)
            for l in range(self.n_layers)
        ]

    def _prefill(self, step: Step) -> Graph:
        """Every FFN neuron of each layer read (into a streaming buffer) and computed densely for the chunk."""
        ctx, cfg, n = self.ctx, self.config, step.n_tokens
        self._last_token = None
        dense = self.ops.attention(step) + self.ops.ffn(self.n, n)
        plans = [
            LayerPlan(
                layer=l,
                issue_at=l - 1 if cfg.overlap else l,
                preload=self._all_neurons[l],
                transfers=placement_transfers(ctx, step, l, self.resident_bytes),
                ops=dense,
                processor=ctx.processor,
            )
            for l in range(self.n_layers)
        ]
        if self._input_rows:  # the prompt's input rows, with layer 0's neurons
            plans[0].preload = np.concatenate([input_row_extents(ctx, step), plans[0].preload])
        self._stats = {}
        return self.pipeline.graph(plans)

    def _window_step(self, t: int, tok: TokenMasks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window + memory management: (flat indices ``l * n + i`` of the neurons to read [N] ascending, bytes
        copied [L], FFN neurons computed [L])."""
        try:
            if isinstance(self.layout, CoactivationLayout):  # what is read: the missing predicted neurons, whose
                needed = bits.flat_indices(self.window.missing_bits(tok.pred_bits), self.n)  # bundles bring friends
                step = self.window.step_bits(tok.pred_bits, self._friends_of(self.window, tok.pred_bits, needed))
                load = step.load_flat()
            else:  # what is read: the window stores all of it, a counter cache what it admits
                step = self.window.step_bits(tok.pred_bits)
                load = step.load_flat()  # [N] one extraction, shared by the matrix and the plans
                needed = load if step.read_bits is None else step.read_flat()
            mem = self.matrix.step_flat(load, step.evict_flat())
        except ValueError as err:
            budget = self.config.window_rows == "budget"
            fix = "raise the budget" if budget else f"raise policy.capacity_tokens above {t}"
            raise CapacityError(f"llm_in_flash: {err} ({fix})") from None
        window = self.ctx.devices.memories[self.ctx.placement.window]
        window.occupy("ffn_window", float(mem.n_rows.sum()) * self.neuron_bytes)
        copied = mem.copied_bytes if self.config.memory_management else mem.n_rows * self.neuron_bytes
        if self.config.memmgmt_appends:
            copied = copied + mem.appended_bytes
        n_ffn = tok.n_pred if self.config.ffn_compute == "active" else mem.n_rows  # [L]
        if self.config.ffn_compute == "resident" and len(needed) != len(load):  # read, not admitted: computed too
            n_ffn = n_ffn + np.bincount(np.setdiff1d(needed, load) // self.n, minlength=self.n_layers)
        self._record(tok, len(needed), len(load), mem, copied)
        return needed, copied, n_ffn

    def _layer_static_ops(self, ctx: RunContext) -> list[tuple[Op, ...]]:
        """Per layer, the predictor's low-rank matmuls (the same every decode step)."""
        static = []
        for layer in range(self.n_layers):
            before: tuple[Op, ...] = ()
            if self.predictor is not None:
                w = float(self._predictor_weights[layer])
                before = (Op("predictor", 2.0 * w, dtype_bytes(ctx.dtype, w), ctx.dtype),)
            static.append(before)
        return static

    def _layer_plan(
        self, step: Step, layer: int, preload: np.ndarray, copied: float, n_ffn: int, attention: tuple[Op, ...]
    ) -> LayerPlan:
        """preload: the extents of the layer's neurons to read; ops: attention, predictor, FFN, (LM head)."""
        ctx, cfg = self.ctx, self.config
        ffn = self.ops.ffn(n_ffn, 1, gathered=cfg.ffn_compute == "active")
        after = self.ops.lm_head(step) if layer == self.n_layers - 1 else ()
        plan = LayerPlan(
            layer=layer,
            issue_at=layer - 1 if cfg.overlap else layer,
            preload=preload,
            transfers=placement_transfers(ctx, step, layer, self.resident_bytes),
            memmgmt_bytes=copied,
            coalesce=cfg.coalesce_reads,
            ops=attention + self._static_ops[layer] + ffn + after,
            processor=ctx.processor,
        )
        if cfg.overlap and ctx.model.parallel_attention and attention_beside(plan, self._input_rows):
            plan.ops, plan.concurrent = self._static_ops[layer] + ffn + after, attention  # needs none of the rows
        return plan

    def _record(self, tok: TokenMasks, n_read: int, n_loaded: int, mem, copied) -> None:
        resident = float(mem.n_rows.sum()) if mem is not None else 0.0
        totals = self._totals
        totals["steps"] += 1
        totals["predicted"] += float(tok.n_pred.sum())
        totals["read"] += float(n_read)
        totals["resident"] += resident
        self._stats = {
            "neurons_true": float(tok.n_true),
            "neurons_predicted": float(tok.n_pred.sum()),
            "neurons_read": float(n_read),
            "neurons_loaded": float(n_loaded),
            "neurons_resident": resident,
            "predictor_fn": tok.n_fn / tok.n_true if tok.n_true else 0.0,
            "memmgmt_rows_moved": float(mem.moves.sum()) if mem is not None else 0.0,
            "memmgmt_bytes": float(copied.sum()),
        }
        if self.reuse:  # (layer, step) pairs, so far, whose window was cut to fit its rows
            self._stats["window_shortened_layers"] = float(self.window.shortened)

    def kv_tokens_held(self, tokens: int) -> float:
        return float(tokens)

    def run_notes(self, summary: dict[str, Any]) -> list[str]:
        return self._window_vs_statistics() + self._shortened_note()

    def _window_vs_statistics(self) -> list[str]:
        """The FFN shares the run predicted, read fresh and held per token, beside the statistics' (a check of
        the projection's window reuse against a published or fitted number)."""
        stats, t = self.ctx.statistics, self._totals
        if stats is None or stats.window is None or not self.reuse or not t["steps"]:
            return []
        share = lambda key: t[key] / t["steps"] / (self.n_layers * self.n)  # noqa: E731
        w = stats.window
        held = f", {w.held_fraction:.1%} held" if w.held_fraction is not None else ""
        return [
            f"llm_in_flash window (k={self.config.window_k}): per token {share('predicted'):.1%} of the FFN "
            f"predicted, {share('read'):.2%} read fresh, {share('resident'):.1%} held; {stats.name} "
            f"({stats.kind}) gives {w.fresh_fraction:.2%} fresh{held} at k={w.k}"
            + (" of the truly active neurons (no predictor's false positives)" if w.masks == "true" else "")
        ]

    def _shortened_note(self) -> list[str]:
        if not self.reuse or self.window.shortened == 0:
            return []
        sized = (
            "what the budget leaves"
            if self.config.window_rows == "budget"
            else (f"the peak of its first {self.config.capacity_tokens} steps (policy.capacity_tokens)")
        )
        return [
            f"llm_in_flash: the window outgrew its rows (sized at {sized}) {self.window.shortened} times (layer x "
            "step) and forgot its oldest tokens' neurons there: window_shortened_layers in tokens.parquet"
        ]

    # ---- Executable (sim.real.executor) ----
    def held(self) -> Held:
        holds_table = self.config.embeddings != "flash" and not self._input_rows
        return Held(holds_table, True, [np.zeros(0, np.int64)] * self.n_layers)

    def ffn_neurons(self) -> list[np.ndarray] | None:
        tok = self._last_token
        if tok is None:  # prefill: every neuron, densely
            return None
        if self.config.ffn_compute == "resident":
            return [np.sort(row[row >= 0]) for row in self.matrix.neuron_at]
        flat = tok.pred_flat()  # [p] ascending l * n + i
        bounds = np.searchsorted(flat, np.arange(self.n_layers + 1) * self.n)
        return [flat[bounds[l] : bounds[l + 1]] - l * self.n for l in range(self.n_layers)]

    def window_matrix(self) -> tuple[np.ndarray, np.ndarray] | None:
        return (self.matrix.capacity, self.matrix.neuron_at) if self.reuse else None

    def step_stats(self) -> dict[str, float]:
        return dict(self._stats)
