"""Plot accuracy.csv (``python -m sim trace accuracy``): perplexity and greedy agreement vs FFN sparsity.

Usage: python experiments/plots/accuracy.py RESULTS_DIR  ->  RESULTS_DIR/accuracy.png
"""

from __future__ import annotations

import pandas as pd
from _common import plt, results_dir, save

XLABEL = "achieved sparsity (%): FFN neurons, or input channels (activeflow rules)"


def main() -> None:
    folder = results_dir()
    df = pd.read_csv(folder / "accuracy.csv")
    dense = df[df.rule == "dense"].iloc[0]
    fig, (ax_ppl, ax_agree) = plt.subplots(1, 2, figsize=(9, 3.6))
    for rule, part in df[df.rule != "dense"].groupby("rule"):
        x = 100 * (1 - part.kept)
        ax_ppl.plot(x, part.ppl, marker="o", label=rule)
        ax_agree.plot(x, 100 * part.agreement, marker="o", label=rule)
    ax_ppl.axhline(dense.ppl, color="grey", ls="--", lw=1, label=f"dense {dense.ppl:.2f}")
    ax_ppl.set(xlabel=XLABEL, ylabel="perplexity", yscale="log", title="held-out perplexity")
    ax_agree.set(xlabel=XLABEL, ylabel="agreement with dense (%)", ylim=(0, 101),
                 title="teacher-forced greedy agreement")  # fmt: skip
    for ax in (ax_ppl, ax_agree):
        ax.grid(alpha=0.3)
        ax.legend()
    save(fig, folder / "accuracy.png")
    print(f"wrote {folder / 'accuracy.png'}")


if __name__ == "__main__":
    main()
