"""ActiveFlow's activation statistics, measured on a real trace's input channels (``mlp_in``: the RMS-normed input
of SmolLM2's gate and up projections, every layer, every token).

For sparsity ``sp`` a token's *active channels* at a layer are the top-k = round((1 - sp) d) channels by |x|
(ActiveFlow's "active weights" of a non-ReLU model: the columns of W that meet the largest inputs).

- :func:`cross_layer`: per layer distance delta, the cosine similarity of the inputs of layers n and n + delta and
  the precision of predicting layer n + delta's active set by layer n's (equal sizes: precision = recall), over
  every token and every layer n >= ``from_layer`` (ActiveFlow Fig. 4a measures adjacent layers from layer 3 on).
- :func:`cache_hit_rates`: a per-layer cache of ``capacity`` (fraction of the channels) in front of the active
  sets of a stream of tokens. ``lfu`` keeps per-layer use counters and admits a channel when its count exceeds the
  coldest cached one's (ActiveFlow's contextual cache), ``lru`` evicts the least recently used. Context level: the
  cache starts cold at each context and warms on its own tokens (both caches are :mod:`sim.cache`'s, the ones an
  llm_in_flash run can keep its neurons in). Task level: the cache is filled with the channels
  most often active over the *other* contexts of the same task and stays fixed (a hot set learnt offline).

These are inputs of the ActiveFlow policy for any model shape it times (sim/policies/activeflow.py): the
statistics of a real model's channels applied to another's -- said wherever they are used.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from sim.cache import LFUCache, LRUCache, RowCache
from sim.lif.bits import pack_rows, row_counts
from sim.traces.format import TraceReader


@functools.lru_cache(maxsize=8)
def trace_inputs(trace: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mlp_in [T, L, d] float32, context id [T], task id [T]) of a trace."""
    with TraceReader(trace) as reader:
        return reader.read("mlp_in"), reader.read("context_id"), reader.read("task_id")


def active_sets(x: np.ndarray, sp: float) -> np.ndarray:
    """[T, L, d] bool: the top-k channels by |x| per token and layer, k = round((1 - sp) d)."""
    d = x.shape[-1]
    k = max(1, int(round((1.0 - sp) * d)))
    top = np.argpartition(-np.abs(x), k - 1, axis=-1)[..., :k]
    mask = np.zeros(x.shape, bool)
    np.put_along_axis(mask, top, True, axis=-1)
    return mask


@functools.lru_cache(maxsize=64)
def cross_layer(trace: Path, sp: float, max_distance: int = 8, from_layer: int = 3) -> dict[int, tuple[float, float]]:
    """{delta: (mean cosine similarity, mean precision)} of layer n's input predicting layer n + delta's."""
    return cross_layer_of(trace_inputs(trace)[0], sp, max_distance, from_layer)


def cross_layer_of(x: np.ndarray, sp: float, max_distance: int = 8, from_layer: int = 3) -> dict:
    """:func:`cross_layer` of inputs x [T, L, c]."""
    active = active_sets(x, sp)
    L = x.shape[1]
    unit = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    out = {}
    for delta in range(1, max_distance + 1):
        src = slice(from_layer, L - delta)
        dst = slice(from_layer + delta, L)
        if from_layer >= L - delta:
            break
        cos = (unit[:, src] * unit[:, dst]).sum(-1)  # [T, pairs]
        hit = (active[:, src] & active[:, dst]).sum(-1) / active[:, dst].sum(-1)
        out[delta] = (float(cos.mean()), float(hit.mean()))
    return out


def _lfu(stream: np.ndarray, capacity: int) -> float:
    """Hit rate of a per-layer LFU-admission cache over ``stream`` [T, L, d] bool (needed channels per token)."""
    hits, needed = lfu_hits(stream, capacity)
    return float(hits.sum() / max(needed.sum(), 1))


def lfu_hits(stream: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """([T] channels found in the LFU cache, [T] channels needed) per token of ``stream`` [T, L, d]: the
    :class:`sim.cache.LFUCache` an llm_in_flash run can use as its window (``cache: lfu``)."""
    return _hits(LFUCache(stream.shape[1], stream.shape[2], capacity), stream)


def _lru(stream: np.ndarray, capacity: int) -> float:
    hits, needed = lru_hits(stream, capacity)
    return float(hits.sum() / max(needed.sum(), 1))


def lru_hits(stream: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`lfu_hits` for :class:`sim.cache.LRUCache`."""
    return _hits(LRUCache(stream.shape[1], stream.shape[2], capacity), stream)


def _hits(cache: RowCache, stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hits, needed = np.zeros(len(stream), np.int64), np.zeros(len(stream), np.int64)
    for t, need in enumerate(stream):  # [L, d] per token
        step = cache.step_bits(pack_rows(need))
        needed[t] = int(need.sum())
        hits[t] = needed[t] - int(row_counts(step.read_bits).sum())
    return hits, needed


@functools.lru_cache(maxsize=64)
def cache_hit_rates(trace: Path, sp: float, capacity: float) -> dict[str, float]:
    """Hit rates of the active channels: ``lfu_context``, ``lru_context`` (cold start per context, warmed on it)
    and ``lfu_task`` (the task's hot set from its other contexts), averaged over contexts (token-weighted)."""
    x, context, task = trace_inputs(trace)
    return cache_rates_of(x, context, task, sp, capacity)


def cache_rates_of(x: np.ndarray, context: np.ndarray, task: np.ndarray, sp: float, capacity: float) -> dict:
    """:func:`cache_hit_rates` of inputs x [T, L, c] with their context and task ids [T]."""
    active = active_sets(x, sp)
    d = x.shape[-1]
    cap = int(round(capacity * d))
    rates: dict[str, list[tuple[float, int]]] = {"lfu_context": [], "lru_context": [], "lfu_task": []}
    for c in np.unique(context):
        rows = context == c
        stream = active[rows]
        rates["lfu_context"].append((_lfu(stream, cap), int(rows.sum())))
        rates["lru_context"].append((_lru(stream, cap), int(rows.sum())))
        others = (task == task[rows][0]) & ~rows
        if others.any() and cap:
            freq = active[others].sum(0)  # [L, d]
            hot = np.zeros_like(freq, dtype=bool)
            np.put_along_axis(hot, np.argpartition(-freq, cap - 1, axis=1)[:, :cap], True, axis=1)
            rates["lfu_task"].append((float((stream & hot).sum() / stream.sum()), int(rows.sum())))
    return {k: sum(r * n for r, n in v) / sum(n for _, n in v) for k, v in rates.items() if v}
