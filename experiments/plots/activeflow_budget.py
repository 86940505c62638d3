"""Plot an ActiveFlow budget sweep (``policy.optimize``): per phone and sparsity, tokens/s against the DRAM budget
(simulated, and the §4.1 cost model dashed), what the optimizer chose (group size N and hot-cache share), and the
flash bytes each token reads against that cache share.

Usage: python experiments/plots/activeflow_budget.py RESULTS_DIR  ->  RESULTS_DIR/activeflow_budget.png
"""

from __future__ import annotations

import pandas as pd
from _common import finish, plt, results_dir, summary


def main() -> None:
    folder = results_dir()
    s = summary(folder)
    tokens = pd.read_parquet(folder / "tokens.parquet")
    chosen = tokens[tokens.phase == "decode"].groupby("case")[["af_group", "af_cache_fraction", "af_cost_model_s"]]
    s = s.join(chosen.mean(), on="case")
    s["budget_GB"] = s["sweep.dram_budget"] / 1e9
    fig, (ax_tps, ax_n, ax_cache, ax_bytes) = plt.subplots(1, 4, figsize=(18, 4))
    for i, ((hw, sp), part) in enumerate(s.groupby(["sweep.hardware", "sweep.policy.sparsity"], sort=False)):
        part = part.sort_values("budget_GB")
        style = dict(color=f"C{i}", marker="o", label=f"{hw}, sp {sp}")
        ax_tps.plot(part.budget_GB, part.tokens_per_s, **style)
        ax_tps.plot(part.budget_GB, 1 / part.af_cost_model_s, color=f"C{i}", ls="--", lw=1)
        ax_n.plot(part.budget_GB, part.af_group, **style)
        ax_cache.plot(part.budget_GB, 100 * part.af_cache_fraction, **style)
        ax_bytes.plot(100 * part.af_cache_fraction, part.flash_GB_per_token * 1e3, **style)
    ax_tps.set(xlabel="DRAM budget (GB)", ylabel="tokens/s", title="speed (simulated; cost model dashed)")
    ax_n.set(xlabel="DRAM budget (GB)", ylabel="group size N", title="optimizer's N")
    ax_cache.set(xlabel="DRAM budget (GB)", ylabel="% of the weights", title="optimizer's hot-channel cache")
    fig.suptitle(f"{s.model.iloc[0]} ActiveFlow under a DRAM budget (points that do not fit: summary.csv)", fontsize=9)
    ax_bytes.set(xlabel="hot-channel cache (% of the weights)", ylabel="MB / token", title="flash read vs cache size")
    finish(fig, (ax_tps, ax_n, ax_cache, ax_bytes), folder / "activeflow_budget.png", legend_size=6)


if __name__ == "__main__":
    main()
