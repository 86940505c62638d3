"""Plot a ``kind: activeflow_stats`` run: for the input of every op of the real SmolLM2, (1) how well layer n's
active channels predict layer n + delta's (precision; cosine similarity dashed), (2) the contextual cache's hit
rate per cache size (LFU / LRU warmed on the context, LFU from the task's other contexts), (3) the context-level
hit rate against the tokens the context has seen.

Usage: python experiments/plots/activeflow_stats.py RESULTS_DIR  ->  RESULTS_DIR/activeflow_stats.png
"""

from __future__ import annotations

import pandas as pd
from _common import finish, plt, results_dir


def main() -> None:
    folder = results_dir()
    cross = pd.read_csv(folder / "cross_layer.csv")
    cache = pd.read_csv(folder / "cache.csv")
    curve = pd.read_csv(folder / "context_curve.csv")
    fig, (ax_x, ax_c, ax_t) = plt.subplots(1, 3, figsize=(14, 4))
    for i, (name, part) in enumerate(cross.groupby("input", sort=False)):
        label = f"{name} ({part.ops.iloc[0]})"
        ax_x.plot(part.distance, 100 * part.precision, marker="o", color=f"C{i}", label=label)
        ax_x.plot(part.distance, 100 * part.cosine, ls="--", color=f"C{i}", lw=1)
    ax_x.set(xlabel="layer distance", ylabel="% (precision; cosine dashed)", ylim=(-5, 100),
             title="cross-layer prediction of active channels")  # fmt: skip
    for i, ((name, level), part) in enumerate(cache.groupby(["input", "cache"], sort=False)):
        ls = {"lfu_context": "-", "lru_context": ":", "lfu_task": "--"}[level]
        ax_c.plot(100 * part.cache_fraction, 100 * part.hit_rate, marker=".", ls=ls, color=f"C{i // 3}",
                  label=f"{name} {level}")  # fmt: skip
    ax_c.set(xlabel="cache size (% of an input's channels)", ylabel="hit rate (%)", title="contextual cache")
    for i, ((name, policy), part) in enumerate(curve.groupby(["input", "policy"], sort=False)):
        ax_t.plot(part.n_tokens, 100 * part.hit_rate, ls="-" if policy == "lfu" else ":", color=f"C{i // 2}",
                  label=f"{name} {policy}")  # fmt: skip
    ax_t.set(xlabel="tokens of the context seen", ylabel="hit rate so far (%)",
             title="context-level hit rate vs context length")  # fmt: skip
    finish(fig, (ax_x, ax_c, ax_t), folder / "activeflow_stats.png", legend_size=6)


if __name__ == "__main__":
    main()
