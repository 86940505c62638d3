"""Decode latency and throughput vs context length (a sweep over ``context_tokens``; cases named
``<placement>,b=<batch>``). A line ends where its KV cache stops fitting (the does_not_fit rows of summary.csv,
marked with an x at the last context that failed).

Usage: python experiments/plots/kv_context.py RESULTS_DIR  ->  RESULTS_DIR/kv_context.png
"""

import pandas as pd
from _common import plt, results_dir, save

folder = results_dir()
s = pd.read_csv(folder / "summary.csv")
s["series"] = s["case"].str.split(",").str[:2].str.join(",")
s["context"] = s["sweep.context_tokens"]
fig, (ax_ms, ax_tps) = plt.subplots(1, 2, figsize=(12, 4.4))
palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
placements = list(dict.fromkeys(s["series"].str.split(",").str[0]))  # one colour per placement, a dash per batch
batches = list(dict.fromkeys(s["series"].str.split(",").str[1]))
for series, part in s.groupby("series", sort=False):
    ok = part[part.status == "ok"].sort_values("context")
    placement, batch = series.split(",")
    color = palette[placements.index(placement) % len(palette)]
    style = dict(marker="o", color=color, ls=["-", "--", ":", "-."][batches.index(batch) % 4])
    ax_ms.plot(ok.context, ok.total_ms, label=series, **style)
    ax_tps.plot(ok.context, ok.system_tokens_per_s, label=series, **style)
    failed = part[part.status != "ok"]
    if len(failed):
        first = failed.context.min()
        for ax in (ax_ms, ax_tps):
            ax.scatter(
                [first],
                [
                    ax.get_ylim()[0]
                    if len(ok) == 0
                    else ok.iloc[-1]["total_ms" if ax is ax_ms else "system_tokens_per_s"]
                ],
                marker="x",
                s=80,
                color=style["color"],
            )
ax_ms.set(xscale="log", yscale="log", xlabel="context tokens", ylabel="ms per decode step", title="latency")
ax_tps.set(xscale="log", yscale="log", xlabel="context tokens", ylabel="decode tokens/s (batch)", title="throughput")
for ax in (ax_ms, ax_tps):
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
fig.suptitle(f"{s.model[0]} on {s.hardware[0]}: KV cache in VRAM vs on the CPU (x: the next context does not fit)",
             fontsize=9)  # fmt: skip
save(fig, folder / "kv_context.png")
