"""KV-cache simulation at long context: MagicPIG on the 24 GB GPU setting (Llama-3.1-8B, 96K tokens, batch 8;
experiments/kv_magicpig.yaml), decode only, timeline off, 200 decode steps (1600 tokens).

Figures: simulated tokens per wall-second (whole run and the decode loop), SimPy events per simulated token, and
the process's peak RSS (KV bookkeeping is per request and per step, never per key: a 96K-token cache costs what a
1K one does). Each step's graph is built from per-request key counts (sim/policies/kv_offload.py).
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "kv_magicpig.yaml"
CASE = "4090-8b-96k,magicpig,b=8"
STEPS = 200


def run() -> list[tuple[str, float, str]]:
    overrides = {"decode_tokens": STEPS, "timeline_tokens": 0}
    (case,) = [c for c in load_experiment(EXPERIMENT, overrides) if c.name == CASE]
    done_at: list[float] = []
    t0 = time.perf_counter()
    result = simulate_case(case, progress=lambda _: done_at.append(time.perf_counter()), timeline=False)
    wall_s = time.perf_counter() - t0
    tokens = result.summary["tokens"]
    loop_s = done_at[-1] - done_at[0]
    return [
        ("kv_magicpig_96k_b8_sim_tokens_per_wall_s", tokens / wall_s, "tok/s"),
        (
            "kv_magicpig_96k_b8_decode_loop_tokens_per_wall_s",
            tokens * (len(done_at) - 1) / len(done_at) / loop_s,
            "tok/s",
        ),
        ("kv_magicpig_96k_b8_events_per_token", result.summary["events_per_token"], "events/token"),
        ("kv_magicpig_96k_b8_peak_rss_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
