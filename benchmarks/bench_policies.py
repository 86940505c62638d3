"""Simulator speed of the ActiveFlow and MoE-offloading policies (their reference experiments' settings), decode
only, timeline off: simulated tokens per wall-second (whole run, set-up included) and SimPy events per token.

- ActiveFlow: Llama-2-7B Q4_0 on the Pixel 6, sparsity 0.6, group 4, per-channel reads
  (experiments/activeflow_groups.yaml), 64 tokens: ~30k channel reads and ~700 jobs per token;
- MoE: Mixtral-8x7B on the RTX 4090 box, 2-bit experts in host DRAM, LRU cache of 4 per layer with prefetch
  (experiments/moe_mixtral.yaml), 200 tokens.
"""

from __future__ import annotations

import time
from pathlib import Path

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
RUNS = (  # (figure prefix, file, case, decode tokens)
    ("activeflow_llama2_7b_pixel6_N4", "activeflow_groups.yaml", "paper-precision,N=4", 64),
    ("moe_mixtral_4090_lru4_prefetch", "moe_mixtral.yaml", "4090,lru+prefetch,k=4", 200),
)


def run() -> list[tuple[str, float, str]]:
    out = []
    for prefix, file, name, tokens in RUNS:
        overrides = {"decode_tokens": tokens, "timeline_tokens": 0}
        (case,) = [c for c in load_experiment(EXPERIMENTS / file, overrides) if c.name == name]
        t0 = time.perf_counter()
        result = simulate_case(case, timeline=False)
        wall_s = time.perf_counter() - t0
        out += [
            (f"{prefix}_sim_tokens_per_wall_s", result.summary["tokens"] / wall_s, "tok/s"),
            (f"{prefix}_events_per_token", result.summary["events_per_token"], "events/token"),
        ]
    return out


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
