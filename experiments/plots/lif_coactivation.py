"""Where co-activation bundling's flash bytes go: per case, the mean bytes read per token split into the needed
neurons, friends new to DRAM, and friends that were already resident (read for nothing); and the I/O time. Both
relative to the row-column case of the same model (labels give the absolute numbers), so models of any size share
one axis.

A co-activation bundle is a needed neuron plus its closest friend (two rows of equal size), so of the bytes read
half are needed, and of the friend half the share ``new friends / bundles`` was new: the rest was resident already.
Reads ``tokens.parquet`` (neurons_read = bundles read, neurons_loaded = rows new to DRAM) and config.resolved.yaml.
"""

import yaml
from _common import pd, plt, results_dir, save, summary

folder = results_dir()
s = summary(folder).set_index("case")
tokens = pd.read_parquet(folder / "tokens.parquet")
tokens = tokens[tokens["phase"] == "decode"].groupby("case")[["flash_bytes", "neurons_read", "neurons_loaded"]]
mean = tokens.mean()
cases = yaml.safe_load((folder / "config.resolved.yaml").read_text())["cases"]
parts = {"needed": [], "friend, new": [], "friend, already resident": []}
for case in s.index:
    gb = mean.loc[case, "flash_bytes"] / 1e9
    read, loaded = mean.loc[case, "neurons_read"], mean.loc[case, "neurons_loaded"]
    if cases[case]["layout"]["name"] == "coactivation" and read > 0:
        new_share = (loaded - read) / read  # of the friends read, the share that was not yet resident
        parts["needed"].append(gb / 2)
        parts["friend, new"].append(gb / 2 * new_share)
        parts["friend, already resident"].append(gb / 2 * (1 - new_share))
    else:
        parts["needed"].append(gb)
        parts["friend, new"].append(0.0)
        parts["friend, already resident"].append(0.0)

base = {}  # model -> its row-column case (the reference of the relative scale)
for case in s.index:
    if cases[case]["layout"]["name"] == "bundled":
        base.setdefault(s.loc[case, "model"], case)
ref = [base.get(s.loc[case, "model"], case) for case in s.index]
ref_gb = [mean.loc[r, "flash_bytes"] / 1e9 for r in ref]
ref_io = [s.loc[r, "io_ms"] for r in ref]

fig, (ax_b, ax_t) = plt.subplots(1, 2, figsize=(10, 4.4))
bottom = [0.0] * len(s)
for (label, values), color in zip(parts.items(), ("#1f77b4", "#2ca02c", "#d62728"), strict=True):
    rel = [v / r for v, r in zip(values, ref_gb, strict=True)]
    ax_b.bar(s.index, rel, bottom=bottom, color=color, label=label)
    bottom = [b + v for b, v in zip(bottom, rel, strict=True)]
for x in range(len(s)):
    gb = bottom[x] * ref_gb[x]
    waste = parts["friend, already resident"][x] / gb if gb else 0.0
    text = f"{gb:.3g} GB" + (f"\n{waste:.0%} wasted" if waste else "")
    ax_b.text(x, bottom[x], text, ha="center", va="bottom", fontsize=7)
ax_b.set_ylim(0, 1.25 * max(bottom))
ax_b.set_ylabel("flash bytes per token / same model's row-column")
ax_b.set_title("Bytes read, by what they carried", fontsize=10)
ax_b.legend(fontsize=7, loc="upper left")
rel_io = [io / r for io, r in zip(s["io_ms"], ref_io, strict=True)]
ax_t.bar(s.index, rel_io, color="#d62728")
for x, (io, thr) in enumerate(zip(s["io_ms"], s["flash_throughput_GBps"], strict=True)):
    ax_t.text(x, rel_io[x], f"{io:.3g} ms\n@{thr:.2f} GB/s", ha="center", va="bottom", fontsize=7)
ax_t.set_ylim(0, 1.25 * max(rel_io))
ax_t.set_ylabel("I/O ms per token / same model's row-column")
ax_t.set_title("I/O time: double bundles read faster, but carry more", fontsize=10)
for ax in (ax_b, ax_t):
    ax.tick_params(axis="x", rotation=25, labelsize=7)
fig.suptitle("Co-activation bundling vs row-column bundling (LLM in a Flash §3.2)", fontsize=11)
save(fig, folder / "lif_coactivation.png")
