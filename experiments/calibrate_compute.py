"""Calibrate a processor's ``bandwidth_efficiency`` so that a dense decode step's compute equals a published
number (LLM in a Flash Table 3 "naive" rows: compute of the whole model, every weight touched once).

    python experiments/calibrate_compute.py HARDWARE PROCESSOR MODEL DTYPE PUBLISHED_MS [CONTEXT_TOKENS]

Prints the efficiency and the compute it gives; experiment files quote the printed value in
``hardware_overrides`` and name this script as its source. Decode GEMVs are memory-bound, so the
bandwidth term is the one calibrated; the script checks the FLOP term stays below it.
"""

from __future__ import annotations

import sys

from sim.config.profiles import load_hardware, load_model
from sim.engine.requests import Step
from sim.policies.ops import StepOps


def calibrate(hardware: str, processor: str, model: str, dtype: str, published_ms: float, ctx: int = 128) -> dict:
    hw, m = load_hardware(hardware), load_model(model)
    spec = hw.processors[processor]
    step, step_ops = Step(0, "decode", (0,), (ctx,), (1,), (0,)), StepOps(m, dtype, dtype)  # one token, ctx cached
    ops = [op for layer in range(m.n_layers) for op in step_ops.dense_layer(step, layer == m.n_layers - 1)]
    overhead_s = len(ops) * spec.overhead
    memory_s = sum(op.nbytes for op in ops) / spec.mem_bandwidth
    flops_s = sum(op.flops / (spec.peak_flops[op.dtype] * spec.flops_efficiency) for op in ops)
    efficiency = memory_s / (published_ms / 1e3 - overhead_s)
    if flops_s > published_ms / 1e3:
        raise SystemExit(f"{processor}: FLOP time {flops_s * 1e3:.1f} ms alone exceeds {published_ms} ms")
    return {"bandwidth_efficiency": round(efficiency, 4), "overhead_ms": overhead_s * 1e3, "flops_ms": flops_s * 1e3}


if __name__ == "__main__":
    hardware, processor, model, dtype, published = sys.argv[1:6]
    ctx = int(sys.argv[6]) if len(sys.argv) > 6 else 128
    result = calibrate(hardware, processor, model, dtype, float(published), ctx)
    print(" ".join(f"{k}={v:.4g}" for k, v in result.items()))
