"""Published vs simulated for the LLM in a Flash tables (comparison.csv): one panel per metric, log scale
where rows span more than 20x (I/O: 87 ms to 2196 ms), each simulated bar labelled with its % error; an
error beyond the reproduction target (15% for total_ms, the Table 3 target; 10% for every other metric,
the Table 2 target) is drawn in red.

Usage: python experiments/plots/lif_comparison.py RESULTS_DIR  ->  RESULTS_DIR/comparison.png
"""

import pandas as pd
from _common import plt, results_dir, save

TARGET_PCT = {"total_ms": 15.0}  # default 10.0
folder = results_dir()
c = pd.read_csv(folder / "comparison.csv")
metrics = list(dict.fromkeys(c["metric"]))
fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 3.4 * len(metrics)), 4.2), squeeze=False)
for ax, metric in zip(axes[0], metrics, strict=True):
    rows = c[(c["metric"] == metric) & (c["published"] > 0)].reset_index(drop=True)
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], rows["published"], width=0.4, label="published", color="#7f7f7f")
    ax.bar([i + 0.2 for i in x], rows["simulated"], width=0.4, label="simulated", color="#1f77b4")
    target = TARGET_PCT.get(metric, 10.0)
    for i, (sim, err) in enumerate(zip(rows["simulated"], rows["error_pct"], strict=True)):
        color = "#d62728" if abs(err) > target else "black"
        ax.text(i + 0.2, sim, f"{err:+.1f}%", ha="center", va="bottom", fontsize=7, color=color)
    if rows["published"].max() > 20 * rows["published"].min():  # wide range (I/O ms, GB): log scale
        ax.set_yscale("log")
    ax.set_xticks(list(x), rows["case"], rotation=30, ha="right", fontsize=7)
    ax.set_title(f"{metric} (target ±{target:g}%)", fontsize=9)
    ax.grid(axis="y", alpha=0.3, which="both")
axes[0][0].legend(fontsize=8)
fig.suptitle("published vs simulated (red: error beyond the target)", fontsize=9)
save(fig, folder / "comparison.png")
