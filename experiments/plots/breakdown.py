"""Mean per-token latency per case: the total on a log axis (so a 10 ms case and a 2 s case both read) and,
below it, the stacked shares of that total (where the time goes: I/O stall, transfer, memory management, compute)."""

from _common import COLORS, plt, results_dir, save, summary

PARTS = ("io", "xfer", "memmgmt", "compute")
folder = results_dir()
s = summary(folder)
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
