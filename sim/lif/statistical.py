"""Statistical predictor calibrated to LLM in a Flash App. C, for projected shapes (e.g. OPT-6.7B) where no
hidden states of that width exist to train a real predictor on.

Given the TRUE active neurons of a token it emits predicted ones with the paper's measured quality: each truly
active neuron is kept with probability ``recall`` (0.95: 5% false negatives) and each inactive neuron becomes a
false positive with probability ``fp_rate`` on average (0.07: 7% false positives). With ≈3.3% truly active
(Table 6 mean) that predicts 0.95·3.3% + 0.07·96.7% ≈ 10% of the FFN per token, the paper's figure.

False positives are not uniform: a neuron's FP probability is proportional to ``fp_weights`` (e.g. its activation
frequency in the trace, so hot neurons are mispredicted more often, as a trained predictor does), scaled per layer
and token so that the expected count is ``fp_rate`` x inactive neurons (clipped at probability 1):
``p_i = min(1, w_i * scale_l)``, ``scale_l = fp_rate * inactive_l / (sum of the inactive neurons' weights)``.
Every neuron is decided independently. Randomness comes only from the np.random.Generator passed in.

Sampling (work proportional to active + false-positive neurons, not to all neurons): each layer's neurons with
``w > 0`` are grouped by weight into half-octave buckets (static). A bucket g with largest weight ``m_g`` is first
sampled at the bucket's probability ``q_g = m_g * scale_l`` -- each member independently -- and each candidate is
then kept with probability ``w_i / m_g``, so member i is chosen with probability exactly ``w_i * scale_l``,
independently of every other neuron. The Bernoulli(q_g) draws come from Poisson points: the bucket receives
Poisson(n_g * h_g) points uniform over its n_g members, ``h_g = -log(1 - q_g)``, so a member gets at least one
point with probability ``1 - exp(-h_g) = q_g``, independently of the others (about ``sum q_g`` uniforms in all).
Buckets with ``q_g > DENSE_Q`` (the hottest neurons, where Poisson points would pile up) draw one uniform per
member against ``min(1, w_i * scale_l)``. Truly active candidates are dropped (those are kept or not by
``recall``, one uniform each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BUCKETS_PER_OCTAVE = 2
DENSE_Q = 0.5  # groups sampled at a higher probability get one uniform per member instead of Poisson points


@dataclass(frozen=True)
class Buckets:
    """Static grouping of the neurons with w > 0: group g (layer-major) holds ``members[start[g]:start[g + 1]]``."""

    members: np.ndarray  # [M] int64 flat index l * n + i, ascending within each group
    ratio: np.ndarray  # [M] float64 w_i / m_g (1 for uniform weights)
    start: np.ndarray  # [G + 1] int64
    layer: np.ndarray  # [G] int64
    w_max: np.ndarray  # [G] float64 largest weight m_g
    uniform: bool

    @staticmethod
    def of(weights: np.ndarray) -> Buckets:
        """weights [L, n] >= 0 -> half-octave buckets below each layer's largest weight."""
        n_layers, n = weights.shape
        w = weights.astype(np.float64).reshape(-1)  # [L n]
        layer = np.repeat(np.arange(n_layers), n)
        top = np.maximum(weights.max(axis=1, initial=0.0).astype(np.float64), 1e-300)[layer]  # [L n]
        with np.errstate(divide="ignore"):
            b = np.floor(np.log2(top / w) * BUCKETS_PER_OCTAVE)  # [L n] bucket below the layer's top weight
        b = np.where(w > 0, np.minimum(b, 2046.0), 2047.0).astype(np.int64)  # 2047: never a false positive
        key = layer * 2048 + b  # [L n] group key
        keep = np.flatnonzero(b < 2047)
        order = keep[np.argsort(key[keep], kind="stable")]  # [M] by group, then flat index
        g_key, start = np.unique(key[order], return_index=True)
        start = np.append(start, len(order)).astype(np.int64)
        w_max = np.maximum.reduceat(w[order], start[:-1]) if len(order) else np.zeros(0)
        sizes = np.diff(start)
        ratio = w[order] / np.repeat(w_max, sizes)
        uniform = bool(len(order) == 0 or (ratio == 1.0).all())
        return Buckets(order, ratio, start, g_key // 2048, w_max, uniform)


@dataclass(frozen=True)
class StatisticalPredictor:
    recall: float = 0.95
    fp_rate: float = 0.07
    fp_weights: np.ndarray | None = None  # [L, F] >= 0; None: uniform
    label: str = "statistical predictor calibrated to LLM in a Flash App. C"
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # shape -> static

    def __post_init__(self) -> None:
        if not 0.0 <= self.recall <= 1.0 or not 0.0 <= self.fp_rate <= 1.0:
            raise ValueError(f"recall and fp_rate must be in [0, 1] (got {self.recall}, {self.fp_rate})")
        if self.fp_weights is not None:
            w = np.asarray(self.fp_weights, np.float32)
            if w.ndim != 2 or (w < 0).any():
                raise ValueError("fp_weights must be [L, F] and >= 0")
            object.__setattr__(self, "fp_weights", w)

    def _static(self, shape: tuple[int, int]) -> tuple[Buckets, np.ndarray, np.ndarray]:
        """(buckets, weights flat [L n] float32, per-layer weight totals [L]) for this shape (built once)."""
        if shape not in self._cache:
            w = np.ones(shape, np.float32) if self.fp_weights is None else self.fp_weights
            if w.shape != shape:
                raise ValueError(f"true mask has shape {shape}, fp_weights {w.shape}")
            total = w.astype(np.float64).sum(axis=1)  # [L]
            self._cache[shape] = (Buckets.of(w), w.reshape(-1), total)
        return self._cache[shape]

    def predict(self, true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """true [L, F] bool -> predicted [L, F] bool: :meth:`keep_active`, then :meth:`false_positives` (the order
        :class:`~sim.lif.masks.MaskStream` draws them in)."""
        active = np.flatnonzero(true)  # [a] ascending
        out = np.zeros(true.shape, bool)
        out.reshape(-1)[self.keep_active(active, rng)] = True
        out.reshape(-1)[self.false_positives(true, active, rng)] = True
        return out

    def keep_active(self, active: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The truly active neurons (flat indices [a]) each kept with probability ``recall``: [~recall a]."""
        return np.compress(rng.random(len(active)) < self.recall, active)

    def false_positives(self, true: np.ndarray, active: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Flat indices of the inactive neurons, each chosen independently with probability min(1, w_i * scale_l)."""
        b, w, w_total = self._static(true.shape)
        n_layers, n = true.shape
        bounds = np.searchsorted(active, np.arange(n_layers + 1) * n)  # [L + 1] (active is ascending)
        n_pos = np.diff(bounds)  # [L]
        w_pos = np.add.reduceat(w.take(active), np.minimum(bounds[:-1], len(active) - 1)) if len(active) else 0.0
        n_neg, w_neg = n - n_pos, w_total - np.where(n_pos > 0, w_pos, 0.0)  # [L]
        s = b.w_max * (self.fp_rate * n_neg / np.maximum(w_neg, 1e-30))[b.layer]  # [G] m_g * scale_l
        dense = s > DENSE_Q
        pos = np.concatenate([_sparse(b, np.where(dense, 0.0, s), rng), _dense(b, np.flatnonzero(dense), s, rng)])
        flat = b.members.take(pos)
        return np.compress(~true.reshape(-1).take(flat), flat)  # the truly active ones are the recall draw's


def _sparse(b: Buckets, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Member positions [c] ascending, each chosen independently with probability ``q[g] * ratio`` (q [G] < 1).

    Member i of group g owns an interval of length ``h_g = -log(1 - q_g)`` on a line (members in order); a unit-
    rate Poisson process on the line (cumulative sums of Exp(1) gaps) makes i a candidate iff a point falls in
    its interval: probability ``1 - exp(-h_g) = q_g``, independently over disjoint intervals. The first point of
    each interval carries a uniform that accepts the candidate iff it is below ``ratio_i``. Points come sorted,
    so every gather below walks its array forwards."""
    size = np.diff(b.start)  # [G]
    h = -np.log1p(-q)  # [G]
    edge = np.zeros(len(size) + 1)
    np.cumsum(size * h, out=edge[1:])  # [G + 1] start of each group's intervals
    x = _poisson_points(float(edge[-1]), rng)  # [P] ascending
    per_group = np.diff(np.searchsorted(x, edge))  # [G]
    x -= np.repeat(edge[:-1], per_group)
    x /= np.repeat(h, per_group)  # [P] interval units within the group
    pos = np.minimum(x.astype(np.int64), np.repeat(size - 1, per_group))  # [P] (min: rounding at a group's end)
    pos += np.repeat(b.start[:-1], per_group)  # [P] non-decreasing
    keep = rng.random(len(pos)) < b.ratio.take(pos)
    keep[1:] &= pos[1:] != pos[:-1]  # the first point of an interval decides
    return np.compress(keep, pos)


def _poisson_points(total: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted points of a unit-rate Poisson process on [0, total): cumulative sums of Exp(1) gaps."""
    extra = int(6.0 * np.sqrt(total) + 16.0)
    points = np.cumsum(-np.log1p(-rng.random(int(total) + extra)))  # -log(1 - u), u in [0, 1): Exp(1)
    while points[-1] < total:  # rarely: the draw fell short of the end; the same process continues
        points = np.concatenate([points, points[-1] + np.cumsum(-np.log1p(-rng.random(extra)))])
    return points[: np.searchsorted(points, total)]


def _dense(b: Buckets, groups: np.ndarray, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Members of the given groups (q_g > DENSE_Q) chosen with probability min(1, ratio * s_g): a uniform each."""
    size = np.diff(b.start).take(groups)  # [D]
    first = np.cumsum(size) - size  # [D] offset of each group's members in the output
    pos = np.repeat(b.start.take(groups) - first, size) + np.arange(int(size.sum()))  # [m] member positions
    p = b.ratio.take(pos) * np.repeat(s.take(groups), size)
    return np.compress(rng.random(len(pos)) < p, pos)
