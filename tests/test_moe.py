"""MoE offloading: routing fitted to Mixtral's repetition rates, experts as units of loading, expert caches, the
projection onto an MoE shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.config.experiment import load_experiment
from sim.config.profiles import load_model
from sim.engine.simulate import simulate_case
from sim.models.profile import dtype_bytes
from sim.moe import routing

TRACE = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"


def test_routing_chain_reproduces_the_published_repetition_where_reachable():
    first, common = routing.table_rates(32)[15]
    alpha, beta = routing.fit(8, 2, round(first, 4), round(common, 4))
    got_first, got_common = routing.rates(routing.route(np.random.default_rng(3), 20000, 8, 2, alpha, beta))
    assert got_first == pytest.approx(first, abs=0.01) and got_common == pytest.approx(common, abs=0.02)
    r = routing.route(np.random.default_rng(4), 500, 8, 2, alpha, beta)
    assert (r[:, 0] != r[:, 1]).all() and r.min() >= 0 and r.max() < 8  # two distinct experts per token


def _run(tmp_path, **policy):
    exp = {
        "name": "moe",
        "hardware": "pc-high-rtx4090",
        "model": "mixtral-8x7b",
        "processor": "gpu",
        "context_tokens": 16,
        "decode_tokens": 12,
        "prefill_chunk_tokens": 0,
        "timeline_tokens": 0,
        "policy": {"name": "moe_offload", "experts_on": "dram", "expert_dtype": "hqq2_g16", **policy},
    }
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    (case,) = load_experiment(tmp_path / "e.yaml")
    return simulate_case(case, timeline=False).tokens.query("phase == 'decode'")


def test_without_a_cache_each_token_loads_exactly_its_top_k_experts_per_layer(tmp_path):
    m = load_model("mixtral-8x7b")
    expert = dtype_bytes("hqq2_g16", sum(m.op_weights(op) for op in m.ffn_ops))
    steps = _run(tmp_path)
    np.testing.assert_allclose(steps["moe_experts_loaded_bytes"], m.n_layers * m.experts_top_k * expert, rtol=1e-12)
    assert (steps["moe_hit_rate"] == 0).all()


def test_a_cache_of_every_expert_loads_each_expert_once_and_then_never_misses(tmp_path):
    m = load_model("mixtral-8x7b")
    expert = dtype_bytes("hqq2_g16", sum(m.op_weights(op) for op in m.ffn_ops))
    steps = _run(tmp_path, cache_experts=8)
    loads = steps["moe_experts_loaded_bytes"] / expert  # experts loaded per step
    assert loads.sum() == pytest.approx(round(loads.sum())) and round(loads.sum()) <= m.n_layers * m.n_experts
    assert loads.iloc[0] == pytest.approx(m.n_layers * m.experts_top_k)  # the first token: every routed expert is new


def test_bigger_caches_hit_more(tmp_path):
    small, large = _run(tmp_path, cache_experts=2), _run(tmp_path, cache_experts=6)
    assert large["moe_hit_rate"].mean() > small["moe_hit_rate"].mean() > 0


def test_the_projection_onto_an_moe_shape_covers_every_experts_neurons(tmp_path):
    exp = {"name": "p", "hardware": "apple-m1-max", "model": "mixtral-8x7b", "dtype": "q4_0", "processor": "cpu",
           "dram_budget": "30 GB", "context_tokens": 8, "decode_tokens": 2, "prefill_chunk_tokens": 0,
           "timeline_tokens": 0, "policy": {"name": "naive"},
           "activations": {"source": "projection", "path": str(TRACE), "density": 0.1, "calib_tokens": 8}}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(exp))
    (case,) = load_experiment(tmp_path / "p.yaml")
    assert simulate_case(case, timeline=False).summary["tokens"] == 2


def test_a_prefill_chunk_routes_every_prompt_token(tmp_path):
    m = load_model("mixtral-8x7b")
    expert = dtype_bytes("hqq2_g16", sum(m.op_weights(op) for op in m.ffn_ops))
    exp = tmp_path / "p.yaml"
    spec = {"name": "moe", "hardware": "pc-high-rtx4090", "model": "mixtral-8x7b", "processor": "gpu",
            "context_tokens": 64, "decode_tokens": 2, "prefill_chunk_tokens": 64, "timeline_tokens": 0,
            "policy": {"name": "moe_offload", "experts_on": "dram", "expert_dtype": "hqq2_g16"}}  # fmt: skip
    exp.write_text(yaml.safe_dump(spec))
    (case,) = load_experiment(exp)
    steps = simulate_case(case, timeline=False).tokens.set_index("phase")
    prefill = float(steps.loc["prefill", "moe_experts_loaded_bytes"])
    assert prefill > 5 * m.n_layers * expert  # 64 tokens use most experts of a layer, not only one token's 2


def test_the_chain_fits_a_many_expert_shape_too():
    alpha, beta = routing.fit(64, 6, 0.25, 0.65)  # DeepSeekMoE-like: 64 experts, top-6 (bisection on beta)
    r = routing.route(np.random.default_rng(5), 5000, 64, 6, alpha, beta)
    first, common = routing.rates(r)
    assert first == pytest.approx(0.25, abs=0.02) and common == pytest.approx(0.65, abs=0.03)
    assert all(len(set(row)) == 6 for row in r.tolist())  # six distinct experts a token
