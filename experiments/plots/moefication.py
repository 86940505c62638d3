"""Plot a ``kind: moefication`` run: what expert granularity costs, and how the MoEfied SmolLM2 routes.

(1) held-out perplexity vs the share of FFN neurons each token keeps: top-k single neurons against the learned
routers and the oracle routing at every expert count E; (2) per layer, for E=8 / top-2 (Mixtral's shape): the share
of consecutive tokens with the same first choice and with an expert in common, beside the Mixtral paper's Table 5
midpoints (papers.md; a check, nothing is fitted to them), and the hit rate of a speculative prefetch (layer l+1's
router on layer l's hidden state).

Usage: python experiments/plots/moefication.py RESULTS_DIR  ->  RESULTS_DIR/moefication.png
"""

from __future__ import annotations

import pandas as pd
from _common import finish, plt, results_dir

from sim.moe.routing import MIXTRAL_TABLE5


def main() -> None:
    folder = results_dir()
    df = pd.read_csv(folder / "moefication.csv")
    rates = pd.read_csv(folder / "routing_rates.csv")
    dense = df[df.rule == "dense"].iloc[0]
    fig, (ax_ppl, ax_rate) = plt.subplots(1, 2, figsize=(10, 3.8))
    neurons = df[df.rule == "neuron-topk"]
    ax_ppl.plot(100 * neurons.kept, neurons.ppl, marker="o", color="black", label="top-k single neurons")
    moe = df[df.rule.str.startswith("moe")]
    colour = {e: f"C{2 + i}" for i, e in enumerate(sorted(moe.experts.unique()))}  # one colour per E
    for (rule, experts), part in moe.groupby(["rule", "experts"]):
        ls = "-" if rule == "moe-router" else ":"
        ax_ppl.plot(
            100 * part.kept,
            part.ppl,
            marker="s",
            ls=ls,
            color=colour[experts],
            label=f"{rule.removeprefix('moe-')} routing, E={int(experts)}",
        )
    ax_ppl.axhline(dense.ppl, color="grey", ls="--", lw=1, label=f"dense {dense.ppl:.1f}")
    ax_ppl.set(xlabel="FFN neurons kept per token (%)", ylabel="held-out perplexity", yscale="log",
               title="MoEfied SmolLM2: expert granularity")  # fmt: skip
    shape = rates[(rates.experts == 8) & (rates.top_k == 2)]
    if len(shape) == 0:  # another E / k: the first routing written
        shape = rates[(rates.experts == rates.experts.iloc[0]) & (rates.top_k == rates.top_k.iloc[0])]
    e, k = int(shape.experts.iloc[0]), int(shape.top_k.iloc[0])
    ax_rate.plot(shape.layer, 100 * shape.same_first, marker=".", label="same first choice")
    ax_rate.plot(shape.layer, 100 * shape["common"], marker=".", label="an expert in common")
    ax_rate.plot(shape.layer, 100 * shape.prefetch_hit_rate, marker=".", label="prefetch hit rate")
    last = int(shape.layer.max())
    for i, (layer, (first, common)) in enumerate(sorted(MIXTRAL_TABLE5.items())):
        at = layer * last / max(MIXTRAL_TABLE5)  # Mixtral's 32 layers onto these
        ax_rate.scatter([at, at], [100 * first, 100 * common], color=["C0", "C1"], marker="x", s=60,
                        label="Mixtral Table 5 (check)" if i == 0 else None)  # fmt: skip
    ax_rate.set(xlabel="layer", ylabel="% of consecutive tokens / of routed experts", ylim=(0, 101),
                title=f"routing of the learned routers, E={e}, top-{k}")  # fmt: skip
    finish(fig, (ax_ppl, ax_rate), folder / "moefication.png", legend_size=7)


if __name__ == "__main__":
    main()
