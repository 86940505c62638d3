"""MoEfication of SmolLM2: the split, the routers, routing traces that round-trip, and moe_offload replaying them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.cli import main
from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case
from sim.errors import TraceError
from sim.lab.capture import token_meta
from sim.lab.moefy import balanced_assign, fit_router, split_experts, top_experts
from sim.moe import routing
from sim.traces.format import TraceWriter


def test_balanced_assignment_gives_each_expert_its_share_and_the_best_fits_first():
    score = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.6], [0.1, 0.3]])
    assert balanced_assign(score, 2).tolist() == [0, 0, 1, 1]  # neuron 2 prefers 0, which is full
    assert np.bincount(balanced_assign(np.random.default_rng(0).random((96, 8)), 12)).tolist() == [12] * 8


def test_the_split_recovers_planted_groups_of_co_activated_neurons():
    rng = np.random.default_rng(1)
    group = rng.permutation(np.repeat(np.arange(4), 8))  # [32] the planted expert of each neuron
    on = rng.random((400, 4)) < 0.3  # [T, 4] which groups fire per token
    act = on[:, group] * rng.uniform(0.5, 1.5, (400, 32)) + 0.01 * rng.random((400, 32))  # [T, F]
    found = split_experts(act, 4, 10, np.random.default_rng(2))
    assert np.bincount(found).tolist() == [8] * 4
    for e in range(4):  # each found expert is exactly one planted group
        assert len(set(group[found == e])) == 1


def test_the_router_learns_a_linear_map_and_top_experts_come_best_first():
    rng = np.random.default_rng(3)
    x, true = rng.standard_normal((500, 6)), rng.standard_normal((6, 4))
    router = fit_router(x.astype(np.float32), x @ true + 2.0, ridge=1e-6)
    np.testing.assert_allclose(router[:-1], true, atol=1e-3)
    np.testing.assert_allclose(router[-1], 2.0, atol=1e-3)
    assert top_experts(np.array([[0.1, 0.9, 0.5, 0.7]]), 3).tolist() == [[1, 3, 2]]


def _routing_trace(path: Path, routes: np.ndarray, n_experts: int, n_contexts: int = 2, guesses=None) -> Path:
    """routes [T, L, k] (and guesses [T, L, k]) as a routing trace, split into n_contexts contexts."""
    T, L, k = routes.shape
    model = {"name": "toy-moe", "n_layers": L, "d_model": 8, "d_ff": 4, "n_heads": 1, "n_kv_heads": 1,
             "head_dim": 8, "n_experts": n_experts, "top_k": k}  # fmt: skip
    fields = ["experts"] + (["expert_guess"] if guesses is not None else [])
    with TraceWriter(path, model, fields, chunk_tokens=7, compression="deflate") as w:
        for cid, part in enumerate(np.array_split(np.arange(T), n_contexts)):
            arrays = {"experts": routes[part].astype(np.int16), **token_meta(list(range(len(part))), 0, cid)}
            w.append(arrays | ({"expert_guess": guesses[part].astype(np.int16)} if guesses is not None else {}))
        w.close()
    return path


def test_routing_traces_round_trip_and_rates_count_only_pairs_inside_a_context(tmp_path):
    rng = np.random.default_rng(4)
    routes = np.stack([rng.permutation(8)[:2] for _ in range(40 * 3)]).reshape(40, 3, 2)  # [T, L, k]
    trace = routing.TraceRouting(_routing_trace(tmp_path / "r.trace", routes, 8), 3, 8, 2)
    np.testing.assert_array_equal(trace.routes, routes)
    context = np.repeat([0, 1], 20)
    assert trace.rates()[1] == routing.rates(routes[:, 1], context)
    same = (routes[1:, 1, 0] == routes[:-1, 1, 0])[np.arange(39) != 19].mean()  # pair 19 -> 20 crosses contexts
    assert trace.rates()[1][0] == pytest.approx(same)
    with pytest.raises(TraceError, match="the model needs"):
        routing.TraceRouting(tmp_path / "r.trace", 3, 16, 2)


def test_a_chain_fitted_with_skewed_popularity_keeps_the_rates_and_the_skew():
    p = np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    alpha, beta = routing.fit(8, 2, 0.35, 0.7, tuple(p))
    r = routing.route(np.random.default_rng(7), 20000, 8, 2, alpha, beta, p)
    first, common = routing.rates(r)
    assert first == pytest.approx(0.35, abs=0.02) and common == pytest.approx(0.7, abs=0.03)
    assert np.bincount(r[:, 0], minlength=8)[0] / len(r) == pytest.approx(0.4, abs=0.03)  # expert 0 stays popular


def _moe_case(tmp_path: Path, **policy):
    exp = {"name": "moe", "hardware": "pc-high-rtx4090", "model": "smollm2-135m-moe8", "processor": "gpu",
           "context_tokens": 16, "decode_tokens": 10, "prefill_chunk_tokens": 0, "timeline_tokens": 0,
           "policy": {"name": "moe_offload", "experts_on": "dram", **policy}}  # fmt: skip
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    (case,) = load_experiment(tmp_path / "e.yaml")
    return simulate_case(case, timeline=False)


def test_moe_offload_replays_a_routing_trace_expert_for_expert(tmp_path):
    rng = np.random.default_rng(5)
    others = np.array([0, 1, 2, 4, 5, 6, 7])
    routes = np.stack([np.full((30, 30), 3), rng.choice(others, (30, 30))], axis=-1)  # [T, L, 2]
    path = _routing_trace(tmp_path / "r.trace", routes, 8)  # every token's first choice is expert 3
    result = _moe_case(tmp_path, routing="trace", routing_trace=str(path), cache_experts=1, cache_policy="static")
    steps = result.tokens.query("phase == 'decode'")
    assert "routing trace r.trace" in result.summary["activations"]
    assert (steps["moe_hit_rate"] == 0.5).all()  # the static cache holds expert 3 (the trace's most used): 1 of 2
    with pytest.raises(Exception, match="routing_trace"):
        _moe_case(tmp_path, routing="trace")


def test_a_prefetch_replays_the_traces_own_guesses(tmp_path):
    rng = np.random.default_rng(6)
    routes = np.stack([rng.permutation(8)[:2] for _ in range(30 * 30)]).reshape(30, 30, 2)
    exact = routes.copy()
    exact[:, 0] = -1  # layer 0 has no layer before it to guess from
    rates = {}
    for name, guesses in (("exact", exact), ("none", np.full_like(routes, -1))):
        path = _routing_trace(tmp_path / f"{name}.trace", routes, 8, guesses=guesses)
        steps = _moe_case(tmp_path, routing="trace", routing_trace=str(path), prefetch=True).tokens
        rates[name] = steps["moe_prefetch_hit_rate"]
    assert np.allclose(rates["exact"], 29 / 30)  # every miss but layer 0's was prefetched
    assert (rates["none"] == 0).all()


@pytest.mark.model
def test_moefication_runs_the_numpy_model_and_writes_a_routing_trace_moe_offload_replays(model_path, tmp_path):
    exp = {"kind": "moefication", "name": "tiny", "experts": [8], "top_k": [2], "routing": ["router"],
           "calibration_tokens_per_context": 32, "calibration_contexts_per_task": 1,
           "heldout_tokens_per_context": 16, "heldout_contexts_per_task": 1, "kmeans_iterations": 2}  # fmt: skip
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(exp))
    assert main(["run", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = pd.read_csv(tmp_path / "out" / "moefication.csv").set_index("rule")
    assert rows.loc["dense", "agreement"] == 1.0 and rows.loc["moe-router", "kept"] == 0.25
    assert 0 < rows.loc["moe-router", "router_recall"] <= 1 and 0 < rows.loc["moe-router", "prefetch_hit_rate"] <= 1
    trace = routing.TraceRouting(tmp_path / "out" / "routing-E8-k2.trace", 30, 8, 2)
    assert trace.routes.shape == trace.guesses.shape == (4 * 16, 30, 2)  # 4 tasks x 16 held-out tokens
    assert (trace.guesses[:, 0] == -1).all() and (trace.guesses[:, 1:] >= 0).all()
    assert (tmp_path / "out" / "moefication.png").is_file()
    result = _moe_case(tmp_path, routing="trace", routing_trace=str(tmp_path / "out" / "routing-E8-k2.trace"))
    assert result.summary["status"] == "ok"
