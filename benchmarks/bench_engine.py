"""Simulator speed: simulated decode tokens per wall-second and SimPy events per simulated token.

OPT-6.7B on the M1 Max profile (lif_baselines.yaml and lif_table3.yaml cases), decode only (the prompt is in the KV
cache), timeline off. Each policy runs in both engine modes: ``auto`` (the default: a step nothing can contend with
is computed in closed form and advances time by one event) gives the unsuffixed figures, ``events`` (every device
job an event) the ``_events_mode`` ones; both give identical step rows (tests/test_graph_engine.py), so the ratio
of the two is what the closed-form shortcut buys. ``_decode_loop`` figures leave out the set-up (layout, trace
projection, the llm_in_flash dry run): tokens 1..N-1 over the wall time between them; ``_setup_s`` is the time to
the first decode token. ``llm_in_flash_warm`` runs the same point again with what it derives from its inputs on disk
(issue 13 item 8: a rerun or the next sweep point).
"""

from __future__ import annotations

import time
from pathlib import Path

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TOKENS = {"naive": 2000, "hybrid": 2000, "llm_in_flash": 200}
MODES = {"auto": "", "events": "_events_mode"}  # engine_mode -> figure suffix
CASES = (  # (file, case, policy)
    ("lif_baselines.yaml", "t2-naive", "naive"),
    ("lif_baselines.yaml", "t2-hybrid", "hybrid"),
    ("lif_table3.yaml", "all-cpu", "llm_in_flash"),
)


def _measure(path: Path, case_name: str, policy: str, mode: str) -> list[tuple[str, float, str]]:
    tokens = TOKENS[policy]
    overrides = {"decode_tokens": tokens, "timeline_tokens": 0, "engine_mode": mode, "prefill_chunk_tokens": 0}
    if policy == "llm_in_flash":
        overrides |= {"policy.capacity_tokens": tokens, "dram_budget": "10 GB"}  # the window's peak over 200 tokens
    (case,) = [c for c in load_experiment(path, overrides) if c.name == case_name]
    done_at: list[float] = []
    t0 = time.perf_counter()
    result = simulate_case(case, progress=lambda _: done_at.append(time.perf_counter()), timeline=False)
    wall_s = time.perf_counter() - t0
    label = f"opt6.7b_{policy}{MODES[mode]}"
    return [
        (f"engine_{label}_sim_tokens_per_wall_s", tokens / wall_s, "tok/s"),
        (f"engine_{label}_decode_loop_tokens_per_wall_s", (tokens - 1) / (done_at[-1] - done_at[0]), "tok/s"),
        (f"engine_{label}_setup_s", done_at[0] - t0, "s"),  # to the first decode token (its step included)
        (f"engine_{label}_events_per_token", result.summary["events_per_token"], "events/token"),
    ]


def run() -> list[tuple[str, float, str]]:
    figures = [
        figure
        for mode in MODES
        for file, case, policy in CASES
        for figure in _measure(EXPERIMENTS / file, case, policy, mode)
    ]
    # the same llm_in_flash point once more: what it derives from its inputs (trace members, projection thresholds,
    # predicted masks) now comes from disk (sim/points.py), as for a rerun or the next point of a sweep
    warm = _measure(EXPERIMENTS / "lif_table3.yaml", "all-cpu", "llm_in_flash", "auto")
    return figures + [(name.replace("llm_in_flash", "llm_in_flash_warm"), v, unit) for name, v, unit in warm]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
