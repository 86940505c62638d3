"""Simulated vs published numbers (comparison.csv): grouped bars per metric with the % error."""

import pandas as pd
from _common import plt, results_dir, save

folder = results_dir()
c = pd.read_csv(folder / "comparison.csv")
metrics = list(dict.fromkeys(c["metric"]))
fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 3.2 * len(metrics)), 4), squeeze=False)
for ax, metric in zip(axes[0], metrics, strict=True):
    rows = c[c["metric"] == metric]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], rows["published"], width=0.4, label="published", color="#7f7f7f")
    ax.bar([i + 0.2 for i in x], rows["simulated"], width=0.4, label="simulated", color="#1f77b4")
    for i, (sim, err) in enumerate(zip(rows["simulated"], rows["error_pct"], strict=True)):
        ax.text(i + 0.2, sim, f"{err:+.1f}%", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(x), rows["case"], rotation=30, fontsize=7)
    ax.set_title(metric, fontsize=9)
axes[0][0].legend(fontsize=8)
save(fig, folder / "comparison.png")
