"""Stacked bars of the mean per-token latency (I/O stall, transfer, memory management, compute) per case."""

from _common import COLORS, plt, results_dir, save, summary

folder = results_dir()
s = summary(folder)
fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(s) + 2), 4))
bottom = [0.0] * len(s)
for part in ("io", "xfer", "memmgmt", "compute"):
    values = s[f"{part}_ms"].tolist()
    if any(values):
        ax.bar(s["case"], values, bottom=bottom, color=COLORS[part], label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
for x, total in enumerate(s["total_ms"]):
    ax.text(x, total, f"{total:.0f}" if total >= 10 else f"{total:.2f}", ha="center", va="bottom", fontsize=8)
ax.set_ylabel("ms per token (mean)")
ax.set_title(f"Latency breakdown — {s['model'][0]} on {', '.join(dict.fromkeys(s['hardware']))}", fontsize=10)
ax.legend(fontsize=8)
ax.tick_params(axis="x", rotation=30, labelsize=8)
save(fig, folder / "latency_breakdown.png")
