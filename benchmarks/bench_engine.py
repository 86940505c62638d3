"""Simulator speed: simulated decode tokens per wall-second and SimPy events per simulated token.

OPT-6.7B on the M1 Max profile, 200 decoded tokens per case, timeline off.
"""

from __future__ import annotations

import time
from pathlib import Path

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TOKENS = 200


def _measure(path: Path, case_name: str, label: str) -> list[tuple[str, float, str]]:
    (case,) = [c for c in load_experiment(path, {"decode_tokens": TOKENS, "timeline_tokens": 0}) if c.name == case_name]
    t0 = time.perf_counter()
    result = simulate_case(case, timeline=False)
    wall_s = time.perf_counter() - t0
    return [
        (f"engine_{label}_sim_tokens_per_wall_s", TOKENS / wall_s, "tok/s"),
        (f"engine_{label}_events_per_token", result.summary["events_per_token"], "events/token"),
    ]


def run() -> list[tuple[str, float, str]]:
    baselines = EXPERIMENTS / "lif_baselines.yaml"
    return _measure(baselines, "t2-naive", "opt6.7b_naive") + _measure(baselines, "t2-hybrid", "opt6.7b_hybrid")


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
