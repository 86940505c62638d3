"""Plot a ``kind: quantization`` run: held-out perplexity and the weights' relative error vs bits per weight, one
line per tensor class (FFN = an MoE's experts; attention).

Usage: python experiments/plots/quantization.py RESULTS_DIR  ->  RESULTS_DIR/quantization.png
"""

from __future__ import annotations

import pandas as pd
from _common import finish, plt, results_dir


def main() -> None:
    folder = results_dir()
    df = pd.read_csv(folder / "quantization.csv")
    dense = df[df.tensors == "none"].iloc[0]
    fig, (ax_ppl, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    for tensors, part in df[df.tensors != "none"].groupby("tensors"):
        part = part.sort_values("bits_per_weight")
        ax_ppl.scatter(part.bits_per_weight, part.ppl, label=f"{tensors} quantized")  # formats share bit widths
        exact = part.weight_rel_error == 0  # the file's own format: re-quantizing reproduces it
        ax_err.scatter(part.bits_per_weight[~exact], 100 * part.weight_rel_error[~exact], label=tensors)
        for _, row in part.iterrows():
            ax_ppl.annotate(row["format"], (row.bits_per_weight, row.ppl), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
            ax_err.annotate(row["format"] + (": 0, exact" if row.weight_rel_error == 0 else ""),
                            (row.bits_per_weight, max(100 * row.weight_rel_error, 0.5)), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    ax_ppl.axhline(dense.ppl, color="grey", ls="--", lw=1, label=f"dense (Q4_1 file) {dense.ppl:.2f}")
    ax_ppl.set(xlabel="bits per weight (scales included)", ylabel="held-out perplexity", yscale="log",
               title="SmolLM2-135M: perplexity per weight format")  # fmt: skip
    ax_err.set(xlabel="bits per weight (scales included)", ylabel="relative weight error (%)", yscale="log",
               title="weight error (vs the Q4_1 file's weights)")  # fmt: skip
    finish(fig, (ax_ppl, ax_err), folder / "quantization.png", legend_size=7)


if __name__ == "__main__":
    main()
