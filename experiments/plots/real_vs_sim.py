"""Simulated vs measured per case and component (``python -m sim execute`` results): paired bars of ms/token,
the measured run's min..max as a whisker, the % error above each pair, components outside the target in red.

Usage: python experiments/plots/real_vs_sim.py RESULTS_DIR  ->  real_vs_sim.png
"""

import numpy as np
import pandas as pd
from _common import plt, results_dir, save

folder = results_dir()
table = pd.read_csv(folder / "comparison.csv")
cases = list(dict.fromkeys(table.case))
components = ["total", "io", "memmgmt", "compute"]
ncols = min(4, len(cases))
nrows = -(-len(cases) // ncols)
fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), squeeze=False)
for ax in axes.flat[len(cases) :]:
    ax.set_visible(False)
for ax, case in zip(axes.flat, cases, strict=False):
    part = table[table.case == case].set_index("component").loc[components]
    x = np.arange(len(components))
    ax.bar(x - 0.2, part.simulated_ms, 0.4, label="simulated", color="#4c72b0")
    err = [part.measured_ms - part.measured_min_ms, part.measured_max_ms - part.measured_ms]
    ax.bar(x + 0.2, part.measured_ms, 0.4, yerr=err, capsize=3, label="measured", color="#dd8452")
    top = np.maximum(part.simulated_ms, part.measured_max_ms)
    for i, (e, ok) in enumerate(zip(part.error_pct, part.within_target, strict=True)):
        if np.isfinite(e):
            ax.annotate(f"{e:+.0f}%", (x[i], top.iloc[i]), ha="center", va="bottom", fontsize=8,
                        color="black" if ok else "red")  # fmt: skip
    ax.set_xticks(x, components)
    ax.set(title=case, ylabel="ms / token")
    ax.grid(axis="y", alpha=0.3)
axes[0][0].legend(fontsize=8)
fig.suptitle("Simulated (calibrated profile) vs measured on this machine; red: outside the 15% target", fontsize=10)
save(fig, folder / "real_vs_sim.png")
