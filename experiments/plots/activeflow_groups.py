"""ActiveFlow's group preloading (cases named ``<series>,N=<group>``): speedup over serial loading (N = 0) per
group size, simulated and by the §4.1 cost model (``af_cost_model_s`` in tokens.parquet), against Fig. 16's
published points (papers.md: +10% at N = 1, +120% at N = 4); and where each token's flash bytes went (preload vs
on demand). Writes ``activeflow_speedup.csv`` (series, N, simulated and cost-model speedup, published, % error of
the simulated speedup; every row predicted: nothing is calibrated to Fig. 16).

Also writes ``comparison.csv`` (case, metric, role, published, simulated, error_pct: the published points only, for
Fig. 16's setup: Llama-2-7B on the Pixel 6).

Usage: python experiments/plots/activeflow_groups.py RESULTS_DIR  ->  activeflow_groups.png, activeflow_speedup.csv
"""

import pandas as pd
from _common import plt, results_dir, save, summary

folder = results_dir()
s = summary(folder)
# papers.md, ActiveFlow Fig. 16 (vs serial loading): Llama-2-7B on the Pixel 6 only; no published point elsewhere
FIG16 = (s.model == "llama-2-7b").all() and (s.hardware == "pixel-6").all()
PUBLISHED_SPEEDUP_PCT = {1: 10.0, 4: 120.0} if FIG16 else {}
tokens = pd.read_parquet(folder / "tokens.parquet")
per = tokens[tokens.phase == "decode"].groupby("case", sort=False)
extra = per[["af_cost_model_s", "af_preload_bytes", "af_on_demand_bytes"]].mean()
s = s.join(extra, on="case")
s["series"] = s["case"].str.split(",").str[0]
s["N"] = s["case"].str.extract(r"N=(\d+)")[0].astype(int)
rows = []
fig, (ax_speed, ax_bytes) = plt.subplots(1, 2, figsize=(12, 4.4))
for series, part in s.groupby("series", sort=False):
    part = part.sort_values("N")
    serial = part[part.N == 0].iloc[0]
    sim = 100 * (serial.total_ms / part.total_ms - 1)
    model = 100 * (serial.af_cost_model_s / part.af_cost_model_s - 1)
    line = ax_speed.plot(part.N, sim, marker="o", label=f"{series}: simulated")[0]
    ax_speed.plot(part.N, model, marker="x", ls="--", color=line.get_color(), label=f"{series}: cost model (§4.1)")
    for n, v, m in zip(part.N, sim, model, strict=True):
        published = PUBLISHED_SPEEDUP_PCT.get(int(n))
        error = None if published is None else round(v - published, 2)
        rows.append({"series": series, "group": int(n), "simulated_speedup_pct": round(v, 2),
                     "cost_model_speedup_pct": round(m, 2), "published_speedup_pct": published,
                     "error_pct_points": error, "role": "predicted"})  # fmt: skip
ax_speed.scatter(list(PUBLISHED_SPEEDUP_PCT), list(PUBLISHED_SPEEDUP_PCT.values()), color="black", marker="*", s=120,
                 zorder=5, label="published (Fig. 16)")  # fmt: skip
ax_speed.axhline(0, color="grey", lw=0.8)
ax_speed.set(xlabel="group size N (0 = serial loading)", ylabel="speedup over serial loading (%)",
             title="decode speed vs group size")  # fmt: skip
ax_speed.legend(fontsize=7)
ax_speed.grid(alpha=0.3)
x = range(len(s))
ax_bytes.bar(x, s.af_preload_bytes / 1e9, label="preload", color="#2ca02c")
ax_bytes.bar(x, s.af_on_demand_bytes / 1e9, bottom=s.af_preload_bytes / 1e9, label="on demand", color="#d62728")
ax_bytes.set_xticks(list(x), [f"{a.split('-')[0]}\nN={n}" for a, n in zip(s.series, s.N, strict=True)], fontsize=7)
ax_bytes.set(ylabel="flash GB per token", title="what each token reads")
ax_bytes.legend(fontsize=7)
fig.suptitle(f"ActiveFlow group preloading: {s.model[0]} {s.hardware[0]}", fontsize=9)
save(fig, folder / "activeflow_groups.png")
pd.DataFrame(rows).to_csv(folder / "activeflow_speedup.csv", index=False)
# the published points in the schema every reproduction's comparison.csv uses (sim/results.py comparison_table)
published = [
    {"case": f"{r['series']},N={r['group']}", "metric": "speedup_vs_serial_pct", "role": r["role"],
     "published": r["published_speedup_pct"], "simulated": r["simulated_speedup_pct"],
     "error_pct": round(100 * (r["simulated_speedup_pct"] / r["published_speedup_pct"] - 1), 2)}
    for r in rows if r["published_speedup_pct"] is not None
]  # fmt: skip
if published:
    pd.DataFrame(published).to_csv(folder / "comparison.csv", index=False)
