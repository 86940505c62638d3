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
"""

from __future__ import annotations

import functools

import numpy as np

# layer -> (same first choice, an expert in common among the top 2): midpoints of Table 5's ranges (papers.md)
MIXTRAL_TABLE5 = {0: ((0.136 + 0.149) / 2, (0.449 + 0.499) / 2), 15: ((0.236 + 0.284) / 2, (0.616 + 0.670) / 2),
                  31: ((0.197 + 0.263) / 2, (0.445 + 0.536) / 2)}  # fmt: skip
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


def rates(routes: np.ndarray) -> tuple[float, float]:
    """(share of consecutive tokens with the same first choice, share with an expert in common)."""
    same_first = float((routes[1:, 0] == routes[:-1, 0]).mean())
    common = (routes[1:, :, None] == routes[:-1, None, :]).any(axis=(1, 2))
    return same_first, float(common.mean())


@functools.lru_cache(maxsize=1024)
def fit(n_experts: int, k: int, target_first: float, target_common: float, n_tokens: int = 2000,
        seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """(alpha, beta) whose chain reproduces the two rates (alpha in closed form; beta in closed form for top-2,
    else by bisection on a sample).
    Where the first choice's repetition alone already exceeds ``target_common`` (beta = 0), the chain keeps it:
    :func:`rates` of a generated route says what was reached."""
    base = 1.0 / n_experts
    alpha = float(np.clip((target_first - base) / (1.0 - base), 0.0, 1.0))
    if k == 2:
        # Closed form (uniform popularity): the new first choice is one of prev's two experts with probability
        # 1 - fresh; otherwise the second choice shares one with probability beta + (1 - beta) 2 / (E - 1).
        E = n_experts
        fresh = (1 - alpha) * (E - 2) / E
        shared_anyway = 1 - fresh
        beta = (target_common - shared_anyway - fresh * 2 / (E - 1)) / (fresh * (1 - 2 / (E - 1)))
        return alpha, float(np.clip(beta, 0.0, 1.0))
    lo, hi = 0.0, 1.0
    for _ in range(10):
        beta = (lo + hi) / 2
        _, common = rates(route(np.random.default_rng(seed), n_tokens, n_experts, k, alpha, beta))
        lo, hi = (beta, hi) if common < target_common else (lo, beta)
    return alpha, (lo + hi) / 2
