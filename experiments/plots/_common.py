"""Helpers shared by the plot scripts: read a results folder, save a figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

COLORS = {"io": "#d62728", "xfer": "#9467bd", "memmgmt": "#ff7f0e", "compute": "#1f77b4"}


def results_dir() -> Path:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        raise SystemExit(f"usage: python {Path(sys.argv[0]).name} RESULTS_DIR")
    return Path(sys.argv[1])


def summary(folder: Path) -> pd.DataFrame:
    """The cases that ran (cases that did not fit their memory are rows of summary.csv with status does_not_fit)."""
    s = pd.DataFrame(json.loads((folder / "summary.json").read_text()))
    return s[s["status"] == "ok"].reset_index(drop=True) if "status" in s else s


def save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def finish(fig: plt.Figure, axes, path: Path, legend_size: float = 7) -> None:
    """Grid and legend on every axis, then save the figure and say where."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    save(fig, path)
    print(f"wrote {path}")
