"""Mean per-token latency per case. A sweep over one numeric path (a ``sweep.<path>`` column of summary.csv) is
drawn as lines against that axis, one line per case of the file (the case name without its swept part), the
parts (I/O stall, transfer, memory management, compute) as thin lines, and where a line stops because the point
did not fit (status does_not_fit) an x. Otherwise: the total on a log axis (so a 10 ms case and a 2 s case both
read) and, below it, the stacked shares of that total."""

import pandas as pd
from _common import COLORS, plt, results_dir, save, summary

PARTS = ("io", "xfer", "memmgmt", "compute")
folder = results_dir()
every = pd.read_csv(folder / "summary.csv")
s = summary(folder)
swept = [c for c in every.columns if c.startswith("sweep.") and pd.api.types.is_numeric_dtype(every[c])]
if len(swept) == 1:  # a sweep: lines against the swept axis
    axis = swept[0]
    leaf = axis.rsplit(".", 1)[-1]
    every["line"] = every["case"].str.replace(rf",{leaf}=[^,]*", "", regex=True)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (line, part) in enumerate(every.groupby("line", sort=False)):
        ok = part[part["status"] == "ok"].sort_values(axis)
        color = palette[i % len(palette)]
        ax.plot(ok[axis], ok["total_ms"], marker="o", lw=2, color=color, label=f"{line} total")
        for p, style in zip(PARTS, ("--", ":", "-.", (0, (1, 3))), strict=True):
            if ok[f"{p}_ms"].any():
                ax.plot(ok[axis], ok[f"{p}_ms"], ls=style, lw=1, color=color, label=f"{line} {p}")
        failed = part[part["status"] != "ok"]
        if len(failed) and len(ok):
            ax.scatter(failed[axis], [ok["total_ms"].max()] * len(failed), marker="x", s=60, color=color,
                       label=f"{line} does not fit")  # fmt: skip
    spread = every[axis].max() / max(every[axis].min(), 1e-300) if (every[axis] > 0).all() else 1
    ax.set(xscale="log" if spread > 20 else "linear", yscale="log", xlabel=axis.removeprefix("sweep."),
           ylabel="ms per decoded token (mean)")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncols=2)
    pairs = ", ".join(dict.fromkeys(f"{m} on {h}" for m, h in zip(s["model"], s["hardware"], strict=True)))
    ax.set_title(f"Latency vs {axis.removeprefix('sweep.')}: {pairs}", fontsize=9)
    save(fig, folder / "latency_breakdown.png")
    raise SystemExit(0)

labels = [f"{c}\n{m} @ {h}" for c, m, h in zip(s["case"], s["model"], s["hardware"], strict=True)]
fig, (ax_ms, ax_share) = plt.subplots(2, 1, figsize=(max(6.0, 1.3 * len(s) + 2), 7.5), sharex=True)
parts = [p for p in PARTS if s[f"{p}_ms"].any()]
share_bottom = [0.0] * len(s)
for part in parts:
    values = s[f"{part}_ms"].tolist()
    shares = [100 * v / t if t > 0 else 0.0 for v, t in zip(values, s["total_ms"], strict=True)]
    ax_share.bar(labels, shares, bottom=share_bottom, color=COLORS[part], label=part)
    share_bottom = [b + v for b, v in zip(share_bottom, shares, strict=True)]
ax_ms.bar(labels, s["total_ms"], color="#595959")
for x, total in enumerate(s["total_ms"]):
    ax_ms.text(x, total, f"{total:.0f}" if total >= 10 else f"{total:.2f}", ha="center", va="bottom", fontsize=8)
ax_ms.set_yscale("log")
ax_ms.set_ylabel("ms per decoded token (mean, log)")
ax_share.legend(fontsize=8, ncols=len(parts), loc="upper center", bbox_to_anchor=(0.5, 1.12))
pairs = ", ".join(dict.fromkeys(f"{m} on {h}" for m, h in zip(s["model"], s["hardware"], strict=True)))
ax_ms.set_title(f"Latency breakdown: {pairs}", fontsize=9, wrap=True)
ax_share.set_ylabel("share of the token (%)")
ax_share.set_ylim(0, 100)
ax_share.tick_params(axis="x", rotation=30, labelsize=7)
save(fig, folder / "latency_breakdown.png")
