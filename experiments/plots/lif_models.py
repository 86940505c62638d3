"""LLM in a Flash Table 3 for other models (experiments/lif_models.yaml): the simulated table and its bars.

Cases are named ``<model>[-<backend>],<method>[,<statistics>]``. Writes RESULTS_DIR/table3_models.csv (one row per
case: model, method, statistics, per-token I/O / memory management / compute / total ms, flash GB per token, DRAM
allocated and budget; cases that did not fit keep their row with the one-line reason) and table3_models.png (a
panel per model, stacked I/O / memory management / compute per method; an x where a case did not fit).

Usage: python experiments/plots/lif_models.py RESULTS_DIR
"""

import pandas as pd
from _common import COLORS, plt, results_dir, save

folder = results_dir()
s = pd.read_csv(folder / "summary.csv")
parts = s["case"].str.split(",", expand=True).reindex(columns=[0, 1, 2])
s["model"], s["method"], s["statistics"] = parts[0], parts[1], parts[2].fillna("")
s["label"] = s["method"] + s["statistics"].map(lambda v: f" ({v})" if v else "")
columns = ["model", "method", "statistics", "status", "io_ms", "memmgmt_ms", "compute_ms", "total_ms",
           "flash_GB_per_token", "dram_GB", "dram_budget_GB", "hardware", "processor", "error"]  # fmt: skip
table = s.reindex(columns=columns)
table.to_csv(folder / "table3_models.csv", index=False)
print(f"wrote {folder / 'table3_models.csv'}")

models = list(dict.fromkeys(s["model"]))
fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 4.2), squeeze=False)
for ax, model in zip(axes[0], models, strict=True):
    rows = s[s["model"] == model].reset_index(drop=True)
    bottom = pd.Series(0.0, index=rows.index)
    for part in ("io", "memmgmt", "compute"):
        values = rows[f"{part}_ms"].fillna(0.0)
        ax.bar(rows["label"], values, bottom=bottom, color=COLORS[part], label=part if model == models[0] else None)
        bottom += values
    for i, row in rows.iterrows():
        if row["status"] != "ok":
            ax.plot(i, 0, "kx", ms=10)
            ax.annotate("did not fit", (i, 0), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
        else:
            ax.annotate(f"{row['total_ms']:.0f}", (i, row["total_ms"]), textcoords="offset points", xytext=(0, 2),
                        ha="center", fontsize=7)  # fmt: skip
    ax.set_title(model, fontsize=9)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_ylabel("ms per token" if model == models[0] else "")
    ax.grid(alpha=0.3, axis="y")
axes[0][0].legend(fontsize=7)
fig.suptitle("Simulated per-token latency (predicted; OPT-6.7B's calibration only)", fontsize=10)
save(fig, folder / "table3_models.png")
print(f"wrote {folder / 'table3_models.png'}")
