"""Order statistics of a projected layer's values without forming them (used to calibrate projections).

A target layer of :class:`~sim.traces.projection.ProjectedSource` has N = n * F' values, value (t, j) being the
float32 product ``table[code[t, s_j]] * g_j`` (source codes [n, F] of its source layer, target j with source
neuron s_j and gain g_j > 0). The product is non-decreasing in the code, so with c_j(x) the lowest code whose
product reaches x (:meth:`ProjectedValues.reach`), the number of values >= x is ``sum_j at_least[s_j, c_j(x)]``
(``at_least[s, c]``: tokens whose code of source neuron s is >= c) -- O(F') work, not O(N). Bisecting x narrows
a band [lo, hi) holding the k-th largest value; the band's distinct products (j, c), each weighted by the tokens
whose code is c, give it exactly: the same float32 number np.quantile sees.
"""

from __future__ import annotations

import numpy as np

BISECT_STEPS = 12  # geometric steps narrowing a band (the first bracket spans at most a code step and the gains)


class ProjectedValues:
    """The values ``table[codes[:, neurons]] * gain`` [n, F'] held as per-source code histograms."""

    def __init__(self, codes: np.ndarray, table: np.ndarray, neurons: np.ndarray, gain: np.ndarray):
        n_tok, n_src = codes.shape  # uint8 [n, F]
        self.table, self.neurons, self.gain = table, neurons, gain  # [256] float32, [F'] int, [F'] float32
        self.size = n_tok * len(neurons)
        e = np.flatnonzero(codes != 0)  # [E] t * F + s of the nonzero codes (keep_top leaves most codes 0)
        hist = np.bincount(e % n_src * 256 + codes.reshape(-1).take(e), minlength=n_src * 256).reshape(n_src, 256)
        hist[:, 0] = n_tok - hist.sum(axis=1)
        self.hist = hist  # [F, 256] tokens with each code per source neuron
        self.at_least = np.zeros((n_src, 257), np.int64)  # [F, 257] tokens with code >= c (c = 256: none)
        self.at_least[:, :256] = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
        self._rows = neurons * 257  # [F'] each target's source row in at_least

    def reach(self, x: float) -> np.ndarray:
        """[F'] c_j(x): the lowest code whose float32 product table[c] * g_j is >= x (256: none).

        A float64 search on x / g_j lands within one code of it (codes are ~9% apart, float32 rounding ~6e-8);
        the exact products decide that last step."""
        table, gain = self.table, self.gain
        c = np.searchsorted(table.astype(np.float64), x / gain.astype(np.float64))  # [F'] in 0..256
        c -= (c > 0) & (table.take(np.maximum(c - 1, 0)) * gain >= np.float64(x))
        c += (c < 256) & (table.take(np.minimum(c, 255)) * gain < np.float64(x))
        return c

    def count(self, c: np.ndarray) -> int:
        """Values >= x, given c = reach(x)."""
        return int(self.at_least.reshape(-1).take(self._rows + c).sum())

    def largest(self, k: int, k_b: int) -> tuple[np.float32, np.float32]:
        """The k-th and k_b-th largest values (1 <= k_b <= k <= N)."""
        lo, hi = self._bracket(k)
        lo, hi = self._narrow(k, lo, hi)
        a = self._kth(k, lo[1], hi[1])
        if self.count(hi[1]) < k_b:  # the same band holds the k_b-th
            return a, self._kth(k_b, lo[1], hi[1])
        lo, hi = self._narrow(k_b, hi, self._bracket(k_b)[1])  # above the band: count(hi) >= k_b
        return a, self._kth(k_b, lo[1], hi[1])

    def _bracket(self, k: int) -> tuple[tuple[float, np.ndarray], tuple[float, np.ndarray]]:
        """((lo, reach(lo)), (hi, reach(hi))) with count(lo) >= k > count(hi), from the codes: c* = highest code
        that k values have; those are >= table[c*] * min g, and only codes above c* reach table[c* + 1] * max g
        (checked exactly; 0 and inf if not)."""
        copies = np.bincount(self.neurons, minlength=len(self.at_least)).astype(np.float64)  # [F] targets per source
        c_star = int(np.flatnonzero(copies @ self.at_least[:, :256] >= k)[-1])
        lo = float(self.table[c_star] * self.gain.min())
        hi = float(self.table[min(c_star + 1, 255)] * self.gain.max())
        c_lo, c_hi = self.reach(lo), self.reach(hi)
        if self.count(c_lo) < k:
            lo, c_lo = 0.0, np.zeros(len(self.neurons), np.int64)
        if self.count(c_hi) >= k:
            hi, c_hi = np.inf, np.full(len(self.neurons), 256)
        return (lo, c_lo), (hi, c_hi)

    def _narrow(self, k: int, lo: tuple, hi: tuple) -> tuple[tuple[float, np.ndarray], tuple[float, np.ndarray]]:
        """Bisect the bracket count(lo) >= k > count(hi) (geometric mid-points) BISECT_STEPS times."""
        for _ in range(BISECT_STEPS):
            x_lo, x_hi = lo[0], hi[0]
            mid = (
                float(np.sqrt(x_lo * x_hi))
                if x_lo > 0 and x_hi < np.inf
                else (x_hi / 2 if x_hi < np.inf else 2 * x_lo + 1)
            )
            c_mid = self.reach(mid)
            lo, hi = ((mid, c_mid), hi) if self.count(c_mid) >= k else (lo, (mid, c_mid))
        return lo, hi

    def _kth(self, k: int, c_lo: np.ndarray, c_hi: np.ndarray) -> np.float32:
        """The k-th largest value, in the band [lo, hi) (count(lo) >= k > count(hi)) given by c_lo, c_hi [F']."""
        d = c_hi - c_lo  # [F'] codes whose products lie in the band, per target
        j = np.repeat(np.arange(len(d)), d)  # [B] band pairs (j, c)
        c = np.repeat(c_lo - (np.cumsum(d) - d), d) + np.arange(len(j))
        value = self.table.take(c) * self.gain.take(j)  # [B] float32, as the projection computes them
        order = np.argsort(value)[::-1]  # descending
        above = self.count(c_hi) + np.cumsum(self.hist.reshape(-1).take(self.neurons.take(j) * 256 + c).take(order))
        return value.take(order.take(np.searchsorted(above, k - 1, side="right")))  # first with above >= k
