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
                                          per step on the engine's closed-form path, sim/engine/executor.py)
  opt6.7b_lif_all_first_token_s           wall time to the first token: projection + window dry run + token 0
  opt6.7b_lif_all_dry_run_ms_per_token    wall ms per token of the policy's set-up dry run (the predictions, made
                                          once and replayed by plan, and the window sizing the matrices)
  opt6.7b_lif_all_plan_ms_per_token       wall ms per token in the policy's plan (its step graph) in the decode loop
  opt6.7b_lif_all_engine_ms_per_token     the decode loop's rest: pricing, running and booking the graph
  opt6.7b_lif_all_<piece>_ms_per_token    where those go (PIECES below; a piece's calls summed over the dry run
                                          and the decode loop, per token): predictions (projected_masks: the true
                                          sets; predictor_false_positives, predictor_keep: the statistical
                                          predictor's draws), window, window_index_extraction, matrix_step, extents
``python benchmarks/bench_lif.py`` also prints the naive/hybrid figures of bench_engine.py. What compiled code would
make of the per-token neuron work (the predictions, window and matrix): ``benchmarks/floor_lif_compiled.py``.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import yaml

import sim.engine.simulate
import sim.layout.bundled
import sim.lif.masks
import sim.lif.memmgmt
import sim.lif.statistical
import sim.lif.window
import sim.policies.llm_in_flash
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
    "prefill_chunk_tokens": 0,  # decode only: the prompt is in the KV cache (per-token figures)
    "layout": {"name": "bundled"},
    "activations": {"source": "projection", "path": "traces/smollm2-135m.trace", "density": "opt-6.7b-table6"},
    "policy": {
        "name": "llm_in_flash",
        "predictor": "statistical",
        "window_k": 5,
        "memory_management": True,
        "capacity_tokens": TOKENS,
    },
}


# Where a token's wall time goes: (figure suffix, class, method). Each call's wall time is summed per piece; a piece
# called inside another (the predictor inside the mask stream) is also inside the outer one's time.
PIECES = (
    ("predictions", sim.lif.masks.MaskStream, "token"),  # the whole predicted stream (dry run only)
    ("projected_masks", sim.lif.masks.MaskStream, "_load_block"),  # true sets from the projected trace
    ("predictor_false_positives", sim.lif.statistical.StatisticalPredictor, "false_positives"),
    ("predictor_keep", sim.lif.statistical.StatisticalPredictor, "keep_active"),
    ("window", sim.lif.window.SlidingWindow, "step_bits"),  # dry run and decode loop
    ("window_index_extraction", sim.lif.window.WindowStep, "load_flat"),
    ("window_index_extraction", sim.lif.window.WindowStep, "evict_flat"),
    ("matrix_step", sim.lif.memmgmt.NeuronMatrix, "step_flat"),
    ("extents", sim.layout.bundled.BundledLayout, "neuron_extents_all"),
    ("plan", sim.policies.llm_in_flash.LlmInFlash, "plan"),
    ("dry_run", sim.policies.llm_in_flash.LlmInFlash, "_dry_run"),
)


@contextmanager
def _timed(pieces=PIECES):
    """Sum the wall time of every call of each piece's method into the yielded {piece: seconds}."""
    spent: dict[str, float] = dict.fromkeys((name for name, _, _ in pieces), 0.0)

    def timed(name, method):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0

        return wrapper

    with ExitStack() as stack:
        for name, cls, attr in pieces:
            stack.enter_context(mock.patch.object(cls, attr, timed(name, getattr(cls, attr))))
        yield spent


def run() -> list[tuple[str, float, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_lif.yaml"
        path.write_text(yaml.safe_dump(EXPERIMENT))
        (case,) = load_experiment(path)
        done_at: list[float] = []
        t0 = time.perf_counter()
        with _timed() as spent:
            result = sim.engine.simulate.simulate_case(
                case, progress=lambda _: done_at.append(time.perf_counter()), timeline=False
            )
    whole_s = done_at[-1] - t0
    decode_ms = 1e3 * (done_at[-1] - done_at[0]) / (TOKENS - 1)  # tokens 1 .. N-1 (token 0 pays the first block)
    per_token_ms = {name: 1e3 * s / TOKENS for name, s in spent.items()}  # dry run: capacity_tokens = TOKENS
    label = "opt6.7b_lif_all"
    return [
        (f"{label}_sim_tokens_per_wall_s", 1e3 / (decode_ms + per_token_ms["dry_run"]), "tok/s"),
        (f"{label}_decode_loop_tokens_per_wall_s", 1e3 / decode_ms, "tok/s"),
        (f"{label}_whole_run_tokens_per_wall_s", TOKENS / whole_s, "tok/s"),
        (f"{label}_events_per_token", result.summary["events_per_token"], "events/token"),
        (f"{label}_first_token_s", done_at[0] - t0, "s"),
        (f"{label}_dry_run_ms_per_token", per_token_ms["dry_run"], "ms/token"),
        (f"{label}_plan_ms_per_token", per_token_ms["plan"], "ms/token"),
        (f"{label}_engine_ms_per_token", decode_ms - per_token_ms["plan"], "ms/token"),
        *((f"{label}_{name}_ms_per_token", ms, "ms/token") for name, ms in per_token_ms.items()
          if name not in ("dry_run", "plan")),
    ]  # fmt: skip


if __name__ == "__main__":
    import bench_engine

    for name, value, unit in run() + bench_engine.run():
        print(f"{name} {value:.6g} {unit}")
