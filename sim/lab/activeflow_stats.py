"""ActiveFlow's statistics for the input of every op of the real SmolLM2 (``kind: activeflow_stats``).

The committed trace holds only ``mlp_in`` (the input of gate and up); ActiveFlow predicts and caches the active
channels of every op. This runs the numpy model over corpus contexts (split ``trace``) and records, per layer, the
four inputs the ops read (through the backend's channel hook, which passes them on unchanged):

  attn_in -> q, k, v        o_in -> o        mlp_in -> gate, up        down_in -> down

and measures for each, with :mod:`sim.activeflow.stats`: cross-layer prediction (cosine similarity of layer n's
and n + delta's input, and the precision of layer n's top-k set for layer n + delta's, per distance); contextual
cache hit rates (LFU and LRU warmed on the context, LFU from the task's other contexts) per cache size; and the
context-level hit rate against how many tokens the context has seen (the cache starts cold at each context).
Writes ``cross_layer.csv``, ``cache.csv``, ``context_curve.csv``, ``config.yaml`` and ``about.md``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from sim.activeflow.stats import active_sets, cache_rates_of, cross_layer_of, lfu_hits, lru_hits
from sim.config.base import StrictModel, load_yaml, validate

INPUTS = {"attn_in": "q, k, v", "o_in": "o", "mlp_in": "gate, up", "down_in": "down"}


class ActiveflowStatsConfig(StrictModel):
    kind: Literal["activeflow_stats"] = "activeflow_stats"
    name: str = "activeflow_stats"
    description: str = ""
    model: str = "smollm2-135m"
    sparsity: float = Field(0.6, gt=0, lt=1, description="sp: the top (1 - sp) channels of an input are active")
    cache_fractions: list[float] = Field([0.1, 0.2, 0.3], min_length=1, description="cache size, share of channels")
    curve_cache_fraction: float = Field(0.2, gt=0, lt=1, description="cache size of the hit rate vs context curve")
    max_distance: int = Field(4, ge=1, le=16)
    tokens_per_context: int = Field(128, gt=1)
    contexts_per_task: int = Field(4, gt=1, description="at least 2: task-level caches learn from the others")


def capture_inputs(cfg, w, contexts: list[list[int]]) -> dict[str, np.ndarray]:
    """input name -> [T, L, c] float16 over the contexts' tokens, in order."""
    from sim.lab.accuracy import _run
    from sim.lab.kernels import Hooks

    seen: dict[str, list[list[np.ndarray]]] = {name: [[] for _ in range(cfg.n_layers)] for name in INPUTS}

    def record(layer: int, name: str, x: np.ndarray) -> np.ndarray:
        seen[name][layer].append(x.astype(np.float16))
        return x

    for ids in contexts:
        _run(cfg, w, ids, Hooks(channels=record))
    return {name: np.stack([np.concatenate(per) for per in layers], axis=1) for name, layers in seen.items()}


def context_curve(x: np.ndarray, context: np.ndarray, sp: float, capacity: float) -> pd.DataFrame:
    """Hit rate over the first n tokens of each context (cold cache at each context), n = 1 .. the context's
    length: rows (policy, n_tokens, hit_rate), pooled over contexts."""
    active = active_sets(x, sp)
    cap = int(round(capacity * x.shape[-1]))
    rows = []
    for policy, hits_of in (("lfu", lfu_hits), ("lru", lru_hits)):
        hits = needed = 0
        for c in np.unique(context):
            h, n = hits_of(active[context == c], cap)
            hits, needed = hits + np.cumsum(h), needed + np.cumsum(n)  # contexts of one length: same n
        rows += [
            {"policy": policy, "n_tokens": t + 1, "hit_rate": float(hits[t] / needed[t])} for t in range(len(hits))
        ]
    return pd.DataFrame(rows)


def run_activeflow_stats(path: str | Path, out: Path, log=print, progress: bool = True) -> Path:
    from sim.lab.accuracy import _texts
    from sim.lab.modelfile import load_named

    config = validate(ActiveflowStatsConfig, load_yaml(path), path)
    log = log if progress else (lambda *_: None)
    t0 = time.perf_counter()
    cfg, w, tok = load_named(config.model)
    texts = _texts("trace", config.contexts_per_task, config.tokens_per_context, tok)
    texts = [(name, ids) for name, ids in texts if len(ids) == config.tokens_per_context]  # equal lengths
    inputs = capture_inputs(cfg, w, [ids for _, ids in texts])
    tasks = list(dict.fromkeys(name.split("/")[0] for name, _ in texts))
    context = np.repeat(np.arange(len(texts)), config.tokens_per_context)
    task = np.repeat([tasks.index(name.split("/")[0]) for name, _ in texts], config.tokens_per_context)
    cross, cache, curves = [], [], []
    for name, x in inputs.items():
        x = x.astype(np.float32)
        for delta, (cos, precision) in cross_layer_of(x, config.sparsity, config.max_distance).items():
            cross.append({"input": name, "ops": INPUTS[name], "distance": delta, "cosine": cos, "precision": precision})
        for fraction in config.cache_fractions:
            rates = cache_rates_of(x, context, task, config.sparsity, fraction)
            cache += [{"input": name, "ops": INPUTS[name], "cache_fraction": fraction, "cache": level, "hit_rate": r}
                      for level, r in rates.items()]  # fmt: skip
        curve = context_curve(x, context, config.sparsity, config.curve_cache_fraction)
        curves.append(curve.assign(input=name, ops=INPUTS[name]))
        log(f"{name}: precision at distance 1 {cross[-config.max_distance]['precision']:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    pd.DataFrame(cross).to_csv(out / "cross_layer.csv", index=False)
    pd.DataFrame(cache).to_csv(out / "cache.csv", index=False)
    pd.concat(curves, ignore_index=True).to_csv(out / "context_curve.csv", index=False)
    names = ", ".join(name for name, _ in texts)
    (out / "about.md").write_text(
        f"# {config.name}\n\n{config.description}\n\nModel {config.model}, numpy backend; every op's input "
        f"recorded over {len(texts)} contexts x {config.tokens_per_context} tokens of the corpus `trace` split "
        f"({names}); sparsity {config.sparsity}. No trace file drives this experiment: it runs the numpy model "
        f"itself. Run time {time.perf_counter() - t0:.0f} s.\n"
    )
    return out / "cross_layer.csv"
