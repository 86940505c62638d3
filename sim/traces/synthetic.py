"""A statistical activation generator whose parameters are fitted on a real trace.

Fitted per layer l (:func:`fit`, streaming over any :class:`~sim.traces.source.ActivationSource`):

* ``density[l]``      mean fraction of active neurons;
* ``alpha[l]``        neuron popularity as a power law in normalised rank u = (r + 0.5) / F:
                      P(neuron of rank r active) = c * u^-alpha (least squares of log freq on log u over
                      neurons that were ever active; c is re-chosen so the mean equals ``density``);
* ``persistence[l]``  P(active at t | active at t-1) (pairs of consecutive tokens of the same context).

Generation (:class:`SyntheticSource`): each neuron is a two-state Markov chain with stationary probability
pi_i (the power law, scaled to the density, neuron identities shuffled) and lag-1 autocorrelation lambda:
P(1 -> 1) = pi + lambda (1 - pi), P(0 -> 1) = pi (1 - lambda). Then E[active] = pi_i and the aggregate
P(active | active before) = S + lambda (1 - S) with S = sum pi^2 / sum pi, which fixes lambda from the fitted
persistence. Tokens come in blocks of ``block`` tokens, each block from its own Generator seeded by
(seed, block index), so any token range is reproducible; a block starts from the stationary distribution.
A generator fitted on SmolLM2 can emit another shape (n_layers', d_ff'): layers are mapped as in the
projection and the power law is in normalised rank, so it stretches to any d_ff'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.traces.projection import layer_map
from sim.traces.source import ActivationSource, SourceBase, check_range


@dataclass(frozen=True)
class FittedActivity:
    density: np.ndarray  # [L]
    alpha: np.ndarray  # [L]
    persistence: np.ndarray  # [L]
    source: str  # describe() of what it was fitted on
    n_tokens: int
    d_ff: int

    def describe(self) -> str:
        return (f"fit on [{self.source}] ({self.n_tokens} tokens): density {self.density.mean():.2%}, "
                f"alpha {self.alpha.mean():.2f}, persistence {self.persistence.mean():.2f}")  # fmt: skip


def fit(source: ActivationSource, n_tokens: int | None = None, block: int = 256) -> FittedActivity:
    """Fit density, popularity power law and persistence per layer on the first ``n_tokens`` tokens (a token and
    the next count as a pair only inside one context, where the source knows its contexts)."""
    n = min(n_tokens or source.n_tokens, source.n_tokens)
    counts = np.zeros((source.n_layers, source.d_ff))
    stay, prev_active = np.zeros(source.n_layers), np.zeros(source.n_layers)
    ctx = source.contexts(0, n)  # [n] context id per token
    for s in range(0, n, block):
        m = source.masks(max(s - 1, 0), min(s + block, n))  # one token of overlap for the pairs
        c = ctx[max(s - 1, 0) : min(s + block, n)]
        counts += m[1 if s else 0 :].sum(axis=0)
        same = (c[1:] == c[:-1])[:, None, None]  # pairs inside one context only
        stay += (m[:-1] & m[1:] & same).sum(axis=(0, 2))
        prev_active += (m[:-1] & same).sum(axis=(0, 2))
    freq = counts / n  # [L, F]
    alpha = np.array([_power_law_alpha(f) for f in freq])
    persistence = stay / np.maximum(prev_active, 1)
    return FittedActivity(freq.mean(axis=1), alpha, persistence, source.describe(), n, source.d_ff)


def _power_law_alpha(freq: np.ndarray) -> float:
    """Slope of log freq vs log normalised rank (freq sorted descending), over neurons ever active."""
    f = np.sort(freq)[::-1]
    u = (np.arange(len(f)) + 0.5) / len(f)
    ok = f > 0
    if ok.sum() < 2:
        return 0.0
    slope = np.polyfit(np.log(u[ok]), np.log(f[ok]), 1)[0]
    return float(max(-slope, 0.0))


def popularity(alpha: float, density: float, d_ff: int, p_max: float = 0.99) -> np.ndarray:
    """pi [d_ff] (sorted descending) = c u^-alpha clipped to p_max, with mean(pi) = density."""
    shape = ((np.arange(d_ff) + 0.5) / d_ff) ** -alpha
    pi = shape * density / shape.mean()
    for _ in range(50):  # clipping moves the mean: re-scale the unclipped part
        pi = np.minimum(pi, p_max)
        free = pi < p_max
        deficit = density * d_ff - pi.sum()
        if abs(deficit) < 1e-9 * d_ff or not free.any():
            break
        pi[free] *= 1.0 + deficit / pi[free].sum()
    return np.minimum(pi, p_max)


class SyntheticSource(SourceBase):
    """:class:`~sim.traces.source.ActivationSource` sampling Markov-chain neurons with fitted statistics."""

    def __init__(self, fitted: FittedActivity, rng: np.random.Generator, n_tokens: int | None = None,
                 n_layers: int | None = None, d_ff: int | None = None, density: np.ndarray | None = None,
                 block: int = 256):  # fmt: skip
        L0 = len(fitted.density)
        self.fitted, self.block = fitted, block
        self.n_layers, self.n_tokens = n_layers or L0, n_tokens or fitted.n_tokens
        self.d_ff = d_ff or fitted.d_ff
        src = layer_map(L0, self.n_layers)
        dens = fitted.density[src] if density is None else np.broadcast_to(density, (self.n_layers,))
        pis = [popularity(fitted.alpha[s], dens[l], self.d_ff) for l, s in enumerate(src)]
        self.pi = np.stack([rng.permutation(p) for p in pis])  # [L, F] neuron identities shuffled
        S = (self.pi**2).sum(axis=1) / self.pi.sum(axis=1)  # [L]
        self.lam = np.clip((fitted.persistence[src] - S) / (1.0 - S), 0.0, 0.999)  # [L]
        self.p_stay = self.pi + self.lam[:, None] * (1.0 - self.pi)  # [L, F] P(1 -> 1)
        self.p_on = self.pi * (1.0 - self.lam[:, None])  # [L, F] P(0 -> 1)
        self.seed = int(rng.integers(2**63))
        self._cache: tuple[int, np.ndarray] | None = None

    def _block(self, b: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == b:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, b])
        n = min(self.block, self.n_tokens - b * self.block)
        out = np.empty((n, self.n_layers, self.d_ff), dtype=bool)
        state = rng.random(self.pi.shape) < self.pi  # [L, F] stationary start
        for t in range(n):
            if t:
                u = rng.random(self.pi.shape)
                state = np.where(state, u < self.p_stay, u < self.p_on)
            out[t] = state
        self._cache = (b, out)
        return out

    def masks(self, start: int, stop: int) -> np.ndarray:
        check_range(self, start, stop)
        parts = []
        for b in range(start // self.block, -(-stop // self.block)):
            lo = b * self.block
            parts.append(self._block(b)[max(start - lo, 0) : stop - lo])
        return np.concatenate(parts) if parts else np.zeros((0, self.n_layers, self.d_ff), bool)

    def hidden(self, start: int, stop: int) -> None:
        return None

    def describe(self) -> str:
        return (f"synthetic ({self.n_layers} layers x {self.d_ff} neurons, seed {self.seed}, mean density "
                f"{self.pi.mean():.2%}) from {self.fitted.describe()}")  # fmt: skip
