"""Sweep throughput: points per minute of a 40-point OPT-6.7B sweep (lif_table3.yaml's all-cpu case, 64 decode
tokens, DRAM budget x flash latency grid), serial, 2 local worker processes, and a 2-worker Dask LocalCluster.
Every point is computed (``fresh``: stored points are not reused), plots off. The machine is noisy: compare the
ratios (local 2 workers / serial) rather than the minutes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sim.runner import run_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "lif_table3.yaml"
SWEEP = """
sweep:
  dram_budget: ["8 GB", "8.5 GB", "9 GB", "9.5 GB", "10 GB", "11 GB", "12 GB", "13 GB", "14 GB", "16 GB"]
  hardware_overrides.flash.latency: ["0 us", "50 us", "100 us", "200 us"]
"""


def _sweep_file(folder: Path) -> Path:
    text = EXPERIMENT.read_text()
    cases_at = text.index("\ncases:")
    body = text[:cases_at] + "\ncases:\n  - name: all-cpu\n    set:\n      policy.ffn_compute: resident\n" + SWEEP
    body = body.replace("plots: [plots/breakdown.py, plots/comparison.py]", "plots: []")
    path = folder / "sweep.yaml"
    path.write_text(body.replace("traces/", str(EXPERIMENT.parents[1] / "traces") + "/"))
    return path


def run() -> list[tuple[str, float, str]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = _sweep_file(Path(tmp))
        for label, kw in (("serial", {}), ("local2", {"workers": 2}), ("dask2", {"workers": 2, "executor": "dask"})):
            t0 = time.perf_counter()
            run_experiment(path, Path(tmp) / label, {"decode_tokens": 64}, plots=False, progress=False, fresh=True,
                           **kw)  # fmt: skip
            out.append((f"sweep40_{label}_points_per_min", 40 * 60 / (time.perf_counter() - t0), "points/min"))
    serial = out[0][1]
    out += [(f"sweep40_{name.split('_')[1]}_vs_serial", value / serial, "x") for name, value, _ in out[1:]]
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
