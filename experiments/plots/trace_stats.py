"""Plot the tables of ``python -m sim trace stats TRACE --out DIR``: density per layer, aggregated neuron use
vs window size k (LLM in a Flash Fig. 4a) and cross-layer overlap vs distance (ActiveFlow), one line per rule.

Usage: python experiments/plots/trace_stats.py DIR  ->  DIR/trace_stats.png
"""

import json

import pandas as pd
from _common import plt, results_dir, save

folder = results_dir()
density, window = pd.read_csv(folder / "density.csv"), pd.read_csv(folder / "window.csv")
overlap = pd.read_csv(folder / "overlap.csv")
trace = next(iter(json.loads((folder / "trace_stats.json").read_text()).values()))["meta"]["trace"]
fig, (ax_d, ax_w, ax_o) = plt.subplots(1, 3, figsize=(13, 3.8))
for rule, part in density.groupby("rule", sort=False):
    ax_d.plot(part.layer, 100 * part.density, marker=".", label=rule)
for rule, part in window.groupby("rule", sort=False):
    ax_w.plot(part.k, 100 * part.use, marker="o", label=rule)
for (rule, kind), part in overlap.groupby(["rule", "kind"], sort=False):
    if kind == "ffn" or rule == overlap.rule.iloc[0]:  # channel overlap does not depend on the FFN rule
        line = ax_o.plot(
            part.distance, 100 * part.overlap, marker="o", label=f"{kind} ({rule})" if kind == "ffn" else kind
        )
        ax_o.plot(part.distance, 100 * part.baseline, ls=":", color=line[0].get_color())
ax_d.set(xlabel="layer", ylabel="active neurons (%)", title="density per layer")
ax_w.set(xlabel="window k (tokens)", ylabel="neurons used in last k tokens (%)", title="aggregated neuron use vs k")
ax_o.set(xlabel="layer distance d", ylabel="|S_l ∩ S_l+d| / |S_l| (%)", title="cross-layer overlap (dotted: chance)")
for ax in (ax_d, ax_w, ax_o):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.suptitle(f"{trace}", fontsize=8)
save(fig, folder / "trace_stats.png")
print(f"wrote {folder / 'trace_stats.png'}")
