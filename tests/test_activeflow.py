"""ActiveFlow: channel statistics on the real trace, the op -> channel -> layer layout, the policy's bytes against
closed forms, and the §4.1 cost model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.activeflow.channels import ChannelLayout, in_out
from sim.activeflow.cost import CostInputs, greedy_group, token_s
from sim.activeflow.stats import active_sets, cache_hit_rates, cross_layer
from sim.config.experiment import load_experiment
from sim.config.profiles import load_model
from sim.engine.simulate import simulate_case
from sim.errors import CapacityError

TRACE = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"


def test_active_sets_keep_the_largest_inputs():
    x = np.array([[[0.1, -3.0, 2.0, 0.5]]])
    assert active_sets(x, 0.5).tolist() == [[[False, True, True, False]]]


def test_cross_layer_prediction_on_the_real_trace_fades_with_distance():
    stats = cross_layer(TRACE, 0.6, 4)
    cos, precision = zip(*(stats[d] for d in range(1, 5)), strict=True)
    assert (np.diff(cos) < 0).all() and (np.diff(precision) < 0).all()
    assert 0.4 < precision[0] < 1 and 0.6 < cos[0] < 1
    assert stats[1][1] > cross_layer(TRACE, 0.8, 1)[1][1]  # sparser sets are harder to predict


def test_hot_channel_caches_hit_more_as_they_grow():
    small, large = cache_hit_rates(TRACE, 0.6, 0.1), cache_hit_rates(TRACE, 0.6, 0.4)
    for key in ("lfu_context", "lru_context", "lfu_task"):
        assert 0 < small[key] < large[key] < 1
    assert large["lfu_context"] > 0.4  # at 40% of the channels more than a random 40% of the active set


def test_op_channel_layer_extents_hold_a_channel_for_every_layer_of_the_group():
    model = load_model("llama-2-7b")
    grouped, flat = ChannelLayout(model, "q4_0", 4, grouped=True), ChannelLayout(model, "q4_0", 4, grouped=False)
    col = grouped.column_bytes["down"]
    assert col == int(np.ceil(model.d_model * 4.5 / 8))
    ext = grouped.group_extents("down", 8, np.array([3, 4]))
    assert (ext[:, 1] == 4 * col).all() and ext[1, 0] - ext[0, 0] == 4 * col
    miss = grouped.layer_extents("down", 10, np.array([3]))  # the third layer's slice of channel 3's extent
    assert miss[0, 0] == ext[0, 0] + 2 * col and miss[0, 1] == col
    assert len(flat.group_extents("down", 8, np.array([3, 4]))) == 8  # layer-major: one read per layer
    assert (
        grouped.total_bytes
        == flat.total_bytes
        == model.n_layers * sum(in_out(model, op)[0] * grouped.column_bytes[op] for op in grouped.ops)
    )


def _case(tmp_path, budget=None, **policy):
    exp = {
        "name": "af",
        "hardware": "pixel-6",
        "model": "llama-2-7b",
        "dtype": "q4_0",
        "processor": "cpu",
        "context_tokens": 16,
        "decode_tokens": 2,
        "prefill_chunk_tokens": 0,
        "timeline_tokens": 0,
        "policy": {"name": "activeflow", "sparsity": 0.6, **policy},
    } | ({"dram_budget": budget} if budget else {})
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    (case,) = load_experiment(tmp_path / "e.yaml")
    return simulate_case(case, timeline=False)


def test_serial_loading_reads_exactly_the_active_weights(tmp_path):
    r = _case(tmp_path, group=0)
    layout = ChannelLayout(load_model("llama-2-7b"), "q4_0", 1)
    active = sum(round(0.4 * in_out(r_model := load_model("llama-2-7b"), op)[0]) * layout.column_bytes[op]
                 for op in layout.ops) * r_model.n_layers  # fmt: skip
    decode = r.tokens.query("phase == 'decode'")
    assert (decode["flash_bytes"] == active).all() and (decode["af_preload_bytes"] == 0).all()


def test_a_perfect_predictor_reads_nothing_on_demand_and_a_cache_reads_less(tmp_path):
    exact = _case(tmp_path, group=4, precision=1.0).tokens.query("phase == 'decode'")
    assert (exact["af_on_demand_bytes"] == 0).all()
    cached = _case(tmp_path, group=4, precision=1.0, hit_rate=0.5).tokens.query("phase == 'decode'")
    assert cached["flash_bytes"].mean() == pytest.approx(0.5 * exact["flash_bytes"].mean(), rel=0.01)


def _inputs(**kw):
    base = dict(layer_bytes=100e6, n_layers=32, sparsity=0.6, group=4, hit_rate=0.0, precision=0.8,
                bw_small_Bps=1e9, bw_large_Bps=2e9, bw_mem_Bps=20e9)  # fmt: skip
    return CostInputs(**(base | kw))


def test_cost_model_closed_forms():
    serial = token_s(_inputs(group=0))
    assert serial["T_token"] == pytest.approx(32 * (40e6 / 1e9 + 40e6 / 20e9))
    grouped = token_s(_inputs())
    m_cl = 40e6 * 4
    assert grouped["T_preload"] == pytest.approx(m_cl / 2e9) and grouped["T_comp"] == pytest.approx(m_cl / 20e9)
    expected = m_cl / 1e9 + 7 * (4 * 40e6 * 0.2 / 1e9 + m_cl / 2e9) + m_cl / 20e9
    assert grouped["T_token"] == pytest.approx(expected)
    assert greedy_group(lambda n: _inputs(group=n, bw_large_Bps=1e9 * n)) > 1  # larger chunks read faster


@pytest.mark.model
def test_top_k_input_channels_on_the_real_model(smollm):
    from sim.lab.accuracy import ChannelTopK
    from sim.lab.kernels import Hooks, RunState, prefill

    cfg, w, tok = smollm
    ids = tok.encode("The capital of France is Paris. The capital of Italy is Rome.")
    dense = prefill(cfg, w, RunState.new(cfg, len(ids)), ids)
    kept: list[float] = []
    same = prefill(cfg, w, RunState.new(cfg, len(ids)), ids, Hooks(channels=ChannelTopK(0.0, False, kept)))
    np.testing.assert_array_equal(same, dense)  # sparsity 0 computes every channel
    half: list[float] = []
    sparse = prefill(cfg, w, RunState.new(cfg, len(ids)), ids, Hooks(channels=ChannelTopK(0.5, False, half)))
    assert np.mean(half) == pytest.approx(0.5, abs=0.01) and len(half) == 4 * cfg.n_layers  # four inputs per layer
    assert 0 < np.abs(sparse - dense).mean() < np.abs(dense).mean()  # changed, not destroyed


def test_the_optimizer_fills_the_budget_with_cache_and_refuses_one_too_small(tmp_path):
    total = ChannelLayout(load_model("llama-2-7b"), "q4_0", 1).total_bytes
    roomy = _case(tmp_path, budget="3 GB", optimize=True)
    steps = roomy.tokens
    assert steps["af_cache_fraction"].tolist() == pytest.approx([0.4, 0.4])  # capped at the active share, 1 - sp
    assert 1 <= steps["af_group"].iloc[0] <= 8
    tight = _case(tmp_path, budget="1 GB", optimize=True)
    held = tight.summary["dram_tenants_GB"]
    assert held["hot_channels"] * 1e9 == pytest.approx(tight.tokens["af_cache_fraction"].iloc[0] * total)
    kv = load_model("llama-2-7b").kv_bytes_per_token("fp16") * 18  # 16 prompt + 2 decoded tokens
    left = 1e9 - sum(held.values()) * 1e9 - kv
    assert 0 <= left < 1e6  # the cache took what the budget left
    with pytest.raises(CapacityError, match="preload buffer"):
        _case(tmp_path, budget="0.2 GB", optimize=True)  # the embeddings fit, one layer's buffers do not


def test_the_run_says_how_far_the_cost_model_is_from_the_simulation(tmp_path):
    for group in (0, 4):
        r = _case(tmp_path, group=group)
        model_ms = 1e3 * r.tokens.query("phase == 'decode'")["af_cost_model_s"].iloc[0]
        gap = 100 * (model_ms / r.summary["total_ms"] - 1)
        assert bool(r.notes) == (abs(gap) > 5)
        for note in r.notes:
            assert f"{model_ms:.1f} ms/token" in note and f"{r.summary['total_ms']:.1f}" in note


def _smollm2(tmp_path, tokens=6, **policy):
    exp = {"name": "af", "hardware": "pixel-6", "model": "smollm2-135m", "dtype": "fp16", "processor": "cpu",
           "context_tokens": 16, "decode_tokens": tokens, "prefill_chunk_tokens": 0, "timeline_tokens": 0,
           "policy": {"name": "activeflow", "sparsity": 0.6, "coalesce_reads": False, **policy}}  # fmt: skip
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    (case,) = load_experiment(tmp_path / "e.yaml")
    return case


def test_trace_channels_read_the_real_top_k_of_gate_and_up(tmp_path, monkeypatch):
    from sim.activeflow.stats import trace_inputs

    asked = []
    original = ChannelLayout.layer_extents

    def spy(self, op, layer, channels):
        if op in ("gate", "up"):
            asked.append((op, layer, np.asarray(channels).copy()))
        return original(self, op, layer, channels)

    monkeypatch.setattr(ChannelLayout, "layer_extents", spy)
    simulate_case(_smollm2(tmp_path, group=0, channels="trace"), timeline=False)
    real = active_sets(trace_inputs(TRACE)[0][:6], 0.6)  # [T, L, d]
    decode = asked[-6 * 30 * 2 :]  # the decode steps' on-demand reads (serial loading: every active channel)
    for i, (op, layer, channels) in enumerate(decode):
        t = i // (30 * 2)
        assert (channels == np.flatnonzero(real[t, layer])).all(), (t, op, layer)


def test_trace_channels_measure_what_the_statistical_mode_assumes(tmp_path):
    stat = simulate_case(_smollm2(tmp_path, tokens=60, group=2, cache_fraction=0.2), timeline=False)
    real = simulate_case(_smollm2(tmp_path, tokens=60, group=2, cache_fraction=0.2, channels="trace"), timeline=False)
    mean = lambda r, c: r.tokens[r.tokens.phase == "decode"][c].mean()  # noqa: E731
    assert mean(real, "af_precision") == pytest.approx(mean(stat, "af_precision"), abs=0.05)
    assert mean(real, "af_hit_rate") == pytest.approx(mean(stat, "af_hit_rate"), abs=0.05)
    assert real.summary["total_ms"] == pytest.approx(stat.summary["total_ms"], rel=0.15)


def test_trace_channels_need_the_traces_model(tmp_path):
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="policy.channels: the trace's mlp_in is 30 layers x 576 channels"):
        _case(tmp_path, group=1, channels="trace")
