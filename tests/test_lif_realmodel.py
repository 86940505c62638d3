"""LLM in a Flash on the real model: window union, the "pre" selector's compute set, predictor files, end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.errors import ConfigError
from sim.lab.kernels import Hooks, ModelConfig, RunState, Touched, Weights, prefill
from sim.lab.kernels.ops import swiglu_act
from sim.lab.lif.selector import LifSelector, window_union
from sim.lab.lif.train import layer_truth
from sim.lif.predictor import LayerPredictor, LowRankPredictor, load, rounded, save
from sim.lif.window import SlidingWindow
from sim.traces.sparsity import SparsityRule, topk_mask

CFG = ModelConfig("llama", n_layers=2, d_model=16, d_ff=24, n_heads=4, n_kv_heads=2, head_dim=4, vocab_size=50,
                  context_length=32)  # fmt: skip
TOPK = SparsityRule("topk", 0.75).fit()  # exactly 6 of 24 neurons per token and layer


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _predictor(rng, L=CFG.n_layers, d=CFG.d_model, F=CFG.d_ff, r=3) -> LowRankPredictor:
    layers = [LayerPredictor(rng.standard_normal((d, r), np.float32), rng.standard_normal((r, F), np.float32),
                             rng.standard_normal(F).astype(np.float32), 0.5) for _ in range(L)]  # fmt: skip
    return rounded(LowRankPredictor(layers))


# ---- window union -------------------------------------------------------------------------------------------------
def test_window_union_on_hand_made_masks():
    m = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]], bool)
    want_k2 = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], bool)
    assert (window_union(m, 2) == want_k2).all()
    assert (window_union(m, 1) == m).all()
    assert (window_union(m, 99) == np.logical_or.accumulate(m, axis=0)).all()
    with pytest.raises(ValueError, match="k must be >= 1"):
        window_union(m, 0)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_window_union_equals_the_sliding_window_resident_set(rng, k):
    masks = rng.random((20, 1, 30)) < 0.2  # [n, L=1, F]
    window = SlidingWindow(1, 30, k)
    resident = np.stack([window.step(m).resident[0] for m in masks])  # [n, F]
    assert (window_union(masks[:, 0], k) == resident).all()


# ---- the selector --------------------------------------------------------------------------------------------------
def _selector(w, kind, ffn_compute="active", k=1, predictor=None) -> LifSelector:
    return LifSelector(kind, ffn_compute, k, lambda l, a: layer_truth(TOPK, l, a),
                       lambda l: (w.layers[l].gate, w.layers[l].up), predictor)  # fmt: skip


def _run(w, sel: LifSelector, ids) -> tuple[Touched, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Prefill through the selector -> (what the kernels read, mlp_in per layer, returned mask per layer)."""
    touched, seen, chosen = Touched(), {}, {}

    def select(layer, x, act):
        chosen[layer] = sel.select(layer, x, act)
        return chosen[layer]

    from sim.lab.kernels import FfnSelector

    hooks = Hooks(observer=lambda a: seen.__setitem__(a.layer, a.mlp_in), touched=touched,
                  ffn_selector=FfnSelector(select, "pre"))  # fmt: skip
    prefill(CFG, w, RunState.new(CFG, len(ids)), ids, hooks)
    return touched, seen, chosen


@pytest.mark.parametrize("dtype", ["fp16", "q4_1"])
def test_oracle_selector_computes_exactly_the_true_neurons(rng, dtype):
    w, ids = Weights.random(CFG, rng), [3, 9, 4, 7, 1]
    sel = _selector(w, "oracle")
    touched, seen, chosen = _run(w, sel, ids)
    for layer, x in seen.items():  # the true set recomputed from the observed layer input
        lw = w.layers[layer]
        assert (chosen[layer] == topk_mask(swiglu_act(x, lw.gate, lw.up)[:, None], 6)[:, 0]).all()
    n_neurons = len(ids) * CFG.n_layers * 6
    assert sel.counts.computed == sel.counts.true == n_neurons and sel.counts.missed == 0
    assert touched.nbytes(dtype) == n_neurons * CFG.profile().neuron_bytes(dtype)
    assert sel.counts.summary()["fraction_computed"] == pytest.approx(0.25)


def test_trained_selector_computes_predicted_or_window_union_and_counts_misses(rng):
    w, ids, pred = Weights.random(CFG, rng), [5, 2, 8, 8, 3, 1], _predictor(rng)
    active, resident = _selector(w, "trained", predictor=pred), _selector(w, "trained", "resident", 3, pred)
    _, seen, chosen = _run(w, active, ids)
    p0 = pred.layers[0].predict(seen[0])  # [n, F]
    assert (chosen[0] == p0).all()
    _, seen_r, chosen_r = _run(w, resident, ids)
    assert (chosen_r[0] == window_union(p0, 3)).all()  # layer 0 sees the same input in both runs
    c = resident.counts
    assert c.computed >= c.predicted and c.missed <= c.missed_by_predictor
    lw = w.layers[0]
    true0 = topk_mask(swiglu_act(seen[0], lw.gate, lw.up)[:, None], 6)[:, 0]
    missed0 = int((true0 & ~p0).sum())
    assert active.counts.missed_by_predictor >= missed0 > 0  # a random predictor misses some true neurons


# ---- predictor files -----------------------------------------------------------------------------------------------
def test_predictor_file_round_trip_and_threshold_rows(rng, tmp_path):
    pred, path = _predictor(rng), tmp_path / "p.npz"
    thr = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    save(path, pred, [0.9, 0.95], thr, {"rule": "topk:0.75", "command": "x"})
    got, meta = load(path, CFG.n_layers, CFG.d_model, CFG.d_ff, recall=0.95)
    x = rng.standard_normal((7, CFG.n_layers, CFG.d_model)).astype(np.float32)
    assert (got.threshold == thr[1]).all() and meta["rule"] == "topk:0.75" and meta["recall_targets"] == [0.9, 0.95]
    for a, b in zip(got.layers, pred.layers, strict=True):
        assert (a.W1 == b.W1).all() and (a.W2 == b.W2).all() and (a.b == b.b).all()
    same = LowRankPredictor(
        [LayerPredictor(lp.W1, lp.W2, lp.b, float(t)) for lp, t in zip(pred.layers, thr[1], strict=True)]
    )
    assert (got.predict(x) == same.predict(x)).all()
    assert (load(path, CFG.n_layers, CFG.d_model, CFG.d_ff)[0].threshold == thr[0]).all()


def test_predictor_file_errors_name_file_and_mismatch(rng, tmp_path):
    path = tmp_path / "p.npz"
    save(path, _predictor(rng), [0.9], np.zeros((1, 2), np.float32), {"rule": "threshold:0.9"})
    with pytest.raises(ConfigError, match=r"p\.npz: d_ff: predictor was trained for d_ff=24, the model has 1536"):
        load(path, CFG.n_layers, CFG.d_model, 1536)
    with pytest.raises(ConfigError, match=r"p\.npz: n_layers: .*n_layers=2, the model has 30"):
        load(path, 30, CFG.d_model, CFG.d_ff)
    with pytest.raises(ConfigError, match=r"p\.npz: recall: not a stored recall target"):
        load(path, CFG.n_layers, CFG.d_model, CFG.d_ff, recall=0.5)
    with pytest.raises(ConfigError, match="missing.npz: predictor_path: no such predictor file"):
        load(tmp_path / "missing.npz", 2, 16, 24)


# ---- end to end on the real model ----------------------------------------------------------------------------------
TINY = """
kind: lif_accuracy
name: tiny
predictor_path: predictors/smollm2-135m-r32.npz
heldout_tokens_per_context: 12
heldout_contexts_per_task: 1
points:
  - {name: oracle, predictor: oracle}
  - {name: r0.9-resident, predictor: trained, recall: 0.9, window_k: 3, ffn_compute: resident}
simulation:
  hardware: [{name: phone, hardware: oneplus-12}]
  experiment: {decode_tokens: 3, context_tokens: 16, timeline_tokens: 0,
               activations: {source: trace, path: traces/smollm2-135m.trace}}
"""


@pytest.mark.model
def test_lif_accuracy_experiment_end_to_end(model_path, tmp_path):
    from sim.runner import run_experiment

    exp = tmp_path / "tiny.yaml"
    exp.write_text(TINY)
    out = run_experiment(exp, tmp_path / "out", plots=False, progress=False)
    df = pd.read_csv(out / "speed_accuracy.csv").set_index("point")
    assert list(df.index) == ["oracle", "r0.9-resident"]
    oracle, trained = df.loc["oracle"], df.loc["r0.9-resident"]
    assert oracle.fn_rate == 0 and oracle.fraction_computed == pytest.approx(oracle.fraction_true)
    assert trained.fraction_computed > trained.fraction_predicted and trained.fn_rate_computed <= trained.fn_rate
    assert np.isfinite(df.ppl).all() and (df.phone_ms_per_token > 0).all() and (df.phone_flash_GB_per_token > 0).all()
    assert trained.phone_sim_fn_rate > 0 == oracle.phone_sim_fn_rate
    about = (out / "about.md").read_text()
    assert "predictors/smollm2-135m-r32.npz (sha256" in about.replace("`", "") and "smollm2-135m.trace" in about
