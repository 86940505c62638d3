"""Simulator speed with every LLM-in-a-Flash policy on: OPT-6.7B on the M1 Max profile.

Statistical predictor (App. C quality), sliding window k = 5, row-column bundling, memory management, activations
projected from the committed SmolLM2 trace onto OPT-6.7B at Table 6 densities; 200 decoded tokens, timeline off.

Figures (the project's target: >= 1000 simulated tokens per wall-second on one core):
  opt6.7b_lif_all_sim_tokens_per_wall_s   every per-token step counted: 1000 / (decode-loop ms per token + set-up
                                          dry-run ms per token); one-time set-up (trace calibration) excluded
  opt6.7b_lif_all_decode_loop_tokens_per_wall_s  the decode loop alone: tokens 1..N-1 over the wall time between
                                          them (the predictions it replays were made in the dry run)
  opt6.7b_lif_all_whole_run_tokens_per_wall_s    N tokens over the whole run's wall time, set-up included
  opt6.7b_lif_all_events_per_token        SimPy events per simulated token (one per batch of reads or kernel; one
                                          per token on the atomic path, sim/engine/atomic.py)
  opt6.7b_lif_all_plan_ms_per_token       wall ms per token in the policy's plan_token (the rest is the engine)
  opt6.7b_lif_all_dry_run_ms_per_token    wall ms per token of the policy's set-up dry run (the predictions, made
                                          once and replayed by plan_token, and the window sizing the matrices)
  opt6.7b_lif_all_first_token_s           wall time to the first token: projection + window dry run + token 0
``python benchmarks/bench_lif.py`` also prints the naive/hybrid figures of bench_engine.py.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import yaml

import sim.engine.simulate
from sim.config.experiment import load_experiment

TOKENS = 200
EXPERIMENT = {
    "name": "bench_lif_all",
    "hardware": "apple-m1-max",
    "model": "opt-6.7b",
    "dtype": "fp16",
    "processor": "cpu",
    "dram_budget": "10 GB",  # embeddings, attention, predictor and the k = 5 window's peak matrices
    "context_tokens": 128,
    "decode_tokens": TOKENS,
    "timeline_tokens": 0,
    "layout": {"name": "bundled"},
    "activations": {"source": "projection", "path": "traces/smollm2-135m.trace", "density": "opt-6.7b-table6"},
    "policy": {
        "name": "llm_in_flash",
        "predictor": "statistical",
        "window_k": 5,
        "bundling": "row_column",
        "memory_management": True,
        "capacity_tokens": TOKENS,
    },
}


@contextmanager
def _timed_planning(plan_s: list[float]):
    """Wrap the policy the engine builds so that the wall time spent in plan_token is summed into plan_s[0] and
    the time of its set-up dry run into plan_s[1]."""
    make = sim.engine.simulate.make_policy

    def make_timed(config):
        policy = make(config)
        plan, dry_run = policy.plan_token, policy._dry_run

        def timed_dry_run():
            t0 = time.perf_counter()
            peak = dry_run()
            plan_s[1] += time.perf_counter() - t0
            return peak

        policy._dry_run = timed_dry_run

        def timed(t: int):
            t0 = time.perf_counter()
            plans = plan(t)
            plan_s[0] += time.perf_counter() - t0
            return plans

        policy.plan_token = timed
        return policy

    with mock.patch.object(sim.engine.simulate, "make_policy", make_timed):
        yield


def run() -> list[tuple[str, float, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_lif.yaml"
        path.write_text(yaml.safe_dump(EXPERIMENT))
        (case,) = load_experiment(path)
        done_at: list[float] = []
        plan_s = [0.0, 0.0]
        t0 = time.perf_counter()
        with _timed_planning(plan_s):
            result = sim.engine.simulate.simulate_case(
                case, progress=lambda _: done_at.append(time.perf_counter()), timeline=False
            )
    whole_s = done_at[-1] - t0
    decode_ms = 1e3 * (done_at[-1] - done_at[0]) / (TOKENS - 1)  # tokens 1 .. N-1 (token 0 pays the first block)
    dry_ms = 1e3 * plan_s[1] / EXPERIMENT["policy"]["capacity_tokens"]
    label = "opt6.7b_lif_all"
    return [
        (f"{label}_sim_tokens_per_wall_s", 1e3 / (decode_ms + dry_ms), "tok/s"),
        (f"{label}_decode_loop_tokens_per_wall_s", 1e3 / decode_ms, "tok/s"),
        (f"{label}_whole_run_tokens_per_wall_s", TOKENS / whole_s, "tok/s"),
        (f"{label}_events_per_token", result.summary["events_per_token"], "events/token"),
        (f"{label}_plan_ms_per_token", 1e3 * plan_s[0] / TOKENS, "ms/token"),
        (f"{label}_dry_run_ms_per_token", dry_ms, "ms/token"),
        (f"{label}_first_token_s", done_at[0] - t0, "s"),
    ]


if __name__ == "__main__":
    import bench_engine

    for name, value, unit in run() + bench_engine.run():
        print(f"{name} {value:.6g} {unit}")
