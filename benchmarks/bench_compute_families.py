"""Does one compute calibration serve every model family? (issue 14 item 5)

On this machine, the numpy block kernel (sim/lab/kernels: attention with grouped-query heads, SwiGLU FFN) runs one
decode token (16 cached) through a layer with each Table 3 family's dimensions -- d_model, d_ff, heads and KV heads
of OPT-6.7B, Falcon 7B (71 heads, one KV head), Persimmon 8B, Phi-2 and Llama 2 7B -- on random fp32 weights, two
each layer far larger than any cache, so every pass reads its weights from DRAM. The simulator prices the same layer
(the ops of sim/policies/ops.py for that shape, gated as the kernel is) on hardware_profiles/this-machine.yaml, whose
CPU numbers ``python -m sim calibrate`` measured on other shapes (Llama-like, 256-2048 wide). This VM drifts by tens
of percent between minutes, so the families are timed in shuffled rounds and each is compared with OPT-6.7B in the
same round: printed per family are measured and simulated ms per layer, the measured ratio to OPT and the error of
the simulated ratio. The spread of those errors is what one calibration leaves between families.
Each family's own activation (GELU, squared ReLU) is not what the kernel runs: this checks shapes, not activations.
"""

from __future__ import annotations

import time

import numpy as np
import simpy
from threadpoolctl import threadpool_info

from sim.config.profiles import load_hardware, load_model
from sim.devices.processor import Processor
from sim.engine.requests import Step
from sim.lab.kernels.forward import Hooks, block
from sim.lab.kernels.model import ModelConfig, RunState, Weights
from sim.policies.ops import StepOps

FAMILIES = ("opt-6.7b", "falcon-7b", "persimmon-8b", "phi-2", "llama-2-7b")
ROUNDS, CONTEXT = 7, 16  # rounds visit every family in a shuffled order: drift of this VM hits them alike


class Layer:
    """One layer of a family's shape on random fp32 weights (each over 400 MB: it streams from DRAM every pass)."""

    def __init__(self, name: str):
        m = load_model(name)
        self.cfg = ModelConfig("llama", 1, m.d_model, m.d_ff, m.n_heads, m.n_kv_heads, m.head_dim, 1000, 64)
        weights = Weights.random(self.cfg, np.random.default_rng(0))
        self.layer, self.inv_freq = weights.layers[0], weights.inv_freq
        self.state = RunState.new(self.cfg, 32)
        self.x = np.random.default_rng(1).standard_normal((1, self.cfg.d_model)).astype(np.float32)

    def seconds(self) -> float:
        """One decode token with CONTEXT cached positions through the layer (median of 3 passes)."""
        times = []
        for _ in range(3):
            self.state.pos = CONTEXT
            t0 = time.perf_counter()
            block(self.cfg, self.layer, self.inv_freq, self.state, 0, self.x, np.array([CONTEXT]), Hooks())
            times.append(time.perf_counter() - t0)
        return float(np.median(times))


def simulated_s(name: str, processor: Processor) -> float:
    m = load_model(name).model_copy(
        update={"ffn_kind": "swiglu", "fatrelu_threshold": None, "biases": False, "qk_norm": False}
    )  # fmt: skip  (what the kernel runs)
    step = Step(0, "decode", (0,), (CONTEXT,), (1,), (0,))
    return processor.service_s(StepOps(m, "fp32", "fp32").dense_layer(step, last=False))


def run() -> list[tuple[str, float, str]]:
    spec = load_hardware("this-machine").processors["cpu"]
    processor = Processor(simpy.Environment(), "cpu", spec)
    layers = {name: Layer(name) for name in FAMILIES}
    rng = np.random.default_rng(2)
    rounds = []
    for _ in range(ROUNDS):
        order = rng.permutation(len(FAMILIES))
        rounds.append({FAMILIES[i]: layers[FAMILIES[i]].seconds() for i in order})
    sim = {name: simulated_s(name, processor) for name in FAMILIES}
    figures, errors = [], []
    for name in FAMILIES:
        real = float(np.median([r[name] for r in rounds]))
        ratio = float(np.median([r[name] / r["opt-6.7b"] for r in rounds]))  # against OPT in the same round
        error = 100 * (sim[name] / sim["opt-6.7b"] / ratio - 1)
        errors.append(error)
        figures += [
            (f"compute_{name}_measured_ms_per_layer", 1e3 * real, "ms"),
            (f"compute_{name}_simulated_ms_per_layer", 1e3 * sim[name], "ms"),
            (f"compute_{name}_vs_opt_measured", ratio, "x"),
            (f"compute_{name}_vs_opt_error_pct", error, "%"),
        ]
    figures.append(("compute_families_vs_opt_error_spread_pct", max(errors) - min(errors), "% points"))
    return figures


if __name__ == "__main__":
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info())
    print(f"# numpy BLAS: {blas}")
    for name, value, unit in run():
        print(f"{name} {value:.4g} {unit}")
