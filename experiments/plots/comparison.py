"""Published vs simulated (comparison.csv): one panel per metric, each simulated bar labelled with its % error.

Calibrated rows (a parameter was tuned to that published number) are hatched and labelled "cal": they show the
calibration held, not that the simulator predicts them. An error beyond the reproduction target (15% for
total_ms, 10% for every other metric) is drawn in red. Panels whose rows span more than 20x use a log scale.

Usage: python experiments/plots/comparison.py RESULTS_DIR  ->  RESULTS_DIR/comparison.png
"""

import pandas as pd
from _common import plt, results_dir, save

TARGET_PCT = {"total_ms": 15.0}  # default 10.0
folder = results_dir()
c = pd.read_csv(folder / "comparison.csv")
metrics = list(dict.fromkeys(c["metric"]))
fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 3.4 * len(metrics)), 4.4), squeeze=False)
for ax, metric in zip(axes[0], metrics, strict=True):
    rows = c[(c["metric"] == metric) & (c["published"] > 0)].reset_index(drop=True)
    x = range(len(rows))
    calibrated = rows["role"] == "calibrated"
    hatch = ["//" if cal else "" for cal in calibrated]
    ax.bar([i - 0.2 for i in x], rows["published"], width=0.4, color="#7f7f7f")
    ax.bar(
        [i + 0.2 for i in x],
        rows["simulated"],
        width=0.4,
        label="simulated",
        color="#1f77b4",
        hatch=hatch,
        edgecolor="white",
    )
    target = TARGET_PCT.get(metric, 10.0)
    for i, (sim, err, cal) in enumerate(zip(rows["simulated"], rows["error_pct"], calibrated, strict=True)):
        color = "#d62728" if abs(err) > target else "black"
        ax.text(
            i + 0.2, sim, f"{err:+.1f}%" + ("\ncal" if cal else ""), ha="center", va="bottom", fontsize=7, color=color
        )
    if len(rows) and rows["published"].max() > 20 * rows["published"].min():  # wide range (I/O ms, GB): log scale
        ax.set_yscale("log")
    ax.set_xticks(list(x), rows["case"], rotation=30, ha="right", fontsize=7)
    ax.set_title(f"{metric} (target ±{target:g}%)", fontsize=9)
    ax.grid(axis="y", alpha=0.3, which="both")
legend = {
    "published": plt.Rectangle((0, 0), 1, 1, color="#7f7f7f"),
    "simulated, predicted": plt.Rectangle((0, 0), 1, 1, color="#1f77b4"),
    "simulated, calibrated": plt.Rectangle((0, 0), 1, 1, facecolor="#1f77b4", hatch="//", edgecolor="white"),
}
axes[0][-1].legend(legend.values(), legend.keys(), fontsize=7, loc="lower right", framealpha=0.9)
fig.suptitle("published vs simulated (hatched / cal: tuned to that number; red: error beyond the target)", fontsize=9)
save(fig, folder / "comparison.png")
