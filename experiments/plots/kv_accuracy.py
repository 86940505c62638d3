"""Plot a kv_accuracy run: what each KV-cache policy costs against the keys it reads, on the real model.

Panels: (1) attention output error vs keys read per query; (2) perplexity over the evaluated positions vs keys read
(dashed: full attention); (3) self-speculative decoding: drafted tokens (of gamma = 6) that full attention accepts
when the policy's KV drafts; (4) MagicPIG: keys the hash tables sampled vs the closed-form u(theta) averaged over the
same real (q, k) angles (on the diagonal when the hashing matches the paper's formula). The title lists which
policies found the needle.

Usage: python experiments/plots/kv_accuracy.py RESULTS_DIR  ->  RESULTS_DIR/kv_accuracy.png
"""

from __future__ import annotations

import pandas as pd
from _common import plt, results_dir, save

folder = results_dir()
df = pd.read_csv(folder / "kv_accuracy.csv")
mean = df.groupby("policy", sort=False).mean(numeric_only=True).reset_index()
mean["family"] = mean["policy"].str.split().str[0]
fig, (ax_err, ax_ppl, ax_spec, ax_lsh) = plt.subplots(1, 4, figsize=(20, 4.4))
for family, part in mean[mean.family != "full"].groupby("family", sort=False):
    part = part.sort_values("keys_fraction")
    ax_err.plot(100 * part.keys_fraction, part.attn_rel_error, marker="o", label=family)
    ax_ppl.plot(100 * part.keys_fraction, part.ppl, marker="o", label=family)
    if "accepted_gamma6" in part:
        ax_spec.plot(100 * part.keys_fraction, part.accepted_gamma6, marker="o", label=family)
ax_ppl.axhline(mean["dense_ppl"].iloc[0], color="grey", ls="--", lw=1, label="full attention")
ax_err.set(xscale="log", yscale="log", xlabel="keys read per query (%)", ylabel="relative error of attention output",
           title="attention error (mean over layers)")  # fmt: skip
ax_ppl.set(xscale="log", yscale="log", xlabel="keys read per query (%)", ylabel="perplexity (evaluated positions)",
           title="next-token perplexity")  # fmt: skip
ax_spec.set(xscale="log", xlabel="keys read per query (%)", ylabel="drafted tokens accepted (of 6)", ylim=(0, 6.2),
            title="self-speculative decoding: policy drafts, full verifies")  # fmt: skip
ax_spec.legend(fontsize=7)
magic = mean[mean.family == "magicpig"]
if len(magic):
    ax_lsh.scatter(100 * magic.closed_form_fraction, 100 * magic.sampled_fraction, color="#9467bd")
    for _, row in magic.iterrows():
        at = (100 * row.closed_form_fraction, 100 * row.sampled_fraction)
        ax_lsh.annotate(row.policy.removeprefix("magicpig "), at, fontsize=6, xytext=(3, 3), textcoords="offset points")
    top = 100 * max(magic.closed_form_fraction.max(), magic.sampled_fraction.max()) * 1.1
    ax_lsh.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="y = x")
    ax_lsh.legend(fontsize=7)
ax_lsh.set(xlabel="closed form: mean u(theta) (%)", ylabel="sampled by the hash tables (%)",
           title="MagicPIG keys sampled (outside sinks + window)")  # fmt: skip
for ax in (ax_err, ax_ppl, ax_spec, ax_lsh):
    ax.grid(alpha=0.3, which="both")
ax_err.legend(fontsize=7)
ax_ppl.legend(fontsize=7)
title = f"KV-cache policies on SmolLM2-135M, {int(df.context_tokens.iloc[0])}-token real prompts"
if (folder / "kv_needle.csv").exists():
    needle = pd.read_csv(folder / "kv_needle.csv")
    found = needle.groupby(needle.policy.str.split().str[0], sort=False)["found"].mean()
    title += "; needle found: " + ", ".join(f"{k} {v:.0%}" for k, v in found.items())
fig.suptitle(title, fontsize=9)
save(fig, folder / "kv_accuracy.png")
