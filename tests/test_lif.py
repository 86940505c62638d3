"""LLM in a Flash mechanisms: sliding window, memory management, predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simpy

from sim.config.profiles import load_hardware, load_model
from sim.devices import build_devices
from sim.engine.layers import LayerPlan
from sim.engine.placement import Placement
from sim.engine.requests import Step
from sim.errors import CapacityError, ConfigError
from sim.layout import build_layout
from sim.lif.memmgmt import NeuronMatrix
from sim.lif.predictor import (
    LowRankPredictor,
    Quality,
    TrainConfig,
    evaluate,
    predictor_weights,
    recall_threshold,
)
from sim.lif.statistical import StatisticalPredictor
from sim.lif.window import SlidingWindow
from sim.models.profile import ModelProfile
from sim.policies.base import RunContext
from sim.policies.llm_in_flash import LlmInFlash, LlmInFlashConfig
from sim.traces.source import SourceBase


def _masks(seed: int, t: int, layers: int, n: int, p: float) -> np.ndarray:
    return np.random.default_rng(seed).random((t, layers, n)) < p  # [T, L, n]


# ---- sliding window -----------------------------------------------------------------------------------
def test_window_closed_form_on_hand_made_masks():
    m = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], bool)[:, None, :]  # [T=4, L=1, n=4]
    win = SlidingWindow(1, 4, k=2)
    steps = [win.step(m[t]) for t in range(4)]
    assert [s.load[0].nonzero()[0].tolist() for s in steps] == [[0, 1], [2], [3], []]
    assert [s.evict[0].nonzero()[0].tolist() for s in steps] == [[], [], [0], [1, 2]]
    assert [s.resident[0].nonzero()[0].tolist() for s in steps] == [[0, 1], [0, 1, 2], [1, 2, 3], [3]]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_resident_is_the_union_of_the_last_k_masks_and_load_is_only_what_was_missing(k):
    masks = _masks(0, 30, 3, 50, 0.1)
    win = SlidingWindow(3, 50, k)
    for t in range(len(masks)):
        before = win.resident.copy()
        step = win.step(masks[t])
        union = masks[max(0, t - k + 1) : t + 1].any(axis=0)
        assert (step.resident == union).all()
        assert (step.load == (masks[t] & ~before)).all()
        assert (step.evict == (before & ~union)).all()
        assert step.resident.sum() == union.sum()


def test_k_1_loads_everything_new_each_token():
    masks = _masks(1, 10, 2, 40, 0.3)
    win = SlidingWindow(2, 40, k=1)
    for t in range(len(masks)):
        step = win.step(masks[t])
        prev = masks[t - 1] if t else np.zeros_like(masks[0])
        assert (step.load == (masks[t] & ~prev)).all()
        assert (step.resident == masks[t]).all()


def test_extra_neurons_stay_resident_like_predicted_ones():
    win = SlidingWindow(1, 4, k=2)
    extra = np.array([[0, 0, 0, 1]], bool)
    step = win.step(np.array([[1, 0, 0, 0]], bool), extra)
    assert step.load[0].tolist() == [True, False, False, True]
    assert (win.missing(np.array([[0, 0, 0, 1]], bool)) == 0).all()


def test_window_rejects_bad_inputs():
    with pytest.raises(ValueError, match="window k must be in 1..65535 \\(got 0\\)"):
        SlidingWindow(2, 4, 0)
    with pytest.raises(ValueError, match="shape \\(3, 4\\), expected \\(2, 4\\)"):
        SlidingWindow(2, 4, 2).step(np.zeros((3, 4), bool))


# ---- memory management --------------------------------------------------------------------------------
def _mask(n: int, *idx: int) -> np.ndarray:
    m = np.zeros((1, n), bool)
    m[0, list(idx)] = True
    return m


def test_deleting_the_last_row_copies_nothing_and_a_hole_costs_one_copy():
    mat = NeuronMatrix(10, np.array([6]), row_bytes=100.0)
    mat.step(_mask(10, 1, 4, 7, 8), _mask(10))  # rows: 1 4 7 8
    step = mat.step(_mask(10), _mask(10, 8))  # 8 is last
    assert step.moves.tolist() == [0] and step.copied_bytes.tolist() == [0.0]
    step = mat.step(_mask(10), _mask(10, 1))  # hole at row 0, last row (7) moves into it
    assert step.moves.tolist() == [1] and step.copied_bytes.tolist() == [100.0]
    assert mat.neuron_at[0, :2].tolist() == [7, 4] and mat.slot_of[0, 7] == 0


def test_deleting_first_and_last_together_moves_only_the_surviving_tail_row():
    mat = NeuronMatrix(10, np.array([4]), row_bytes=1.0)
    mat.step(_mask(10, 0, 1, 2, 3), _mask(10))  # rows 0 1 2 3
    step = mat.step(_mask(10, 9), _mask(10, 0, 3))
    assert step.moves.tolist() == [1] and step.appended_bytes.tolist() == [1.0]
    assert mat.neuron_at[0].tolist() == [2, 1, 9, -1]


def max_resident_rows(masks: np.ndarray, k: int) -> np.ndarray:
    """masks [T, L, n] stored masks -> [L] max over t of |union of masks t-k+1..t| (the window's peak)."""
    win = SlidingWindow(masks.shape[1], masks.shape[2], k)
    return np.max([win.step(mask).resident_counts() for mask in masks], axis=0)


def test_copies_equal_holes_below_the_new_end_in_every_layer():
    masks = _masks(5, 40, 3, 64, 0.15)
    win = SlidingWindow(3, 64, k=3)
    mat = NeuronMatrix(64, max_resident_rows(masks, 3), row_bytes=8.0)
    for t in range(len(masks)):
        step = win.step(masks[t])
        slots_before, n_before = mat.slot_of.copy(), mat.n_rows.copy()
        got = mat.step(step.load, step.evict)
        new_end = n_before - step.evict.sum(1)
        holes = ((slots_before < new_end[:, None]) & step.evict).sum(1)
        assert (got.moves == holes).all()
        assert (mat.resident == step.resident).all() and (mat.n_rows == step.resident.sum(1)).all()
        rows = mat.neuron_at[:, : mat.n_rows.max()]
        for layer in range(3):  # the matrix holds each resident neuron exactly once, in rows 0..n_rows-1
            assert sorted(rows[layer, : mat.n_rows[layer]].tolist()) == np.flatnonzero(step.resident[layer]).tolist()


def test_capacity_is_the_window_peak_and_overflow_names_the_layer():
    masks = np.zeros((3, 2, 8), bool)
    masks[0, 0, :3] = masks[1, 0, 3:5] = masks[2, 1, :1] = True
    assert max_resident_rows(masks, 2).tolist() == [5, 1]
    mat = NeuronMatrix(8, np.array([2, 2]), row_bytes=1.0)
    assert mat.allocated_bytes == 4.0
    with pytest.raises(ValueError, match="layer 0: 3 resident neurons exceed the preallocated 2 rows"):
        mat.step(masks[0], np.zeros((2, 8), bool))
    with pytest.raises(ValueError, match="layer 1: cannot delete neuron 0: it is not resident"):
        mat.step(np.zeros((2, 8), bool), masks[2])


# ---- predictor ----------------------------------------------------------------------------------------
def _planted(seed: int, t: int = 2500, layers: int = 2, d: int = 48, f: int = 160, rank: int = 5):
    """x [T, L, d] and y [T, L, F] where y is a thresholded rank-`rank` function of x (learnable)."""
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((layers, d, rank)), rng.standard_normal((layers, rank, f))
    x = (rng.standard_normal((t, layers, d)) * 2 + 1).astype(np.float32)
    z = np.einsum("tld,ldr,lrf->tlf", x, A, B)
    return x, z > np.quantile(z, 0.9, axis=0)


def test_trained_predictor_reaches_the_target_recall_on_held_out_tokens():
    x, y = _planted(0)
    cfg = TrainConfig(rank=8, target_recall=0.95)
    pred = LowRankPredictor.train(x[:1800], y[:1800], [cfg, cfg], np.random.default_rng(1))
    for q in evaluate(pred, x[1800:], y[1800:]):
        assert q.recall >= 0.93 and abs(q.fn_rate - (1 - q.recall)) < 1e-12
        assert q.precision >= 0.8 and q.predicted_fraction < 0.15


def test_an_untrainable_rule_is_not_predicted_better_than_chance():
    x, y = _planted(2)
    y_random = np.random.default_rng(3).random(y.shape) < 0.1  # independent of x
    cfg = TrainConfig(rank=8, epochs=5)
    pred = LowRankPredictor.train(x[:1800], y_random[:1800], [cfg] * 2, np.random.default_rng(1))
    for q in evaluate(pred, x[1800:], y_random[1800:]):
        assert q.precision < 0.2  # chance level is 0.1


def test_predictor_cost_is_d_plus_f_times_rank_per_layer():
    x, y = _planted(0, t=300)
    cfgs = [TrainConfig(rank=4, epochs=1), TrainConfig(rank=12, epochs=1)]
    pred = LowRankPredictor.train(x, y, cfgs, np.random.default_rng(0))
    assert pred.nbytes("fp16") == (48 + 160) * (4 + 12) * 2
    assert predictor_weights(48, 160, pred.ranks).tolist() == [208 * 4, 208 * 12]
    assert pred.predict(x[:5]).shape == (5, 2, 160)
    by_layer = np.stack([pred.layers[i].predict(x[:5, i]) for i in range(2)], axis=1)
    assert (by_layer == pred.predict(x[:5])).all()  # zero-padded ranks change nothing


def test_recall_threshold_keeps_the_requested_share_of_positives():
    logits = np.arange(100, dtype=np.float32)[None, :]
    y = np.ones((1, 100), bool)
    t = recall_threshold(logits, y, 0.95)
    assert (logits[y] > t).sum() == 95
    assert (logits[y] > recall_threshold(logits, y, 1.0)).sum() == 100


def test_statistical_predictor_matches_its_calibration():
    true = np.random.default_rng(0).random((32, 4096)) < 0.033
    stat = StatisticalPredictor(recall=0.95, fp_rate=0.07)
    preds = np.stack([stat.predict(true, np.random.default_rng(s)) for s in range(20)])
    q = Quality.of(preds, np.broadcast_to(true, preds.shape))
    assert abs(q.recall - 0.95) < 0.01 and abs(q.fp_rate - 0.07) < 0.005
    assert abs(q.predicted_fraction - (0.95 * 0.033 + 0.07 * 0.967)) < 0.005
    assert "LLM in a Flash App. C" in stat.label


def test_statistical_false_positives_follow_the_weights():
    true = np.zeros((1, 1000), bool)
    weights = np.zeros((1, 1000))
    weights[0, :100] = 1.0  # only the first 100 neurons can be false positives
    pred = StatisticalPredictor(recall=1.0, fp_rate=0.05, fp_weights=weights).predict(true, np.random.default_rng(0))
    assert pred[0, 100:].sum() == 0 and 30 <= pred[0, :100].sum() <= 70


# ---- the llm_in_flash policy --------------------------------------------------------------------------
class ArraySource(SourceBase):
    """An ActivationSource over arrays: masks [T, L, n] bool, hidden [T, L, d]."""

    def __init__(self, masks: np.ndarray, hidden: np.ndarray | None = None):
        self._masks, self._hidden, self.n_tokens = masks, hidden, len(masks)

    def masks(self, start: int, stop: int) -> np.ndarray:
        return self._masks[start:stop]

    def hidden(self, start: int, stop: int) -> np.ndarray:
        return self._hidden[start:stop]

    def describe(self) -> str:
        return "test arrays"


def _correlated_masks(seed: int, t: int, layers: int, n: int, density: float) -> np.ndarray:
    """Heavy-tailed per-neuron rates, so some neurons are hot (as in real traces)."""
    rng = np.random.default_rng(seed)
    rate = rng.beta(0.3, 0.3 / density - 0.3, size=(layers, n))  # mean = density
    return rng.random((t, layers, n)) < rate


def _ctx(
    model, source, budget_bytes: float | None = None, dtype: str = "fp16", seed: int = 0, layout: str = "bundled"
) -> RunContext:
    hw = load_hardware("apple-m1-max")
    devices = build_devices(simpy.Environment(), hw, {"dram": budget_bytes} if budget_bytes is not None else None)
    options = {"masks": source.masks(0, source.n_tokens)} if layout == "coactivation" else {}
    return RunContext(
        model=model, hardware=hw, devices=devices, placement=Placement.of(hw, "cpu"), dtype=dtype, kv_dtype="fp16",
        max_batch=1, decode_tokens=1, max_context_tokens=17, layout=build_layout(layout, model, dtype, **options),
        activations=source, rng=np.random.default_rng(seed),
    )  # fmt: skip


def _plans(policy: LlmInFlash, t: int) -> list[LayerPlan]:
    """The layer plans of decode step t (a prompt of 16 tokens in the KV cache)."""
    return policy.decode_plans(Step(t, "decode", (0,), (16 + t,), (1,), (t,)))


def _policy(ctx: RunContext, **knobs) -> LlmInFlash:
    policy = LlmInFlash(LlmInFlashConfig(name="llm_in_flash", **knobs))
    policy.setup(ctx)
    return policy


TINY = ModelProfile(
    name="tiny", source="test", n_layers=3, d_model=64, d_ff=256, n_heads=4, n_kv_heads=4, head_dim=16,
    vocab_size=100, ffn_kind="relu", tied_embeddings=True,
)  # fmt: skip


def test_oracle_policy_reads_exactly_the_bundles_of_neurons_not_in_the_window():
    masks = _correlated_masks(0, 40, 3, 256, 0.05)
    policy = _policy(_ctx(TINY, ArraySource(masks)), predictor="oracle", window_k=3, capacity_tokens=40)
    for t in range(40):
        before = policy.window.resident.copy()
        plans = _plans(policy, t)
        for layer, plan in enumerate(plans):
            new = np.flatnonzero(masks[t, layer] & ~before[layer])
            assert (plan.preload == policy.layout.neuron_extents(layer, new)).all()
            assert set(plan.preload[:, 1].tolist()) <= {TINY.neuron_bytes("fp16")}
        assert policy.step_stats()["predictor_fn"] == 0.0


def test_memory_management_charges_moved_rows_and_the_rebuild_alternative_charges_everything():
    masks = _correlated_masks(1, 30, 3, 256, 0.05)
    moved = _policy(_ctx(TINY, ArraySource(masks)), predictor="oracle", window_k=2, capacity_tokens=30)
    rebuild = _policy(
        _ctx(TINY, ArraySource(masks)), predictor="oracle", window_k=2, capacity_tokens=30, memory_management=False
    )
    nb = TINY.neuron_bytes("fp16")
    for t in range(30):
        a, b = _plans(moved, t), _plans(rebuild, t)
        assert sum(p.memmgmt_bytes for p in a) == moved.step_stats()["memmgmt_rows_moved"] * nb
        assert sum(p.memmgmt_bytes for p in b) == rebuild.step_stats()["neurons_resident"] * nb
        assert sum(p.memmgmt_bytes for p in a) <= sum(p.memmgmt_bytes for p in b)


def test_dram_holds_attention_embeddings_predictor_and_the_window_peak():
    masks = _correlated_masks(2, 20, 3, 256, 0.05)
    ctx = _ctx(TINY, ArraySource(masks))
    policy = _policy(ctx, predictor="statistical", rank=8, rank_last=16, last_layers=1, capacity_tokens=20)
    held = ctx.devices.memories["dram"].tenants()
    assert held["predictor"] == (64 + 256) * (8 + 8 + 16) * 2
    assert held["attention"] == 3 * TINY.attention_bytes_per_layer("fp16")
    assert held["ffn_window"] == policy.matrix.capacity.sum() * TINY.neuron_bytes("fp16")
    with pytest.raises(CapacityError, match="cannot allocate .* for 'ffn_window'"):
        budget = held["embeddings"] + held["attention"] + held["predictor"] + 1.0
        _policy(_ctx(TINY, ArraySource(masks), budget_bytes=budget), predictor="statistical", rank=8, rank_last=16,
                last_layers=1, capacity_tokens=20)  # fmt: skip


def test_running_past_the_dry_run_can_overflow_the_matrix_with_a_clear_error():
    masks = np.zeros((10, 3, 256), bool)
    masks[:5, :, :10] = True
    masks[5:, :, :200] = True
    policy = _policy(_ctx(TINY, ArraySource(masks)), predictor="oracle", window_k=1, capacity_tokens=5)
    for t in range(5):
        _plans(policy, t)
    with pytest.raises(CapacityError, match="raise policy.capacity_tokens above 5"):
        _plans(policy, 5)


def test_a_window_that_outgrows_the_dry_runs_peak_shortens_and_says_so():
    masks = np.zeros((10, 3, 256), bool)
    masks[:5, :, :10] = True  # the dry run sees one set of 10 neurons: 10 rows a layer
    masks[5::2, :, 10:20] = True  # later tokens alternate two sets: a window of 3 would hold 20
    masks[6::2, :, :10] = True
    policy = _policy(_ctx(TINY, ArraySource(masks)), predictor="oracle", window_k=3, capacity_tokens=5)
    assert policy.run_notes({}) == []
    for t in range(10):
        _plans(policy, t)
        assert policy.window.resident.sum(axis=1).max() <= 10
    assert policy.step_stats()["window_shortened_layers"] == 3 * 5  # every layer, every step past the dry run
    (note,) = policy.run_notes({})
    assert "first 5 steps" in note and "15 times" in note


def test_coactivation_reads_double_bundles_and_keeps_friends_resident():
    masks = _correlated_masks(3, 40, 3, 256, 0.05)
    policy = _policy(_ctx(TINY, ArraySource(masks), layout="coactivation"), predictor="oracle", window_k=2,
                     capacity_tokens=40)  # fmt: skip
    plans = _plans(policy, 0)
    first = masks[0]
    friends = policy.layout.friends
    for layer, plan in enumerate(plans):
        assert len(plan.preload) == first[layer].sum()
        assert (plan.preload[:, 1] == 2 * TINY.neuron_bytes("fp16")).all()
        assert policy.window.resident[layer, friends[layer, np.flatnonzero(first[layer])]].all()


def test_ffn_compute_active_is_gathered_over_predicted_and_resident_is_dense_over_the_matrix():
    masks = _correlated_masks(4, 10, 3, 256, 0.05)
    active = _policy(_ctx(TINY, ArraySource(masks)), predictor="oracle", capacity_tokens=10)
    resident = _policy(_ctx(TINY, ArraySource(masks)), predictor="oracle", capacity_tokens=10, ffn_compute="resident")
    for t in range(10):
        a, r = _plans(active, t), _plans(resident, t)
        ffn_a = [op for op in a[0].ops if op.name == "ffn"]
        ffn_r = [op for op in r[0].ops if op.name == "ffn"]
        assert ffn_a[0].gathered and ffn_a[0].flops == 2 * masks[t, 0].sum() * TINY.neuron_weights
        assert not ffn_r[0].gathered and ffn_r[0].flops == 2 * resident.matrix.n_rows[0] * TINY.neuron_weights


def test_trained_predictor_policy_trains_on_the_first_tokens_and_reports_its_false_negatives():
    x, y = _planted(5, t=700, layers=3, d=64, f=256)
    policy = _policy(_ctx(TINY, ArraySource(y, x)), predictor="trained", rank=8, rank_last=8, train_tokens=500,
                     capacity_tokens=100)  # fmt: skip
    fn = [_plans(policy, t) and policy.step_stats()["predictor_fn"] for t in range(100)]
    assert 0.0 < np.mean(fn) < 0.12
    assert policy.ranks.tolist() == [8, 8, 8]


def test_opt_statistical_policy_predicts_about_ten_percent_and_loads_a_fraction_of_it():
    opt = load_model("opt-6.7b")
    masks = _correlated_masks(6, 24, 32, 16384, 0.033)
    policy = _policy(_ctx(opt, ArraySource(masks)), predictor="statistical", window_k=5, capacity_tokens=24)
    stats = []
    for t in range(24):
        plans = _plans(policy, t)
        stats.append(policy.step_stats())
        read = sum(int(p.preload[:, 1].sum()) for p in plans)
        assert read == stats[-1]["neurons_read"] * 16384  # bundled fp16: 16 KiB per neuron
    per_token = 32 * 16384
    assert 0.08 < np.mean([s["neurons_predicted"] for s in stats]) / per_token < 0.12
    assert np.mean([s["neurons_read"] for s in stats[5:]]) < 0.6 * np.mean([s["neurons_predicted"] for s in stats])


def test_policy_without_activations_is_a_config_error():
    with pytest.raises(ConfigError, match="policy.predictor: needs an activation trace \\(got 'oracle'\\)"):
        _policy(_ctx(TINY, None), predictor="oracle")


def test_no_reuse_reads_every_predicted_neuron_each_token():
    """window_k 0: no FFN tenant in DRAM, every predicted neuron read every token, nothing copied."""
    from sim.config.experiment import load_experiment
    from sim.engine.simulate import simulate_case

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    (case,) = [
        c for c in load_experiment(experiments / "lif_table2.yaml", {"decode_tokens": 4}) if c.name == "predictor"
    ]
    result = simulate_case(case, timeline=False)
    tokens = result.tokens.query("phase == 'decode'")
    assert (tokens["neurons_read"] == tokens["neurons_predicted"]).all()
    assert (tokens["memmgmt_s"] == 0).all() and (tokens["neurons_resident"] == 0).all()
    assert "ffn_window" not in result.summary["dram_tenants_GB"]
    row = case.model.row_bytes(case.config.dtype)
    assert tokens["flash_bytes"].iloc[0] == tokens["neurons_read"].iloc[0] * 2 * row  # up row + down row


def test_a_bounded_window_forgets_its_oldest_tokens_and_never_outgrows_its_rows():
    rng = np.random.default_rng(0)
    L, n, k = 3, 200, 4
    masks = rng.random((40, L, n)) < 0.1
    free = SlidingWindow(L, n, k)
    peaks = np.zeros(L, np.int64)
    for m in masks:
        peaks = np.maximum(peaks, free.step(m).resident_counts())
    roomy, tight = SlidingWindow(L, n, k, capacity=peaks), SlidingWindow(L, n, k, capacity=peaks * 2 // 3)
    free = SlidingWindow(L, n, k)
    for m in masks:
        a, b, c = free.step(m), roomy.step(m), tight.step(m)
        assert (a.resident == b.resident).all()  # room for the peak: the plain window
        assert (c.resident_counts() <= peaks * 2 // 3).all() and (c.resident[m]).all()  # fits, keeps the token
        assert not (c.resident & ~a.resident).any()  # only ever forgets
    assert roomy.shortened == 0 < tight.shortened
    with pytest.raises(ValueError, match="one token's"):
        SlidingWindow(L, n, k, capacity=np.full(L, 5)).step(np.ones((L, n), bool))
