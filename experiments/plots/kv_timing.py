"""Decode throughput of the KV-cache placements and policies (cases named ``<setup>,<policy>,b=<batch>``): one
panel per setup, a bar per case (system tokens/s over the batch, coloured by policy), labelled with the step
latency and the largest batch whose KV cache fits where the case keeps it.

Usage: python experiments/plots/kv_timing.py RESULTS_DIR  ->  RESULTS_DIR/kv_timing.png
"""

from _common import plt, results_dir, save, summary

folder = results_dir()
s = summary(folder)
s["setup"] = s["case"].str.split(",").str[0]
s["label"] = s["case"].str.split(",", n=1).str[1].str.replace(",", "\n")
s["family"] = s["label"].str.split("\n").str[0]
palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
color = {f: palette[i % len(palette)] for i, f in enumerate(dict.fromkeys(s["family"]))}
setups = list(dict.fromkeys(s["setup"]))
widths = [max(2, (s.setup == x).sum()) for x in setups]
fig, axes = plt.subplots(1, len(setups), figsize=(1.3 * sum(widths) + 1, 4.8), squeeze=False,
                         gridspec_kw={"width_ratios": widths})  # fmt: skip
for ax, setup in zip(axes[0], setups, strict=True):
    part = s[s.setup == setup].reset_index(drop=True)
    ax.bar(part["label"], part["system_tokens_per_s"], color=[color[f] for f in part["family"]])
    for x, row in part.iterrows():
        text = f"{row.total_ms:.3g} ms\nfits {int(row.kv_max_batch)}"
        ax.text(x, row.system_tokens_per_s, text, ha="center", va="bottom", fontsize=6)
    ax.set_ylim(0, 1.3 * part["system_tokens_per_s"].max())
    ax.set_title(f"{setup}\n{part.model[0]} on {part.hardware[0]}", fontsize=8)
    ax.tick_params(axis="x", labelsize=6)
    ax.grid(axis="y", alpha=0.3)
axes[0][0].set_ylabel("decode tokens/s (whole batch)")
fig.suptitle("KV cache on GPU vs CPU: throughput per placement, policy and batch (label: ms per step; requests "
             "whose KV cache fits)", fontsize=9)  # fmt: skip
save(fig, folder / "kv_timing.png")
