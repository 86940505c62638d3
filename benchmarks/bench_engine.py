"""Simulator speed: simulated decode tokens per wall-second and SimPy events per simulated token.

OPT-6.7B on the M1 Max profile, 200 decoded tokens per case, timeline off. Each case runs in both engine modes:
``auto`` (the default: serial tokens on the atomic path, one timeout per token) gives the unsuffixed figures,
``events`` (every device job an event) the ``_events_mode`` ones; both modes give identical results.
"""

from __future__ import annotations

import time
from pathlib import Path

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TOKENS = 200
MODES = {"auto": "", "events": "_events_mode"}  # engine_mode -> figure suffix


def _measure(path: Path, case_name: str, label: str, mode: str) -> list[tuple[str, float, str]]:
    overrides = {"decode_tokens": TOKENS, "timeline_tokens": 0, "engine_mode": mode}
    (case,) = [c for c in load_experiment(path, overrides) if c.name == case_name]
    t0 = time.perf_counter()
    result = simulate_case(case, timeline=False)
    wall_s = time.perf_counter() - t0
    label += MODES[mode]
    return [
        (f"engine_{label}_sim_tokens_per_wall_s", TOKENS / wall_s, "tok/s"),
        (f"engine_{label}_events_per_token", result.summary["events_per_token"], "events/token"),
    ]


def run() -> list[tuple[str, float, str]]:
    baselines = EXPERIMENTS / "lif_baselines.yaml"
    return [
        figure
        for mode in MODES
        for case, label in (("t2-naive", "opt6.7b_naive"), ("t2-hybrid", "opt6.7b_hybrid"))
        for figure in _measure(baselines, case, label, mode)
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
