"""Plot speed_accuracy.csv (``kind: lif_accuracy``): simulated ms/token vs held-out perplexity and agreement.

One row of panels per hardware (columns ``<hw>_ms_per_token``): x = simulated ms/token, y = perplexity (left)
and teacher-forced greedy agreement with dense (right); one marker per point, dense and oracle drawn as
references (grey square, black diamond).

Usage: python experiments/plots/lif_speed_accuracy.py RESULTS_DIR  ->  RESULTS_DIR/speed_accuracy.png
"""

from __future__ import annotations

import pandas as pd
from _common import plt, results_dir, save

STYLE = {"none": ("s", "grey"), "oracle": ("D", "black")}
MARKERS = {"active": "o", "resident": "^"}


def _draw(ax, df: pd.DataFrame, x: str, y: str, scale: float = 1.0) -> None:
    for _, row in df.iterrows():
        marker, color = STYLE.get(row.predictor, (MARKERS[row.ffn_compute], None))
        ax.scatter(row[x], scale * row[y], marker=marker, color=color, s=40, zorder=3)
        ax.annotate(row.point, (row[x], scale * row[y]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.grid(alpha=0.3)


def main() -> None:
    folder = results_dir()
    df = pd.read_csv(folder / "speed_accuracy.csv")
    hws = [c.removesuffix("_ms_per_token") for c in df.columns if c.endswith("_ms_per_token")]
    fig, axes = plt.subplots(len(hws), 2, figsize=(10, 3.6 * len(hws)), squeeze=False)
    for (ax_ppl, ax_agree), hw in zip(axes, hws, strict=True):
        x = f"{hw}_ms_per_token"
        _draw(ax_ppl, df, x, "ppl")
        _draw(ax_agree, df, x, "agreement", 100)
        ax_ppl.set(xlabel=f"simulated ms/token ({hw})", ylabel="held-out perplexity", title=f"{hw}: perplexity")
        ax_agree.set(xlabel=f"simulated ms/token ({hw})", ylabel="agreement with dense (%)",
                     title=f"{hw}: greedy agreement (teacher-forced)")  # fmt: skip
    handles = [plt.Line2D([], [], ls="", marker=m, color=c, label=n)
               for n, (m, c) in (("dense", STYLE["none"]), ("oracle", STYLE["oracle"]),
                                 ("trained, ffn_compute active", ("o", "C0")),
                                 ("trained, ffn_compute resident", ("^", "C0")))]  # fmt: skip
    axes[0, 1].legend(handles=handles, fontsize=8)
    save(fig, folder / "speed_accuracy.png")
    print(f"wrote {folder / 'speed_accuracy.png'}")


if __name__ == "__main__":
    main()
