"""A real SmolLM2 trace projected onto a model shape we cannot run (OPT-6.7B, Llama-2-7B, ...).

Mapping (all choices seeded by the ``np.random.Generator`` passed in, recorded by ``describe()``):

* layers: target layer l' (0-based, L' layers) reads source layer ``round(l' * (L - 1) / (L' - 1))``, so the
  first and last layers map onto each other and depth order is kept.
* neurons: the d_ff' target neurons are the source's d_ff neurons tiled: ``src = concat(perm_1, perm_2, ...)``
  truncated to d_ff' (each perm_i a random permutation of range(d_ff)), so every source neuron is used
  ceil or floor(d_ff'/d_ff) times and co-activation structure between source neurons is kept. Each target
  neuron j also gets a gain ``g_j = exp(sigma * N(0, 1))`` so that copies of one source neuron do not switch
  on and off in perfect lock-step (sigma = 0 makes them identical; copies still co-activate strongly).
* density: target layer l' is active where ``|act_src| * g > theta_l'``, with theta_l' the
  (1 - density[l'])-quantile of ``|act_src| * g`` over the first ``calib_tokens`` tokens, so each layer hits
  its target density on those tokens (exactly, up to ties) and varies around it on others.

Density targets: :func:`density_profile` interpolates per-layer points of an activation statistics file
(:mod:`sim.traces.statistics`; ``opt-6.7b-table6`` is LLM in a Flash Table 6: OPT-6.7B active neurons layer 1
1.56%, layer 16 2.66%, layer 32 5.36%, mean 3.30%).
``hidden()`` is None: SmolLM2's 576-dim MLP inputs are no stand-in for a 4096-dim model's, so predictors on a
projected source must be modelled statistically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from sim.traces.encoding import code_threshold, codes_above, log8_table
from sim.traces.source import SourceBase, TraceSource, check_range, digest_arrays
from sim.traces.topvalues import ProjectedValues

BLOCK_TOKENS = 64  # masks() works through this many tokens at a time (its index arrays: ~1M entries for OPT-6.7B)


def layer_map(n_src: int, n_dst: int) -> np.ndarray:
    """[n_dst] source layer of each target layer: round(l' * (L - 1) / (L' - 1))."""
    if n_dst == 1:
        return np.zeros(1, dtype=np.int64)
    return np.rint(np.arange(n_dst) * (n_src - 1) / (n_dst - 1)).astype(np.int64)


def density_profile(points: dict[int, float], n_layers: int, mean: float | None = None,
                    points_n_layers: int | None = None) -> np.ndarray:  # fmt: skip
    """Per-layer density [n_layers] through published (1-based layer -> density) points.

    Piecewise linear in relative depth (points given for a ``points_n_layers``-layer model are placed at
    (l - 1) / (points_n_layers - 1)); flat beyond the outer points. If ``mean`` is given, a hump that is 0 at
    every point and 1 mid-way between neighbours, ``(x - a)(b - x) / ((b - a) / 2)^2``, is added with the
    weight that makes the layer mean equal ``mean``, so every published number is matched exactly.
    """
    ref = points_n_layers or max(points)
    xs = np.array([(l - 1) / max(ref - 1, 1) for l in sorted(points)])  # [P]
    ys = np.array([points[l] for l in sorted(points)])
    x = np.arange(n_layers) / max(n_layers - 1, 1)  # [L]
    base = np.interp(x, xs, ys)
    if mean is None:
        return base
    seg = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, len(xs) - 2)
    a, b = xs[seg], xs[seg + 1]
    hump = np.where((x > xs[0]) & (x < xs[-1]), (x - a) * (b - x) / ((b - a) / 2) ** 2, 0.0)
    alpha = (mean - base.mean()) / hump.mean() if hump.mean() > 0 else 0.0
    return np.clip(base + alpha * hump, 0.0, 1.0)


def opt_6_7b_density(n_layers: int = 32) -> np.ndarray:
    """LLM in a Flash Table 6's OPT-6.7B densities (traces/statistics/opt-6.7b-table6.yaml) over ``n_layers``."""
    from sim.traces.statistics import load_statistics

    return load_statistics("opt-6.7b-table6", "sim.traces.projection").density_profile(n_layers)


Derive = Callable[[str, list[np.ndarray], Callable[[], np.ndarray]], np.ndarray]  # like sim.points.derived


class ProjectedSource(SourceBase):
    """:class:`~sim.traces.source.ActivationSource` of shape (n_layers', d_ff') driven by a real trace."""

    def __init__(self, base: TraceSource, n_layers: int, d_ff: int, density: np.ndarray, rng: np.random.Generator,
                 gain_sigma: float = 0.25, calib_tokens: int = 512, name: str = "target",
                 derive: Derive | None = None, density_from: str = ""):  # fmt: skip
        density = np.broadcast_to(np.asarray(density, dtype=np.float64), (n_layers,))
        keep = base.reader.manifest["fields"]["ffn_act"]["encoding"].get("keep_top", 1.0)
        if density.max() > keep:
            raise ValueError(f"density {density.max():.3f} above the trace's stored top fraction {keep:g}")
        self.base, self.n_layers, self.d_ff, self.name = base, n_layers, d_ff, name
        self.n_tokens, self.density, self.gain_sigma = base.n_tokens, density, gain_sigma
        self.density_from = density_from  # the statistics the densities come from ("": a number)
        self.layers = layer_map(base.n_layers, n_layers)  # [L']
        reps = -(-d_ff // base.d_ff)
        self.neurons = np.concatenate([rng.permutation(base.d_ff) for _ in range(reps)])[:d_ff]  # [F']
        self.gain = np.exp(gain_sigma * rng.standard_normal(d_ff)).astype(np.float32)  # [F']
        self._src_start = np.searchsorted(np.sort(self.neurons), np.arange(base.d_ff))  # [F] first target per source
        n = min(calib_tokens, base.n_tokens)
        if derive is None:
            self.thresholds = self._calibrate(n)  # [L']
        else:  # a pure function of the trace's bytes and the draws: computed once per content (e.g. on disk)
            trace = np.frombuffer(bytes.fromhex(base.sha256), np.uint8)
            inputs = [trace, self.layers, self.neurons, self.gain, density, np.array([n])]
            self.thresholds = derive("projection-thresholds", inputs, lambda: self._calibrate(n))

    @functools.cached_property
    def _cthr(self) -> np.ndarray | None:
        """[L', F'] per-target code thresholds (None: the trace is not log8); built when masks are first asked for."""
        return self._code_thresholds()

    @functools.cached_property
    def _copies(self) -> tuple[np.ndarray, ...] | None:
        return None if self._cthr is None else self._copy_tables(self._cthr)

    def _projected(self, values: np.ndarray, l: int) -> np.ndarray:
        """values [T, L, F] of the source -> projected magnitudes of target layer l [T, F']."""
        return values[:, self.layers[l]][:, self.neurons] * self.gain

    def _calibrate(self, n: int) -> np.ndarray:
        """[L'] theta_l' = np.quantile(projected magnitudes of layer l' over n tokens, 1 - density[l'])."""
        if self.base.reader.encoding("ffn_act").kind == "log8":  # same numbers from the codes' top values
            codes = self.base.reader.read("ffn_act", 0, n, decoded=False)  # uint8 [n, L, F]
            table = log8_table(**self.base.reader.encoding("ffn_act").params)
            columns = (np.ascontiguousarray(codes[:, self.layers[l]]) for l in range(self.n_layers))  # [n, F] each
            return np.array([self._top_quantile(c, table, l) for l, c in enumerate(columns)])
        values = self.base.values(0, n)  # [n, L, F]
        return np.array([np.quantile(self._projected(values, l), 1.0 - self.density[l]) for l in range(self.n_layers)])

    def _top_quantile(self, codes: np.ndarray, table: np.ndarray, l: int) -> float:
        """np.quantile(table[codes][:, neurons] * gain, 1 - density[l]) without forming the N = n * F' values:
        it interpolates the K-th and K'-th largest, which :class:`ProjectedValues` finds from code histograms.
        codes [n, F] uint8 of the source layer."""
        q, size = 1.0 - self.density[l], codes.shape[0] * self.d_ff
        prev, upper, gamma = _linear_quantile_index(size, q)
        if size - prev > size // 4:  # dense layers: the plain quantile is as cheap
            return float(np.quantile(table[codes][:, self.neurons] * self.gain, q))
        a, b = ProjectedValues(codes, table, self.neurons, self.gain).largest(size - prev, size - upper)
        return _lerp(a, b, gamma)

    def _code_thresholds(self) -> np.ndarray | None:
        """|act| * g > theta  <=>  code(|act|) > code_threshold(theta / g): [L', F'] per-neuron code thresholds."""
        enc = self.base.reader.encoding("ffn_act")
        if enc.kind != "log8":
            return None
        return code_threshold(log8_table(**enc.params), self.thresholds[:, None] / self.gain[None, :])

    def _copy_tables(self, cthr: np.ndarray) -> tuple[np.ndarray, ...]:
        """Tables of :meth:`_active_flat` from the code thresholds cthr [L', F'] (target j of layer l is active iff
        code[s = neurons[j]] > cthr[l, j]):

        * ``order`` [L' * F']: row l lists the targets grouped by source neuron (group s starts at
          ``_src_start[s]``), within a group by cthr[l] ascending, so the active copies are a prefix of the group;
        * ``count`` [L' * F * 256]: count[l, s, c] = #{j in group s: cthr[l, j] < c}, the prefix's length;
        * ``lowest`` [L', F]: min cthr[l, j] over group s (no copy is active unless code > lowest);
        * ``first`` [L' * F]: l * F' + _src_start[s], where group (l, s) starts in ``order``."""
        n_src, most = self.base.d_ff, int(np.bincount(self.neurons).max())
        count = np.empty((self.n_layers, n_src, 256), np.uint8 if most < 256 else np.uint16)
        order = np.empty((self.n_layers, self.d_ff), np.int64)
        lowest = np.full((self.n_layers, n_src), 255, np.int64)
        for l in range(self.n_layers):
            order[l] = np.lexsort((cthr[l], self.neurons))
            hist = np.bincount(self.neurons * 257 + (cthr[l] + 1), minlength=n_src * 257).reshape(n_src, 257)
            count[l] = np.cumsum(hist, axis=1)[:, :256]  # cthr + 1 <= c  <=>  cthr < c
            np.minimum.at(lowest[l], self.neurons, cthr[l])
        first = (np.arange(self.n_layers)[:, None] * self.d_ff + self._src_start[None, :]).reshape(-1)
        return count.reshape(-1), order.reshape(-1), lowest, first

    def _active_flat(self, codes: np.ndarray) -> np.ndarray:
        """codes uint8 [T, L, F] -> int64 flat indices ``(t * L' + l) * F' + j`` of the active targets (unordered).

        One count lookup per (token, target layer, source neuron) whose code lifts at least one copy, instead of a
        comparison per target neuron; the active copies then come from ``order`` by repeat/cumsum."""
        count, order, lowest, first = self._copies
        n_src, per_token = self.base.d_ff, self.n_layers * self.base.d_ff
        sel = codes[:, self.layers]  # [T, L', F] source codes of each target layer
        e = np.flatnonzero(codes_above(sel, lowest))  # [E] entries t * L' F + l F + s with an active copy
        row = e % per_token  # [E] l * F + s
        c = count.take(row * 256 + sel.reshape(-1).take(e)).astype(np.int64)  # [E] active copies (>= 1)
        pick = np.repeat(first.take(row) - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))  # [A] places in order
        return np.repeat((e // n_src) * self.d_ff, c) + order.take(pick)

    def masks(self, start: int, stop: int) -> np.ndarray:
        check_range(self, start, stop)
        if self._cthr is not None:  # stored codes against per-target code thresholds, not decoded
            out = np.zeros((stop - start, self.n_layers, self.d_ff), bool)
            for lo, hi, active in self._active_blocks(start, stop):
                out[lo - start : hi - start].reshape(-1)[active] = True
            return out  # [T, L', F']
        out = np.empty((stop - start, self.n_layers, self.d_ff), dtype=bool)
        values = self.base.values(start, stop)  # [T, L, F]
        for l in range(self.n_layers):
            out[:, l] = self._projected(values, l) > self.thresholds[l]
        return out

    def active_counts(self, start: int, stop: int) -> np.ndarray:
        """[L', F'] int64 tokens of [start, stop) in which each target neuron is active: ``masks(start, stop).sum(0)``
        without the [T, L', F'] masks (e.g. a predictor's frequency weights: counts.astype(np.float32) / T)."""
        check_range(self, start, stop)
        if self._cthr is None:
            return self.masks(start, stop).sum(axis=0, dtype=np.int64)
        per_token, counts = self.n_layers * self.d_ff, np.zeros(self.n_layers * self.d_ff, np.int64)
        for _, _, active in self._active_blocks(start, stop):
            counts += np.bincount(active % per_token, minlength=per_token)
        return counts.reshape(self.n_layers, self.d_ff)

    def _active_blocks(self, start: int, stop: int):
        """(lo, hi, :meth:`_active_flat` of tokens [lo, hi)) per block of BLOCK_TOKENS (the index temporaries
        stay ~10 MB); log8 traces only."""
        for lo in range(start, stop, BLOCK_TOKENS):
            hi = min(lo + BLOCK_TOKENS, stop)
            yield lo, hi, self._active_flat(self.base.reader.read("ffn_act", lo, hi, decoded=False))  # [b, L, F]

    def hidden(self, start: int, stop: int) -> None:
        return None

    def fingerprint(self) -> str | None:
        base = self.base.fingerprint()
        if base is None:
            return None
        arrays = (self.layers, self.neurons, self.gain, self.density, np.asarray(self.thresholds))
        return f"{base}|projection:{self.n_layers}x{self.d_ff}:{digest_arrays(*arrays)}"

    def describe(self) -> str:
        return (f"projection of [{self.base.describe_file()}] onto {self.name} "
                f"(layers {self.base.n_layers}->{self.n_layers}, "
                f"d_ff {self.base.d_ff}->{self.d_ff}, gain sigma {self.gain_sigma:g}, mean density "
                f"{self.density.mean():.2%}{' from ' + self.density_from if self.density_from else ''})")  # fmt: skip

    @staticmethod
    def onto(base: TraceSource, profile, rng: np.random.Generator, density: np.ndarray | None = None,
             **kw) -> ProjectedSource:  # fmt: skip
        """Project onto a :class:`~sim.models.profile.ModelProfile` (an MoE's neurons: every expert's, expert-major);
        default density = OPT-6.7B Table 6."""
        dens = opt_6_7b_density(profile.n_layers) if density is None else density
        neurons = profile.n_experts * profile.d_ff
        return ProjectedSource(base, profile.n_layers, neurons, dens, rng, name=profile.name, **kw)


def _linear_quantile_index(size: int, q: float) -> tuple[int, int, float]:
    """(previous index, next index, gamma) of np.quantile's default ("linear") method on ``size`` values."""
    virtual = (size - 1) * np.float64(q)  # numpy's virtual index of the linear method
    gamma = float(virtual - np.floor(virtual))
    if virtual >= size - 1:
        return size - 1, size - 1, gamma
    if virtual < 0:
        return 0, 0, gamma
    prev = int(np.floor(virtual))
    return prev, prev + 1, gamma


def _lerp(a: np.float32, b: np.float32, gamma: float) -> float:
    """numpy's quantile interpolation between neighbours a <= b (float32) with weight gamma (float64)."""
    diff = b - a  # float32, as numpy subtracts the neighbours in the array's dtype
    g = np.float64(gamma)
    return float(b - diff * (1 - g)) if g >= 0.5 else float(a + diff * g)
