"""MoEfication of SmolLM2 (Zhang et al., Findings of ACL 2022): each layer's FFN split into E experts of d_ff / E
neurons with a router per layer, run by the numpy backend -- the one mixture-of-experts model whose routing this
machine can observe for real (``kind: moefication``).

1. **Capture.** The dense model prefills calibration contexts (corpus split ``trace``); per layer it keeps the FFN
   input mlp_in [T, d] and |silu(gate) * up| [T, F].
2. **Split.** Neurons that fire together go together: a neuron's profile is its |activation| over the T tokens,
   normalised, and balanced k-means (each step a greedy capacity-constrained assignment, F / E neurons an
   expert) clusters the profiles -- MoEfication's co-activation split, with k-means in place of its graph
   partitioner.
3. **Route.** A linear router per layer, fitted in closed form (ridge) from mlp_in to each expert's activation
   mass sum_{i in e} |act_i| (MoEfication's target: the experts holding the most activation); a token takes the
   top-k experts by predicted mass. ``oracle`` routing takes the top-k by the true mass (an upper bound).
4. **Measure** on held-out contexts (split ``heldout``), for every (E, k, routing): perplexity and teacher-forced
   greedy agreement against the dense model (:func:`sim.lab.accuracy._row`), the router's recall of the oracle's
   experts, and a speculative prefetch's hit rate: layer l+1's router applied to layer l's FFN input (as
   Mixtral-offloading applies the next gate to the current hidden state), the share of layer l+1's routed experts
   it names; beside them, the same share of neurons kept per token by top-k over single neurons (``neuron-topk``:
   what expert granularity costs). The FFN is computed in "post" mode (gate and up dense, down over the routed
   experts' neurons), whose output equals computing the routed experts alone; the dense activations give the
   oracle its masses.
5. **Routing traces.** The learned routing of every held-out token and layer, written as a trace
   (``routing-E{E}-k{k}.trace``, field ``experts`` [L, k], first choice first; ``expert_guess`` [L, k], the
   experts layer l-1's hidden state named for layer l, -1 at layer 0), and per layer the repetition
   rates :mod:`sim.moe.routing` fits (same first choice on consecutive tokens; an expert in common) in
   ``routing_rates.csv``.

Writes ``moefication.csv``, ``routing_rates.csv``, the routing traces, ``config.yaml`` and ``about.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, model_validator

from sim.config.base import StrictModel, load_yaml, validate
from sim.errors import ConfigError
from sim.lab.capture import token_meta
from sim.moe.routing import rates as repetition
from sim.traces.format import TraceWriter


class MoeficationConfig(StrictModel):
    kind: Literal["moefication"] = "moefication"
    name: str = "moefication"
    description: str = ""
    model: str = "smollm2-135m"
    experts: list[int] = Field([8, 16], min_length=1, description="E: experts per layer (d_ff split evenly)")
    top_k: list[int] = Field([1, 2, 4, 6], min_length=1, description="experts each token uses")
    routing: list[Literal["router", "oracle"]] = ["router", "oracle"]
    calibration_tokens_per_context: int = Field(256, gt=0)
    calibration_contexts_per_task: int = Field(2, gt=0)
    heldout_tokens_per_context: int = Field(64, gt=1)
    heldout_contexts_per_task: int = Field(1, gt=0)
    kmeans_iterations: int = Field(10, ge=1, le=100)
    ridge: float = Field(1e-2, gt=0, description="ridge strength, relative to the mean diagonal of X^T X")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _shapes(self) -> MoeficationConfig:
        for e in self.experts:
            if e < 2:
                raise ValueError(f"experts: {e} -- an MoE has at least 2 experts")
            if any(k >= e for k in self.top_k):
                raise ValueError(f"top_k: {self.top_k} -- every k must be below the experts {e}")
        if any(k < 1 for k in self.top_k):
            raise ValueError(f"top_k: {self.top_k} -- every k must be at least 1")
        return self


# ---- split ---------------------------------------------------------------------------------------------------
def balanced_assign(score: np.ndarray, size: int) -> np.ndarray:
    """[F] expert of each neuron, at most ``size`` a expert: the best (neuron, expert) scores first, greedily.
    score [F, E]."""
    n_neurons, n_experts = score.shape
    out, room, left = np.full(n_neurons, -1, np.int64), np.full(n_experts, size), n_neurons
    for flat in np.argsort(-score, axis=None, kind="stable").tolist():
        neuron, expert = divmod(flat, n_experts)
        if out[neuron] < 0 and room[expert] > 0:
            out[neuron], room[expert], left = expert, room[expert] - 1, left - 1
            if left == 0:
                break
    return out


def split_experts(act: np.ndarray, n_experts: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """[F] expert of each neuron by balanced k-means over co-activation profiles; act [T, F] = |activation|."""
    n_neurons = act.shape[1]
    if n_neurons % n_experts:
        raise ValueError(f"d_ff {n_neurons} does not split into {n_experts} equal experts")
    profiles = _unit(act.T.astype(np.float64))  # [F, T]
    centers = profiles[rng.choice(n_neurons, n_experts, replace=False)]  # [E, T]
    expert_of = np.zeros(n_neurons, np.int64)
    for _ in range(iterations):
        expert_of = balanced_assign(profiles @ centers.T, n_neurons // n_experts)  # cosine [F, E]
        centers = _unit(np.stack([profiles[expert_of == e].mean(axis=0) for e in range(n_experts)]))
    return expert_of


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


# ---- route ---------------------------------------------------------------------------------------------------
def expert_mass(act: np.ndarray, expert_of: np.ndarray, n_experts: int) -> np.ndarray:
    """[T, E] activation mass of each expert: act [T, F] |activation|."""
    onehot = np.zeros((len(expert_of), n_experts), act.dtype)
    onehot[np.arange(len(expert_of)), expert_of] = 1
    return act @ onehot


def fit_router(x: np.ndarray, mass: np.ndarray, ridge: float) -> np.ndarray:
    """[d + 1, E] linear router (last row: bias) by ridge regression; x [T, d], mass [T, E]."""
    xb = np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1).astype(np.float64)  # [T, d + 1]
    gram = xb.T @ xb  # [d + 1, d + 1]
    gram[np.diag_indices_from(gram)] += ridge * float(np.trace(gram)) / len(gram)
    return np.linalg.solve(gram, xb.T @ mass.astype(np.float64)).astype(np.float32)


def top_experts(scores: np.ndarray, k: int) -> np.ndarray:
    """[T, k] the k best experts of each token, best first; scores [T, E]."""
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [T, k] unordered
    order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def route_scores(router: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ router[:-1] + router[-1]  # [T, E]


@dataclass
class MoeModel:
    """A MoEfied FFN: per layer the expert of each neuron and the router."""

    expert_of: list[np.ndarray]  # L x [F]
    routers: list[np.ndarray]  # L x [d + 1, E]
    n_experts: int

    def neurons(self, layer: int, experts: np.ndarray) -> np.ndarray:
        """Sorted neurons of ``experts`` [k] at ``layer``."""
        return np.flatnonzero(np.isin(self.expert_of[layer], experts))


def moefy(mlp_in: list[np.ndarray], act: list[np.ndarray], n_experts: int, iterations: int, ridge: float,
          rng: np.random.Generator) -> MoeModel:  # fmt: skip
    """Split and route every layer from its calibration arrays (mlp_in [T, d], act [T, F] per layer)."""
    expert_of = [split_experts(a, n_experts, iterations, rng) for a in act]
    routers = [
        fit_router(x, expert_mass(a, e, n_experts), ridge) for x, a, e in zip(mlp_in, act, expert_of, strict=True)
    ]
    return MoeModel(expert_of, routers, n_experts)


# ---- run -----------------------------------------------------------------------------------------------------
@dataclass
class RoutedRun:
    """The FFN selector of one (model, k, routing) run; records routing, router recall and prefetch hits."""

    moe: MoeModel
    k: int
    routing: str
    kept: list[float] = field(default_factory=list)
    chosen: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> [n, k] of the context being run
    guessed: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> [n, k] guessed at layer - 1 (-1: none)
    recall: list[float] = field(default_factory=list)
    prefetch: dict[int, list[float]] = field(default_factory=dict)  # layer l + 1 -> hit rates
    _guess: np.ndarray | None = None  # [n, k] layer l + 1's experts, guessed at layer l

    def select(self, layer: int, x: np.ndarray, act: np.ndarray) -> list[np.ndarray]:
        moe = self.moe
        mass = expert_mass(np.abs(act), moe.expert_of[layer], moe.n_experts)  # [n, E]
        oracle = top_experts(mass, self.k)
        learned = top_experts(route_scores(moe.routers[layer], x), self.k)
        chosen = learned if self.routing == "router" else oracle
        self.recall.append(_overlap(learned, oracle))
        guess = self._guess if self._guess is not None and layer > 0 else np.full_like(chosen, -1)
        if layer > 0:
            self.prefetch.setdefault(layer, []).append(_overlap(guess, chosen))
        self.guessed[layer] = guess
        last = layer + 1 == len(moe.routers)
        self._guess = None if last else top_experts(route_scores(moe.routers[layer + 1], x), self.k)
        self.chosen[layer] = chosen
        self.kept.append(self.k / moe.n_experts)
        return [moe.neurons(layer, row) for row in chosen]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of b's experts that a also names, per token; a, b [n, k]."""
    return float((a[:, :, None] == b[:, None, :]).any(axis=1).mean())


def run_moefication(path: str | Path, out: Path, log=print, progress: bool = True) -> Path:
    from sim.lab.accuracy import _row, _run, _selector, _texts
    from sim.lab.kernels import FfnSelector, Hooks
    from sim.lab.modelfile import load_named

    config = validate(MoeficationConfig, load_yaml(path), path)
    log = log if progress else (lambda *_: None)
    t0 = time.perf_counter()
    cfg, w, tok = load_named(config.model)
    for e in config.experts:
        if cfg.d_ff % e:
            raise ConfigError(path, "experts", f"must divide {config.model}'s d_ff {cfg.d_ff}", e)
    calib = _texts("trace", config.calibration_contexts_per_task, config.calibration_tokens_per_context, tok)
    mlp_in, act = _capture(cfg, w, [ids for _, ids in calib])
    held = _texts("heldout", config.heldout_contexts_per_task, config.heldout_tokens_per_context, tok)
    dense = [_run(cfg, w, ids) for _, ids in held]
    rows, rates = [_row("dense", 0.0, [1.0], dense, dense, held)], []
    for kept_fraction in sorted({k / e for e in config.experts for k in config.top_k}):  # neuron granularity
        kept: list[float] = []
        hooks = Hooks(ffn_selector=_selector("topk", 1.0 - kept_fraction, None, kept))
        rows.append(_row("neuron-topk", 1.0 - kept_fraction, kept, [_run(cfg, w, ids, hooks) for _, ids in held],
                         dense, held))  # fmt: skip
    rng = np.random.default_rng(config.seed)
    for n_experts in config.experts:
        moe = moefy(mlp_in, act, n_experts, config.kmeans_iterations, config.ridge, rng)
        log(f"E={n_experts}: split and routers fitted on {len(mlp_in[0])} tokens")
        for k in config.top_k:
            for routing in config.routing:
                run = RoutedRun(moe, k, routing)
                logits, routes, guesses = [], [], []
                for _, ids in held:
                    logits.append(_run(cfg, w, ids, Hooks(ffn_selector=FfnSelector(run.select, "post"))))
                    routes.append(np.stack([run.chosen[l] for l in range(cfg.n_layers)], axis=1))  # [n, L, k]
                    guesses.append(np.stack([run.guessed[l] for l in range(cfg.n_layers)], axis=1))  # [n, L, k]
                row = _row(f"moe-{routing}", 1.0 - k / n_experts, run.kept, logits, dense, held)
                hits = [np.mean(v) for v in run.prefetch.values()]
                rows.append(row | {"experts": n_experts, "top_k": k, "routing": routing,
                                   "router_recall": float(np.mean(run.recall)),
                                   "prefetch_hit_rate": float(np.mean(hits))})  # fmt: skip
                log(
                    f"E={n_experts} k={k} {routing}: ppl {row['ppl']:.2f}, agreement {row['agreement']:.3f}, "
                    f"router recall {rows[-1]['router_recall']:.3f}, prefetch {rows[-1]['prefetch_hit_rate']:.3f}"
                )
                if routing == "router":
                    command = f"python -m sim run {path}"
                    rates += _write_routing(out, cfg, held, routes, guesses, n_experts, k, run, command)
    return _write(out, config, rows, rates, held, len(mlp_in[0]), time.perf_counter() - t0)


def _capture(cfg, w, contexts: list[list[int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: mlp_in [T, d] and |act| [T, F] of the dense model over the calibration contexts."""
    from sim.lab.accuracy import _run
    from sim.lab.kernels import Hooks

    mlp_in: list[list[np.ndarray]] = [[] for _ in range(cfg.n_layers)]
    act: list[list[np.ndarray]] = [[] for _ in range(cfg.n_layers)]

    def observe(a) -> None:
        mlp_in[a.layer].append(a.mlp_in)
        act[a.layer].append(np.abs(a.ffn_act))

    for ids in contexts:
        _run(cfg, w, ids, Hooks(observer=observe))
    return [np.concatenate(x) for x in mlp_in], [np.concatenate(a) for a in act]


def _write_routing(out: Path, cfg, held, routes: list[np.ndarray], guesses: list[np.ndarray], n_experts: int,
                   k: int, run: RoutedRun, command: str) -> list:  # fmt: skip
    """The routing trace of the held-out contexts and its per-layer rates (rows of routing_rates.csv)."""
    model = {"name": f"smollm2-135m-moe{n_experts}", "n_layers": cfg.n_layers, "d_model": cfg.d_model,
             "d_ff": cfg.d_ff // n_experts, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads,
             "head_dim": cfg.head_dim, "n_experts": n_experts, "top_k": k}  # fmt: skip
    tasks = list(dict.fromkeys(name.split("/")[0] for name, _ in held))
    contexts = [{"id": i, "task_id": tasks.index(n.split("/")[0]), "n_tokens": len(ids), "task": n.split("/")[0],
                 "context": n.split("/", 1)[-1]} for i, (n, ids) in enumerate(held)]  # fmt: skip
    path = out / f"routing-E{n_experts}-k{k}.trace"
    with TraceWriter(path, model, ["experts", "expert_guess"], compression="deflate") as writer:
        for c, (_, ids), r, g in zip(contexts, held, routes, guesses, strict=True):
            writer.append({"experts": r.astype(np.int16), "expert_guess": g.astype(np.int16),
                           **token_meta(ids, c["task_id"], c["id"])})  # fmt: skip
        writer.close({"command": command, "made_by": "sim/lab/moefy.py: the learned routers' choices, held-out text",
                      "contexts": contexts, "tasks": [{"id": i, "name": t} for i, t in enumerate(tasks)]})  # fmt: skip
    every = np.concatenate(routes)  # [T, L, k]
    context = np.concatenate([np.full(len(r), i) for i, r in enumerate(routes)])
    rows = []
    for layer in range(cfg.n_layers):
        first, common = repetition(every[:, layer], context)
        hit = float(np.mean(run.prefetch[layer])) if layer in run.prefetch else float("nan")
        popularity = np.bincount(every[:, layer].ravel(), minlength=n_experts) / every[:, layer].size
        rows.append({"experts": n_experts, "top_k": k, "layer": layer, "same_first": first, "common": common,
                     "prefetch_hit_rate": hit, "max_popularity": float(popularity.max())})  # fmt: skip
    return rows


def _write(out: Path, config: MoeficationConfig, rows, rates, held, n_calib: int, elapsed_s: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    pd.DataFrame(rows).to_csv(out / "moefication.csv", index=False)
    pd.DataFrame(rates).to_csv(out / "routing_rates.csv", index=False)
    names = ", ".join(f"{n} ({len(ids)} tok)" for n, ids in held)
    (out / "about.md").write_text(
        f"# {config.name}\n\n{config.description}\n\nModel {config.model}, MoEfied (sim/lab/moefy.py): experts "
        f"{config.experts}, top-k {config.top_k}; split and routers fitted on {n_calib} tokens of the corpus "
        f"`trace` split; measured on held-out contexts (split `heldout`): {names}. Routing traces "
        "(routing-E*-k*.trace) hold the learned routers' choices on those contexts. No trace file drives this "
        f"experiment: it runs the numpy model itself. Run time {elapsed_s:.0f} s.\n"
    )
    return out / "moefication.csv"
