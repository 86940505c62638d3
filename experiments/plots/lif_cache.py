"""Row cache policy at equal DRAM (experiments/lif_whatif_cache.yaml): flash bytes and latency per token vs the
window size k whose rows every cache gets, one line per cache (window, lfu, lru), one row of panels per model.

Cases are named ``<model>-<cache>`` and swept over ``policy.window_k``. Writes RESULTS_DIR/cache.png and
RESULTS_DIR/cache.csv (model, cache, k, flash GB / token, total / io / memmgmt ms, and each cache's flash bytes
relative to the window's at the same k).

Usage: python experiments/plots/lif_cache.py RESULTS_DIR
"""

import pandas as pd
from _common import finish, plt, results_dir

folder = results_dir()
s = pd.read_csv(folder / "summary.csv")
s = s[s["status"] == "ok"].copy()
name = s["case"].str.split(",").str[0]
s["model"], s["cache"] = name.str.rsplit("-", n=1).str[0], name.str.rsplit("-", n=1).str[1]
s["k"] = s["sweep.policy.window_k"]
window = s[s["cache"] == "window"].set_index(["model", "k"])["flash_GB_per_token"]
s["flash_vs_window"] = s["flash_GB_per_token"] / window.reindex(list(zip(s["model"], s["k"], strict=True))).to_numpy()
table = s[["model", "cache", "k", "flash_GB_per_token", "flash_vs_window", "total_ms", "io_ms", "memmgmt_ms"]]
table.to_csv(folder / "cache.csv", index=False)
print(f"wrote {folder / 'cache.csv'}")

models = list(dict.fromkeys(s["model"]))
fig, axes = plt.subplots(len(models), 2, figsize=(10, 3.4 * len(models)), squeeze=False)
for row, model in zip(axes, models, strict=True):
    for i, (cache, rows) in enumerate(s[s["model"] == model].groupby("cache", sort=False)):
        color = f"C{i}"
        row[0].plot(rows["k"], rows["flash_GB_per_token"] * 1e3, marker="o", color=color, label=cache)
        row[1].plot(rows["k"], rows["total_ms"], marker="o", color=color, label=f"{cache} total")
        row[1].plot(rows["k"], rows["io_ms"], ls="--", color=color, label=f"{cache} I/O")
    row[0].set(title=f"{model}: flash read per token", xlabel="rows of a window of k tokens", ylabel="MB / token")
    row[1].set(title=f"{model}: latency per token", xlabel="rows of a window of k tokens", ylabel="ms / token")
finish(fig, axes.ravel(), folder / "cache.png")
