"""Statistics of activation masks: pure numpy functions on ``mask`` [T, L, F] (tokens of ONE context, layers,
neurons or channels). Streaming over a whole trace, context by context, is in :mod:`sim.traces.report`.

* :func:`window_use`           LLM in a Flash Fig. 4a: fraction of neurons active at least once in the last
                               k tokens, mean over positions t >= k-1 (full windows only, inside one context).
* :func:`cross_layer_overlap`  ActiveFlow: |S_l ∩ S_{l+d}| / |S_l| with neuron (or channel) index identity,
                               mean over tokens and layer pairs; ``baseline`` is what independent sets of the
                               same densities would give (|S_{l+d}| / F). For a dense model, FFN neuron i of
                               layer l and neuron i of layer l+d are unrelated (no shared index space), so
                               overlap above baseline can only come from the residual stream for *input
                               channels* (mlp_in / attn_in dims are the same d_model axis in every layer).
* :func:`persistence`          P(active at t | active at t-1) per layer.
* :func:`lfu_hit_rate`         hits of a static cache holding the C most-used neurons (by warm-up counts).
"""

from __future__ import annotations

import numpy as np

from sim.traces.sparsity import topk_mask


def window_use(mask: np.ndarray, ks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """mask [T, L, F] -> (use [K, L], n_positions [K]).

    use[j, l] = mean over t in [k-1, T) of |∪_{t-k<s<=t} S_{s,l}| / F, with k = ks[j]; 0 positions -> nan.
    """
    T, L, F = mask.shape
    csum = np.zeros((T + 1, L, F), dtype=np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=csum[1:])  # csum[t] = active count over tokens [0, t)
    use = np.full((len(ks), L), np.nan)
    n_pos = np.zeros(len(ks), dtype=np.int64)
    for j, k in enumerate(ks):
        if k > T:
            continue
        used = (csum[k:] - csum[:-k]) > 0  # [T-k+1, L, F]: window ending at t = k-1 .. T-1
        use[j] = used.mean(axis=(0, 2))
        n_pos[j] = T - k + 1
    return use, n_pos


def cross_layer_overlap(mask: np.ndarray, distances: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """mask [T, L, F] -> (overlap [D], baseline [D]) for each layer distance d (tokens with |S_l| = 0 skipped)."""
    T, L, F = mask.shape
    overlap, baseline = np.full(len(distances), np.nan), np.full(len(distances), np.nan)
    for j, d in enumerate(distances):
        if d >= L:
            continue
        a, b = mask[:, :-d], mask[:, d:]  # [T, L-d, F]
        size = a.sum(axis=-1)  # [T, L-d]
        both = (a & b).sum(axis=-1)
        ok = size > 0
        overlap[j] = (both[ok] / size[ok]).mean()
        baseline[j] = (b.sum(axis=-1)[ok] / F).mean()
    return overlap, baseline


def topk_channels(x: np.ndarray, density: float) -> np.ndarray:
    """x [T, L, D] (mlp_in / attn_in) -> mask [T, L, D] of the round(density * D) largest |x| per token."""
    return topk_mask(x, int(round(density * x.shape[-1])))


def persistence(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mask [T, L, F] -> (numerator [L], denominator [L]) of P(active at t | active at t-1)."""
    prev, cur = mask[:-1], mask[1:]
    return (prev & cur).sum(axis=(0, 2)).astype(np.float64), prev.sum(axis=(0, 2)).astype(np.float64)


def neuron_counts(mask: np.ndarray) -> np.ndarray:
    """mask [T, L, F] -> int64 [L, F] number of tokens each neuron is active."""
    return mask.sum(axis=0, dtype=np.int64)


def lfu_cache(counts: np.ndarray, capacity: int) -> np.ndarray:
    """counts [L, F] -> bool [L, F]: the ``capacity`` most-counted neurons per layer (ties: lower index)."""
    order = np.argsort(-counts, axis=-1, kind="stable")[:, :capacity]  # [L, C]
    cached = np.zeros(counts.shape, dtype=bool)
    np.put_along_axis(cached, order, True, axis=-1)
    return cached


def lfu_hit_rate(warm_counts: np.ndarray, eval_counts: np.ndarray, capacity: int) -> tuple[float, float]:
    """(hits, accesses): active neuron-token instances of the eval tokens (``eval_counts`` [L, F]) served by
    a static LFU cache of ``capacity`` neurons per layer filled from ``warm_counts`` [L, F]."""
    cached = lfu_cache(warm_counts, capacity)
    return float(eval_counts[cached].sum()), float(eval_counts.sum())
