"""MoE offloading (cases named ``<setup>,<cache policy>,k=<experts cached per layer>``): tokens/s and expert-cache
hit rate vs cache size per policy, and bytes of experts loaded per token; ``moe_bytes.csv`` compares the model's
bytes at each quantization with the Mixtral-offloading paper's (papers.md gives GB that are GiB: 86.99 "GB" is
fp16 Mixtral's 93.4e9 bytes), every row predicted.

Usage: python experiments/plots/moe_mixtral.py RESULTS_DIR  ->  moe_mixtral.png, moe_bytes.csv
"""

import pandas as pd
from _common import plt, results_dir, save, summary

PUBLISHED_GIB = {("hqq4_g64", "hqq2_g16"): 17.54, ("hqq4_g64", "hqq3_g64"): 21.37}  # papers.md (attention, experts)
folder = results_dir()
s = summary(folder)
tokens = pd.read_parquet(folder / "tokens.parquet")
per = tokens[tokens.phase == "decode"].groupby("case", sort=False)
s = s.join(per[["moe_hit_rate", "moe_experts_loaded_bytes", "moe_model_bytes"]].mean(), on="case")
parts = s["case"].str.split(",", expand=True)
s["setup"], s["cache"], s["k"] = parts[0], parts[1], parts[2].str.removeprefix("k=").astype(int)
fig, (ax_tps, ax_hit, ax_bytes) = plt.subplots(1, 3, figsize=(15, 4.4))
for i, ((setup, cache), part) in enumerate(s.groupby(["setup", "cache"], sort=False)):
    part = part.sort_values("k")
    style = dict(marker="o", label=f"{setup} {cache}", color=plt.cm.tab20.colors[i % 20])  # >10 setups: tab20
    ax_tps.plot(part.k, part.tokens_per_s, **style)
    ax_hit.plot(part.k, 100 * part.moe_hit_rate, **style)
    ax_bytes.plot(part.k, part.moe_experts_loaded_bytes / 1e9, **style)
ax_tps.set(xlabel="experts cached per layer", ylabel="tokens/s (batch 1)", title="decode speed")
ax_hit.set(xlabel="experts cached per layer", ylabel="expert-cache hit rate (%)", title="expert-cache hit rate")
ax_bytes.set(xlabel="experts cached per layer", ylabel="GB of experts loaded per token", title="expert traffic")
for ax in (ax_tps, ax_hit, ax_bytes):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
fig.suptitle(f"{s.model[0]} expert offloading (each setup's routing source: summary.csv, column activations)",
             fontsize=9)  # fmt: skip
save(fig, folder / "moe_mixtral.png")
config = __import__("yaml").safe_load((folder / "config.resolved.yaml").read_text())["cases"]
rows = []
for case, row in s.set_index("case").iterrows():
    policy = config[case]["policy"]
    formats = (policy.get("attention_dtype"), policy.get("expert_dtype"))
    if formats in PUBLISHED_GIB and formats not in [r["formats"] for r in rows]:
        published = PUBLISHED_GIB[formats] * 2**30 / 1e9
        simulated = row.moe_model_bytes / 1e9
        rows.append({"formats": formats, "case": case, "published_GB": round(published, 3),
                     "simulated_GB": round(simulated, 3), "error_pct": round(100 * (simulated / published - 1), 2),
                     "role": "predicted"})  # fmt: skip
pd.DataFrame(rows).to_csv(folder / "moe_bytes.csv", index=False)
