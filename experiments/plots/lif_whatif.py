"""What-if plots for the LLM in a Flash knobs (experiments/lif_whatif_*.yaml): three panels against the knob.

x axis: the first ``sweep.<path>`` column of summary.csv (the swept value); else, for cases named
``<group>,<point>``, the DRAM budget if it varies (else the point); else the case names. Lines: one per group
of cases (the case name without the swept part or point, e.g. ``opt-all``, ``all,bundling=none``, ``hybrid``).
Panels: (1) mean per-token latency: total (thick), I/O, memory management, compute; (2) flash GB read per
token, flash throughput (GB/s), DRAM GB allocated and (where it differs) in use; (3) from tokens.parquet, the
FFN fraction predicted, read fresh and resident per token (resident vs k with an oracle predictor is LLM in a
Flash Fig. 4a) and, where a predictor ran, its false-negative rate.

Usage: python experiments/plots/lif_whatif.py RESULTS_DIR  ->  RESULTS_DIR/whatif.png
"""

import re

import pandas as pd
from _common import COLORS, plt, results_dir, save

from sim.config.profiles import load_model

folder = results_dir()
s = pd.read_csv(folder / "summary.csv")
s = s[s["status"] == "ok"].reset_index(drop=True)  # cases that did not fit their budget are rows without numbers
tokens = pd.read_parquet(folder / "tokens.parquet")
tokens = tokens[tokens["phase"] == "decode"]  # per decoded token (prefill steps are rows too)
sweep = [c for c in s.columns if c.startswith("sweep.")]
if sweep:
    leaf = sweep[0].rsplit(".", 1)[-1]
    s["x"], s["group"] = s[sweep[0]], [re.sub(rf",{re.escape(leaf)}=[^,]*", "", c) for c in s["case"]]
    xlabel = sweep[0].removeprefix("sweep.")
elif s["case"].str.contains(",").all():  # cases named "<group>,<point>" (e.g. lif_whatif_budget.yaml)
    s["group"] = s["case"].str.split(",").str[0]
    by_budget = s["dram_budget_GB"].nunique() > 1
    s["x"] = s["dram_budget_GB"] if by_budget else s["case"].str.split(",", n=1).str[1]
    xlabel = "DRAM budget (GB)" if by_budget else "case"
else:
    s["x"], s["group"], xlabel = s["case"], "", "case"
per_token = tokens.groupby("case", sort=False).mean(numeric_only=True)
fractions = ("neurons_predicted", "neurons_read", "neurons_resident", "predictor_fn")
s = s.join(per_token.reindex(columns=list(fractions)), on="case")
n_ffn = {m: load_model(m).n_layers * load_model(m).n_experts * load_model(m).d_ff for m in s["model"].unique()}
for col in fractions[:3]:
    s[col] = s[col] / s["model"].map(n_ffn)

fig, (ax_t, ax_b, ax_n) = plt.subplots(1, 3, figsize=(15, 4.3))
palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
for i, (group, g) in enumerate(s.groupby("group", sort=False)):
    tag = f"{group} " if group else ""
    ax_t.plot(g.x, g.total_ms, color="black" if not group else palette[i], lw=2.5, marker="o", label=f"{tag}total")
    for part, style in (("io", "-"), ("memmgmt", "--"), ("compute", ":")):
        color = COLORS[part] if not group else palette[i]
        ax_t.plot(g.x, g[f"{part}_ms"], ls=style, color=color, marker=".", label=f"{tag}{part}")
    if xlabel.startswith("DRAM budget") and (g.policy == "llm_in_flash").all():  # the fit boundary
        ax_t.axvline(g.dram_GB.min(), color=palette[i], lw=0.8, ls=":")
        label = f" {group} fits from {g.dram_GB.min():.2f} GB"
        ax_t.text(g.dram_GB.min(), 0.5, label, fontsize=7, rotation=90, transform=ax_t.get_xaxis_transform())
    ax_b.plot(g.x, g.flash_GB_per_token, marker="o", color=palette[i], label=f"{tag}flash GB/token")
    ax_b.plot(g.x, g.dram_GB, marker="s", ls="--", color=palette[i], label=f"{tag}DRAM GB allocated")
    if "dram_used_GB" in g and (g.dram_used_GB < g.dram_GB).any():
        ax_b.plot(g.x, g.dram_used_GB, marker="s", ls="-.", mfc="none", color=palette[i], label=f"{tag}DRAM GB in use")
    ax_b.plot(g.x, g.flash_throughput_GBps, marker="^", ls=":", color=palette[i], label=f"{tag}flash GB/s")
    for col, style in zip(fractions, ("-", "--", ":", "-."), strict=True):
        if g[col].notna().any():
            ax_n.plot(
                g.x,
                100 * g[col],
                ls=style,
                marker=".",
                color=palette[i],
                label=f"{tag}{col[8:] if col.startswith('neurons_') else 'predictor FN rate'}",
            )
ax_t.set(yscale="log", xlabel=xlabel, ylabel="ms per token (mean)", title="latency")
ax_b.set(yscale="log", xlabel=xlabel, ylabel="GB", title="flash GB/token, GB/s; DRAM GB")
ax_n.set(xlabel=xlabel, ylabel="% of FFN neurons (FN: % of active)", title="neurons per token (resident: Fig. 4a)")
for ax in (ax_t, ax_b, ax_n):
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    ax.tick_params(axis="x", rotation=30 if s["x"].dtype == object else 0, labelsize=7)
fig.suptitle(f"{', '.join(s['model'].unique())} on {', '.join(s['hardware'].unique())}", fontsize=9)
save(fig, folder / "whatif.png")
