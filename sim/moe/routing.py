"""Statistical expert routing for MoE shapes no real model here can route (Mixtral-8x7B and kin).

Per layer a Markov chain over tokens picks the top-k experts of each token:

- the first choice repeats the previous token's first choice with probability ``alpha`` and is otherwise drawn
  from the layer's popularity (uniform unless given), so P(same first choice) = alpha + (1 - alpha) sum p_e^2;
- every further choice, with probability ``beta``, re-uses one of the previous token's experts not chosen yet
  (if any), and is otherwise drawn from the popularity among the experts not chosen yet.

``alpha`` and ``beta`` are fitted per layer to two published rates of consecutive tokens: the share whose first
choice is the same, and the share that share an expert among their top-k (Mixtral paper, arXiv 2401.04088,
Table 5, as papers.md gives them: first choice 13.6-14.9% / 23.6-28.4% / 19.7-26.3% at layers 0 / 15 / 31, an
expert in common among the top-2 44.9-49.9% / 61.6-67.0% / 44.5-53.6%; midpoints used, layers in between
interpolated linearly). :data:`MIXTRAL_TABLE5` holds those points; every result names this source.

A real routing trace (:class:`TraceRouting`, from the MoEfied SmolLM2 of :mod:`sim.lab.moefy`) is either replayed
as it is, or its per-layer rates (:meth:`TraceRouting.rates`) replace Table 5's as the chain's targets.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from sim.errors import TraceError
from sim.traces.format import TraceReader

# layer -> (same first choice, an expert in common among the top 2): midpoints of Table 5's ranges (papers.md)
MIXTRAL_TABLE5 = {0: ((0.136 + 0.149) / 2, (0.449 + 0.499) / 2), 15: ((0.236 + 0.284) / 2, (0.616 + 0.670) / 2),
                  31: ((0.197 + 0.263) / 2, (0.445 + 0.536) / 2)}  # fmt: skip
CHAIN_TOKENS = 20  # tokens per chain of fit()'s bisection sample (its pairs are the chains' consecutive tokens)
SOURCE = "Mixtral routing repetition, arXiv 2401.04088 Table 5 (papers.md), midpoints over its eight datasets"


def table_rates(n_layers: int, points: dict[int, tuple[float, float]] = MIXTRAL_TABLE5) -> np.ndarray:
    """[n_layers, 2] target rates, interpolated linearly between the published layers (scaled to n_layers)."""
    src = np.array(sorted(points))
    at = np.linspace(src[0], src[-1], n_layers)
    first = np.interp(at, src, [points[l][0] for l in src])
    common = np.interp(at, src, [points[l][1] for l in src])
    return np.stack([first, common], axis=1)


def step(rng: np.random.Generator, prev: np.ndarray | None, n_experts: int, k: int, alpha: float, beta: float,
         popularity: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """[k] int: the experts of the token after one that used ``prev`` (None: the first token of a chain)."""
    p = np.full(n_experts, 1.0 / n_experts) if popularity is None else popularity / popularity.sum()
    u = rng.random((k, 2))
    chosen: list[int] = []
    for j in range(k):
        left = [] if prev is None else [int(e) for e in prev if e not in chosen]
        if prev is not None and j == 0 and u[j, 0] < alpha:
            pick = int(prev[0])
        elif j > 0 and left and u[j, 0] < beta:
            pick = left[int(u[j, 1] * len(left))]
        else:
            q = p.copy()
            q[chosen] = 0.0
            pick = min(int(np.searchsorted(np.cumsum(q / q.sum()), u[j, 1], side="right")), n_experts - 1)
        chosen.append(pick)
    return np.array(chosen, np.int64)


def route(rng: np.random.Generator, n_tokens: int, n_experts: int, k: int, alpha: float, beta: float,
          popularity: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """[n_tokens, k] int: each token's experts (first choice first) at one layer."""
    out = np.empty((n_tokens, k), np.int64)
    prev = None
    for t in range(n_tokens):
        out[t] = prev = step(rng, prev, n_experts, k, alpha, beta, popularity)
    return out


def route_chains(rng: np.random.Generator, n_chains: int, n_tokens: int, n_experts: int, k: int, alpha: float,
                 beta: float, popularity: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """[n_chains, n_tokens, k]: independent chains of :func:`step`'s rule, advanced together (vectorised over
    chains: a fresh draw among the experts not yet chosen is a Gumbel-max over log popularity)."""
    p = np.full(n_experts, 1.0 / n_experts) if popularity is None else popularity / popularity.sum()
    logp = np.log(np.maximum(p, 1e-12))  # an expert never seen is drawn only when no other is left
    rows = np.arange(n_chains)
    out = np.empty((n_chains, n_tokens, k), np.int64)
    prev = None
    for t in range(n_tokens):
        taken = np.zeros((n_chains, n_experts), bool)
        u = rng.random((n_chains, k))
        for j in range(k):
            keys = np.where(taken, -np.inf, logp + rng.gumbel(size=(n_chains, n_experts)))
            pick = keys.argmax(axis=1)  # [C] a fresh draw
            if prev is not None and j == 0:
                pick = np.where(u[:, 0] < alpha, prev[:, 0], pick)
            elif prev is not None:
                left = ~taken[rows[:, None], prev]  # [C, k] the previous token's experts not chosen yet
                reuse = prev[rows, np.where(left, rng.random((n_chains, k)), -1.0).argmax(axis=1)]
                pick = np.where(left.any(axis=1) & (u[:, j] < beta), reuse, pick)
            out[:, t, j] = pick
            taken[rows, pick] = True
        prev = out[:, t]
    return out


def rates(routes: np.ndarray, context: np.ndarray | None = None) -> tuple[float, float]:
    """(share of consecutive tokens with the same first choice, share with an expert in common); routes [T, k];
    ``context`` [T] (optional): only pairs of consecutive tokens of one context count."""
    same = np.ones(len(routes) - 1, bool) if context is None else context[1:] == context[:-1]
    first = (routes[1:, 0] == routes[:-1, 0])[same]
    common = (routes[1:, :, None] == routes[:-1, None, :]).any(axis=(1, 2))[same]
    return float(first.mean()), float(common.mean())


@functools.lru_cache(maxsize=1024)
def fit(n_experts: int, k: int, target_first: float, target_common: float, popularity: tuple[float, ...] | None = None,
        n_tokens: int = 2000, seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """(alpha, beta) whose chain reproduces the two rates (alpha in closed form: a fresh first choice repeats with
    probability sum p_e^2; beta in closed form for top-2 under uniform popularity, else by bisection on a sample).
    Where the first choice's repetition alone already exceeds ``target_common`` (beta = 0), the chain keeps it:
    :func:`rates` of a generated route says what was reached."""
    p = None if popularity is None else np.asarray(popularity, float) / sum(popularity)
    base = 1.0 / n_experts if p is None else float(np.sum(p**2))
    alpha = float(np.clip((target_first - base) / (1.0 - base), 0.0, 1.0))
    if k == 2 and p is None:
        # Closed form (uniform popularity): the new first choice is one of prev's two experts with probability
        # 1 - fresh; otherwise the second choice shares one with probability beta + (1 - beta) 2 / (E - 1).
        E = n_experts
        fresh = (1 - alpha) * (E - 2) / E
        shared_anyway = 1 - fresh
        beta = (target_common - shared_anyway - fresh * 2 / (E - 1)) / (fresh * (1 - 2 / (E - 1)))
        return alpha, float(np.clip(beta, 0.0, 1.0))
    lo, hi = 0.0, 1.0
    chains, length = n_tokens // CHAIN_TOKENS, CHAIN_TOKENS  # short chains advanced together
    for _ in range(10):
        beta = (lo + hi) / 2
        routes = route_chains(np.random.default_rng(seed), chains, length, n_experts, k, alpha, beta, p)
        _, common = rates(routes.reshape(-1, k), np.repeat(np.arange(chains), length))
        lo, hi = (beta, hi) if common < target_common else (lo, beta)
    return alpha, (lo + hi) / 2


class TraceRouting:
    """Routing replayed from a routing trace (field ``experts`` [L, k], first choice first; written by
        ``kind: moefication``, :mod:`sim.lab.moefy`): request r's token t at layer l uses the trace's token
        ``(start_r + t) mod T``, where request r starts at ``r * 0.618 T`` (spread over the trace, so a batch's
        requests do not route alike). The model must have the trace's layers, experts and top-k. A trace that also holds
    ``expert_guess`` (the experts the previous layer's hidden state named) gives a prefetch its real guesses."""

    def __init__(self, path: str | Path, n_layers: int | None, n_experts: int | None, k: int | None) -> None:
        """None for the shapes to leave unchecked (only the trace's rates are used)."""
        with TraceReader(path) as reader:
            if not reader.has("experts"):
                raise TraceError(f"trace {path}: has no field 'experts' (not a routing trace)")
            model = reader.model
            self.routes = reader.read("experts").astype(np.int64)  # [T, L, k]
            self.context = reader.read("context_id")  # [T]
            has_guess = reader.has("expert_guess")  # [T, L, k] named a layer early from the hidden state
            self.guesses = reader.read("expert_guess").astype(np.int64) if has_guess else None
        self.name = f"routing trace {Path(path).name} ({model.get('name', '?')}, {len(self.routes)} tokens)"
        want = {key: v for key, v in {"n_layers": n_layers, "n_experts": n_experts, "top_k": k}.items() if v}
        got = {key: model.get(key) for key in want}
        if got != want:
            raise TraceError(f"trace {path}: routes {got}, the model needs {want}")
        self.n_experts = int(model.get("n_experts", 0))
        if self.routes.min() < 0 or self.routes.max() >= self.n_experts:
            raise TraceError(f"trace {path}: expert ids outside 0..{self.n_experts - 1}")

    def row(self, request: int, token: int) -> int:
        """The trace token that ``request``'s ``token``-th routed token replays."""
        n = len(self.routes)
        return (int(request * 0.618 * n) + token) % n

    def experts(self, request: int, token: int, layer: int) -> np.ndarray:
        """[k] the experts of ``request``'s ``token``-th routed token at ``layer``."""
        return self.routes[self.row(request, token), layer]

    def popularity(self) -> np.ndarray:
        """[L, E] each expert's share of the layer's choices (every top-k slot counted)."""
        n_experts = int(self.routes.max()) + 1
        counts = np.stack(
            [np.bincount(self.routes[:, l].ravel(), minlength=n_experts) for l in range(self.routes.shape[1])]
        )
        return counts / counts.sum(axis=1, keepdims=True)

    def rates(self) -> dict[int, tuple[float, float]]:
        """layer -> (same first choice, an expert in common) over consecutive tokens of one context."""
        return {layer: rates(self.routes[:, layer], self.context) for layer in range(self.routes.shape[1])}
