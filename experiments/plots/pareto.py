"""A policy search's results (a sweep over ``dram_budget`` of several configurations): every point that fits as
DRAM allocated vs tokens/s, the Pareto front (no other point is both smaller and faster) joined by a line, and
``best_per_budget.csv``: for each budget the fastest configuration that fits it (and how much faster than the
second best).

After a successive-halving search (``search:``), only the cases that ran its last rung are compared (the others'
tokens/s come from shorter runs); the rest are drawn faded and counted in best_per_budget.csv.

Usage: python experiments/plots/pareto.py RESULTS_DIR  ->  pareto.png, best_per_budget.csv
"""

import pandas as pd
from _common import plt, results_dir, save

folder = results_dir()
every = pd.read_csv(folder / "summary.csv")
every["config"] = every["case"].str.replace(r",dram_budget=[^,]*", "", regex=True)
searched = "search_survived" in every.columns
finalists = every[every["search_survived"].astype(bool)] if searched else every
dropped = every[(every["status"] == "ok") & ~every.index.isin(finalists.index)]
ok = finalists[finalists["status"] == "ok"].copy()
ok["dram_alloc_GB"] = ok["dram_GB"]
front, best = [], float("-inf")
for _, row in ok.sort_values(["dram_alloc_GB", "tokens_per_s"], ascending=[True, False]).iterrows():
    if row.tokens_per_s > best:  # faster than everything that needs no more DRAM
        front.append(row)
        best = row.tokens_per_s
front = pd.DataFrame(front)
fig, ax = plt.subplots(figsize=(8, 5))
for config, part in ok.groupby("config", sort=False):
    ax.scatter(part.dram_alloc_GB, part.tokens_per_s, s=20, label=config)
if len(dropped):
    ax.scatter(dropped["dram_GB"], dropped.tokens_per_s, s=8, color="grey", alpha=0.3,
               label="dropped by the search (a shorter run)")  # fmt: skip
ax.plot(front.dram_alloc_GB, front.tokens_per_s, color="black", lw=1.5, drawstyle="steps-post", label="Pareto front")
ax.set(xlabel="DRAM allocated (GB)", ylabel="tokens/s (batch 1)", yscale="log",
       title=f"{ok.model.iloc[0]} on {ok.hardware.iloc[0]}: every configuration that fits")  # fmt: skip
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=7)
save(fig, folder / "pareto.png")
rows = []
for budget, part in every.groupby("sweep.dram_budget"):
    fits = part[(part.status == "ok") & part.index.isin(finalists.index)].sort_values("tokens_per_s", ascending=False)
    if len(fits) == 0:
        rows.append({"dram_budget_GB": budget / 1e9, "fastest": "nothing fits", "tokens_per_s": None})
        continue
    top = fits.iloc[0]
    second = fits.iloc[1].tokens_per_s if len(fits) > 1 else None
    rows.append({"dram_budget_GB": budget / 1e9, "fastest": top.config, "tokens_per_s": round(top.tokens_per_s, 4),
                 "dram_GB": round(top.dram_GB, 3), "vs_second_pct": None if second is None else
                 round(100 * (top.tokens_per_s / second - 1), 1), "configs_that_fit": len(fits),
                 "configs_searched": int((every["sweep.dram_budget"] == budget).sum())})  # fmt: skip
pd.DataFrame(rows).to_csv(folder / "best_per_budget.csv", index=False)
