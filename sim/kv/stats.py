"""KV statistics drawn from a real trace, for shapes and contexts the numpy model cannot run.

:func:`mean_sample_probability` averages MagicPIG's u(theta) (:func:`sim.kv.lsh.sample_probability`) over the real
(query, key) angles of a trace with ``q`` and ``k`` fields (``traces/smollm2-135m-qk.trace``: SmolLM2-135M after
RoPE): every causal pair of every context, head and layer outside the sinks and the exact window. The simulator
charges that fraction of the keys outside sinks + window as sampled by MagicPIG on any model it times -- labelled
as drawn from that trace. Its contexts are 80 tokens: the pairs at least 64 back are near ones, so this share
overstates what long contexts sample (a 2K-token run samples 0.4% at K = 10, L = 150 against 2.0% here).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from sim.kv import lsh
from sim.traces.format import TraceReader


@functools.lru_cache(maxsize=64)
def mean_sample_probability(
    trace: Path, K: int, L: int, sinks: int, window: int = 0, skip_layers: tuple[int, ...] = ()
) -> float:
    """Mean u(theta) over the causal (q, k) pairs of the trace that MagicPIG samples: past the first ``sinks`` keys
    of each context and at least ``window`` positions back (the sinks and the window are attended exactly)."""
    with TraceReader(trace) as reader:
        q, k = reader.read("q"), reader.read("k")  # [T, layers, H, hd], [T, layers, KV, hd]
        context = reader.read("context_id")  # [T]
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    group = q.shape[2] // k.shape[2]
    total = count = 0.0
    for c in np.unique(context):
        rows = np.flatnonzero(context == c)
        back = np.arange(len(rows))[:, None] - np.arange(len(rows))[None, :]  # [i, t]: how far back key t lies
        pairs = back >= max(window, 0)  # causal, outside the exact window
        pairs[:, :sinks] = False
        for layer in (l for l in range(q.shape[1]) if l not in skip_layers):
            qc, kc = q[rows, layer], k[rows, layer]  # [n, H, hd], [n, KV, hd]
            for h in range(q.shape[2]):
                u = lsh.sample_probability(qc[:, h] @ kc[:, h // group].T, K, L)  # [n, n]
                total += float(u[pairs].sum())
                count += float(pairs.sum())
    return total / count
