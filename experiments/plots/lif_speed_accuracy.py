"""Plot speed_accuracy.csv (``kind: lif_accuracy``): simulated ms/token vs held-out perplexity and agreement.

One row of panels per hardware (columns ``<hw>_ms_per_token``): x = simulated ms/token, y = perplexity (left)
and teacher-forced greedy agreement with dense (right); one marker per point, dense and oracle drawn as
references (grey square, black diamond); trained points are coloured by labelling rule (predictor file), with
a circle when the predicted neurons are computed and a triangle when the window's resident set is.

Usage: python experiments/plots/lif_speed_accuracy.py RESULTS_DIR  ->  RESULTS_DIR/speed_accuracy.png
"""

from __future__ import annotations

import pandas as pd
from _common import plt, results_dir, save

STYLE = {"none": ("s", "grey"), "oracle": ("D", "black")}
MARKERS = {"active": "o", "resident": "^"}


def _colors(df: pd.DataFrame) -> dict[str, str]:
    """One colour per labelling rule (i.e. per predictor file) for the trained points."""
    return {rule: f"C{i}" for i, rule in enumerate(dict.fromkeys(df.rule))}


def _draw(ax, df: pd.DataFrame, x: str, y: str, scale: float = 1.0) -> None:
    colors = _colors(df)
    for _, row in df.iterrows():
        marker, color = STYLE.get(row.predictor, (MARKERS[row.ffn_compute], colors[row.rule]))
        ax.scatter(row[x], scale * row[y], marker=marker, color=color, s=40, zorder=3)
        ax.annotate(row.point, (row[x], scale * row[y]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.grid(alpha=0.3)


def _legend(ax, df: pd.DataFrame) -> None:
    items = [("dense", *STYLE["none"][::-1]), ("oracle", *STYLE["oracle"][::-1])]
    items += [(f"trained, labels {rule}", c, "o") for rule, c in _colors(df).items()]
    items += [("ffn_compute resident", "grey", "^")]
    ax.legend(handles=[plt.Line2D([], [], ls="", marker=m, color=c, label=n) for n, c, m in items], fontsize=7)


def main() -> None:
    folder = results_dir()
    df = pd.read_csv(folder / "speed_accuracy.csv")
    hws = [c.removesuffix("_ms_per_token") for c in df.columns if c.endswith("_ms_per_token")]
    fig, axes = plt.subplots(len(hws), 2, figsize=(10, 3.8 * len(hws)), squeeze=False)
    for (ax_ppl, ax_agree), hw in zip(axes, hws, strict=True):
        x = f"{hw}_ms_per_token"
        _draw(ax_ppl, df, x, "ppl")
        _draw(ax_agree, df, x, "agreement", 100)
        ax_ppl.set(xlabel=f"simulated ms/token ({hw})", ylabel="held-out perplexity", yscale="log",
                   title=f"{hw}: perplexity")  # fmt: skip
        ax_agree.set(xlabel=f"simulated ms/token ({hw})", ylabel="agreement with dense (%)",
                     title=f"{hw}: greedy agreement (teacher-forced)")  # fmt: skip
    _legend(axes[0, 1], df)
    save(fig, folder / "speed_accuracy.png")
    print(f"wrote {folder / 'speed_accuracy.png'}")


if __name__ == "__main__":
    main()
