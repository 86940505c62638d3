"""LLM in a Flash beyond OPT: model features in profiles, activation statistics as a cited input, embeddings kept
on flash the way the paper budgets them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.cli import main
from sim.config.experiment import load_experiment
from sim.config.profiles import load_model
from sim.engine.simulate import simulate_case
from sim.errors import ConfigError
from sim.models.profile import ModelProfile
from sim.results import about
from sim.traces.statistics import ActivationStatistics, fit_statistics, load_statistics
from tests.test_lif import ArraySource, _ctx, _plans, _policy

BASE = dict(name="m", source="test", n_layers=2, d_model=64, d_ff=256, n_heads=4, n_kv_heads=4, head_dim=16,
            vocab_size=100, ffn_kind="relu")  # fmt: skip


# ---- model features -------------------------------------------------------------------------------
def test_qk_norm_and_attention_biases_are_counted_in_their_ops():
    plain, featured = ModelProfile(**BASE), ModelProfile(**BASE, qk_norm=True, biases=True)
    q_dim = 4 * 16
    assert featured.op_weights("q") - plain.op_weights("q") == q_dim + 2 * 16  # bias + LayerNorm weight and bias
    assert featured.op_weights("k") - plain.op_weights("k") == q_dim + 2 * 16
    assert featured.op_weights("v") - plain.op_weights("v") == q_dim
    assert featured.op_weights("o") - plain.op_weights("o") == 64
    assert featured.neuron_weights == plain.neuron_weights  # a neuron stays d_model weights per matrix


def test_gated_kinds_have_a_gate_and_fatrelu_needs_its_threshold():
    assert ModelProfile(**{**BASE, "ffn_kind": "squared_relu"}).ffn_ops == ("up", "down")
    fat = ModelProfile(**{**BASE, "ffn_kind": "fatrelu", "fatrelu_threshold": 0.0})
    assert fat.ffn_ops == ("gate", "up", "down")
    with pytest.raises(ValueError, match="fatrelu_threshold"):
        ModelProfile(**{**BASE, "ffn_kind": "fatrelu"})
    with pytest.raises(ValueError, match="fatrelu_threshold"):
        ModelProfile(**BASE, fatrelu_threshold=0.1)


def test_table3_models_carry_their_published_architecture():
    assert load_model("falcon-7b").parallel_attention and load_model("phi-2").parallel_attention
    persimmon = load_model("persimmon-8b")
    assert (persimmon.ffn_kind, persimmon.qk_norm, persimmon.rotary_fraction) == ("squared_relu", True, 0.5)
    assert persimmon.total_weights == pytest.approx(9.4e9, rel=0.01)  # "9.3B parameters incl. embeddings"
    assert load_model("llama-2-7b-fatrelu").gated and not load_model("llama-2-7b-fatrelu").tied_embeddings


def test_profiles_table_lists_the_features(capsys):
    assert main(["profiles"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("persimmon-8b "))
    assert "rotary 0.5, q/k norm, biases, untied head" in line


# ---- activation statistics ------------------------------------------------------------------------
def test_the_opt_statistics_file_holds_table6_and_app_c():
    stats = load_statistics("opt-6.7b-table6", "test")
    assert stats.density_profile(32).mean() == pytest.approx(0.0330)
    assert stats.density_profile(32)[[0, 15, 31]] == pytest.approx([0.0156, 0.0266, 0.0536])
    assert (stats.window.fresh_fraction, stats.predictor.recall, stats.predictor.fp_rate) == (0.024, 0.95, 0.07)


def test_an_unknown_statistics_name_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"activations.density: no activation statistics .*opt-6.7b-table6"):
        load_statistics("opt-7b", "exp.yaml")


def test_fitted_window_shares_count_fresh_and_held_neurons_exactly():
    masks = np.zeros((6, 1, 10), bool)  # one context; neuron sets {0,1}, {1,2}, {2,3}, {0,1}, {1,2}, {2,3}
    for t, pair in enumerate([(0, 1), (1, 2), (2, 3)] * 2):
        masks[t, 0, list(pair)] = True
    source = ArraySource(masks)
    source.n_layers, source.d_ff = 1, 10
    source.contexts = lambda start, stop: np.zeros(stop - start, np.int64)
    source.describe = lambda: "hand-made"
    stats = fit_statistics(source, "hand", "tiny", "test", k=2)
    assert stats.density.points == {1: 0.2}
    # as sim.lif.window steps: at t a window of k reads what tokens t-k .. t-1 did not hold, then holds t-k+1 .. t
    # k=2 (t=2..5): new against the two tokens before: 1, 1, 0, 1 rows; held after: 3, 4, 3, 3
    assert stats.window.by_k[2] == [3 / 40, 13 / 40]
    assert stats.window.by_k[1] == [6 / 50, 0.2]  # k=1 (t=1..5): new against the token before: 1, 1, 2, 1, 1
    # k=4 (t=4, 5): the four tokens before held all four rows; the window holds all four
    assert stats.window.by_k[4] == [0.0, 0.4]


def test_trace_statistics_command_writes_a_file_a_projection_loads_and_never_overwrites(tmp_path, capsys):
    out = tmp_path / "s.yaml"
    args = ["trace", "statistics", "traces/smollm2-135m.trace", "--name", "s", "--out", str(out)]
    assert main(args) == 0
    stats = load_statistics(str(out), "test")
    assert stats.kind == "fitted" and stats.model == "smollm2-135m" and "trace statistics" in stats.source
    assert np.mean(list(stats.density.points.values())) == pytest.approx(0.10, abs=0.01)  # threshold:0.9
    assert 0 < stats.window.fresh_fraction < stats.window.held_fraction < 1
    before = out.read_bytes()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before


def _experiment(tmp_path, model: str, density: str, policy_extra: str = "", layout_extra: str = "") -> list:
    path = tmp_path / "e.yaml"
    path.write_text(
        f"name: e\nhardware: apple-m1-max\nmodel: {model}\ndtype: fp16\ncontext_tokens: 16\ndecode_tokens: 4\n"
        f"dram_budget: 60 GB\nlayout: {{name: bundled{layout_extra}}}\n"
        f"activations: {{source: projection, path: traces/smollm2-135m.trace, density: {density}, calib_tokens: 64}}\n"
        f"policy: {{name: llm_in_flash, predictor: statistical, capacity_tokens: 8{policy_extra}}}\n"
    )
    return load_experiment(path)


def test_statistics_set_the_predictor_where_the_experiment_leaves_it(tmp_path):
    (opt,) = _experiment(tmp_path, "opt-6.7b", "opt-6.7b-table6")
    assert (opt.config.policy.recall, opt.config.policy.fp_rate) == (0.95, 0.07) and opt.notes == ()
    (mine,) = _experiment(tmp_path, "opt-6.7b", "opt-6.7b-table6", ", recall: 0.8")
    assert (mine.config.policy.recall, mine.config.policy.fp_rate) == (0.8, 0.07)
    (falcon,) = _experiment(tmp_path, "falcon-7b", "opt-6.7b-table6")
    (note,) = falcon.notes
    assert "falcon-7b use opt-6.7b-table6 (with the statistical predictor's recall 0.95, fp_rate 0.07)" in note
    assert "an assumption" in note
    (flat,) = _experiment(tmp_path, "falcon-7b", "0.05")
    assert flat.statistics is None and "are OPT-6.7B's (LLM in a Flash App. C)" in flat.notes[0]


def test_about_names_the_statistics_and_the_hardware_caveats(tmp_path):
    cases = _experiment(tmp_path, "opt-6.7b", "opt-6.7b-table6")
    result = simulate_case(cases[0], timeline=False)
    text = about(tmp_path / "e.yaml", cases, [result])
    assert "Activation statistics: opt-6.7b-table6 (published, opt-6.7b): LLM in a Flash" in text
    assert "Caveat (apple-m1-max): flash: only the three Table 2 operating points" in text
    (window,) = [n for n in result.notes if n.startswith("llm_in_flash window")]
    assert "opt-6.7b-table6 (published) gives 2.40% fresh, 24.0% held at k=5" in window


# ---- embeddings on flash --------------------------------------------------------------------------
UNTIED = ModelProfile(**{**BASE, "n_layers": 3}, tied_embeddings=False)


def test_input_flash_holds_the_lm_head_and_reads_one_input_row_per_token():
    masks = np.zeros((6, 3, 256), bool)
    masks[:, :, :8] = True
    held = {}
    for where in ("dram", "input_flash", "flash"):
        ctx = _ctx(UNTIED, ArraySource(masks))
        policy = _policy(ctx, predictor="oracle", window_k=2, capacity_tokens=6, embeddings=where)
        held[where] = ctx.devices.memories["dram"].tenants().get("embeddings", 0.0)
        plans = [_plans(policy, t) for t in range(3)]
        table_start, table_len = ctx.layout.op_extents(-1, ("embed",))[0]
        for p in plans:  # layer 0's read: the token's input row (inside the input table) before its neurons
            rows = p[0].preload[(p[0].preload[:, 0] >= table_start) & (p[0].preload[:, 0] < table_start + table_len)]
            if where == "dram":
                assert rows.shape[0] == 0
            else:
                assert rows.shape == (1, 2) and rows[0, 1] == 64 * 2 and rows[0].sum() <= table_start + table_len
    table = 100 * 64 * 2
    assert held["dram"] == 2 * table and held["input_flash"] == table and held["flash"] == 0.0


def test_input_flash_of_a_tied_model_is_dram():
    tied = ModelProfile(**BASE, tied_embeddings=True)
    ctx = _ctx(tied, ArraySource(np.ones((4, 2, 256), bool)))
    policy = _policy(ctx, predictor="oracle", window_k=1, capacity_tokens=4, embeddings="input_flash")
    start, length = ctx.layout.op_extents(-1, ("embed",))[0]
    assert not (_plans(policy, 0)[0].preload[:, 0] < start + length).any()  # nothing read from the table
    assert ctx.devices.memories["dram"].tenants()["embeddings"] == 100 * 64 * 2


def test_statistics_files_in_the_repository_validate():
    from sim.traces.statistics import STATISTICS_DIR

    for path in STATISTICS_DIR.glob("*.yaml"):
        ActivationStatistics.model_validate(yaml.safe_load(path.read_text()))


# ---- bundle dtype apart from the compute dtype ----------------------------------------------------
def test_layout_dtype_sizes_the_bundles_read_while_dram_and_compute_keep_the_experiments_dtype(tmp_path):
    (fp16,) = _experiment(tmp_path, "opt-6.7b", "opt-6.7b-table6")
    (fp32,) = _experiment(tmp_path, "opt-6.7b", "opt-6.7b-table6", layout_extra=", dtype: fp32")
    a, b = (simulate_case(c, timeline=False) for c in (fp16, fp32))
    decode = lambda r: r.tokens[r.tokens.phase == "decode"]  # noqa: E731
    ratio = decode(b)["flash_bytes"].sum() / decode(a)["flash_bytes"].sum()
    assert ratio == pytest.approx(2.0, rel=1e-9)  # the same neurons, 32 KiB bundles instead of 16 KiB
    assert a.summary["dram_GB"] == pytest.approx(b.summary["dram_GB"])  # the window's rows are fp16 in DRAM either way
    assert a.summary["compute_ms"] == pytest.approx(b.summary["compute_ms"])


def test_layout_dtype_is_refused_where_a_policy_keeps_its_own_layout(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        "name: e\nhardware: pixel-6\nmodel: llama-2-7b\ndtype: q4_0\nlayout: {name: bundled, dtype: fp16}\n"
        "policy: {name: activeflow}\n"
    )
    with pytest.raises(ConfigError, match="layout.dtype: policy activeflow stores weights at the experiment's dtype"):
        load_experiment(path)


# ---- parallel attention ---------------------------------------------------------------------------
def _falcon_case(tmp_path, parallel: bool, overlap: bool, policy: str):
    model = yaml.safe_load(load_model("falcon-7b").model_dump_json())
    model["parallel_attention"] = parallel
    (tmp_path / "falcon.yaml").write_text(yaml.safe_dump(model))
    knobs = "predictor: statistical, capacity_tokens: 8" if policy == "llm_in_flash" else "fill_budget: true"
    path = tmp_path / f"e-{parallel}-{overlap}-{policy}.yaml"
    path.write_text(
        "name: e\nhardware: apple-m1-max\nmodel: falcon.yaml\ndtype: fp16\ncontext_tokens: 16\ndecode_tokens: 4\n"
        "dram_budget: 10 GB\nlayout: {name: bundled}\n"
        "activations: {source: projection, path: traces/smollm2-135m.trace, calib_tokens: 64}\n"
        f"policy: {{name: {policy}, overlap: {str(overlap).lower()}, {knobs}}}\n"
    )
    (case,) = load_experiment(path)
    return simulate_case(case, timeline=False).summary


@pytest.mark.parametrize("policy", ["llm_in_flash", "hybrid"])
def test_parallel_attention_overlaps_a_layers_reads_only_when_the_policy_overlaps(tmp_path, policy):
    serial = [_falcon_case(tmp_path, parallel, False, policy)["total_ms"] for parallel in (False, True)]
    assert serial[0] == pytest.approx(serial[1])  # the paper's accounting: I/O and compute summed
    sequential, parallel = (_falcon_case(tmp_path, p, True, policy) for p in (False, True))
    assert parallel["total_ms"] < sequential["total_ms"]
    assert parallel["io_ms"] == pytest.approx(sequential["io_ms"], rel=0.05)  # the same bytes read


# ---- the per-model experiment ---------------------------------------------------------------------
def test_lif_models_runs_every_table3_model_at_its_paper_budget(tmp_path):
    assert main(["run", "experiments/lif_models.yaml", "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "table3_models.csv")
    assert (table["status"] == "ok").all() and len(table) == 18
    assert (tmp_path / "out" / "table3_models.png").is_file()
    for model, rows in table.groupby("model"):
        by = dict(zip(rows["method"] + "," + rows["statistics"].fillna(""), rows["total_ms"], strict=True))
        alls = [v for k, v in by.items() if k.startswith("all,")]
        assert max(alls) < by.get("hybrid,", by["naive,"]) <= by["naive,"], model
        budgeted = rows[rows["method"] != "naive"]
        assert (budgeted["dram_GB"] <= budgeted["dram_budget_GB"] + 1e-9).all(), model
    phi = table[(table["model"] == "phi-2") & (table["method"] != "naive")]
    assert phi["dram_budget_GB"].iloc[0] == pytest.approx(
        0.65 * load_model("phi-2").total_bytes("fp16") / 1e9, rel=1e-3
    )


# ---- compute by kernel shape ----------------------------------------------------------------------
def test_a_gathered_kernel_pays_its_row_term_so_narrow_rows_cost_more_per_byte():
    import simpy

    from sim.config.profiles import load_hardware
    from sim.devices.processor import Processor
    from sim.policies.ops import StepOps

    spec = load_hardware("apple-m1-max").processors["cpu"]
    assert spec.gather_row_overhead == 0  # every committed profile: the calibrated OPT rows are unchanged
    rowed = Processor(simpy.Environment(), "cpu", spec.model_copy(update={"gather_row_overhead": 1e-7}))
    plain = Processor(simpy.Environment(), "cpu", spec)
    per_byte = {}
    for name in ("opt-6.7b", "phi-2"):
        (op,) = StepOps(load_model(name), "fp16", "fp16").ffn(1000, 1, gathered=True)
        assert op.rows == 2000  # up and down: a row each per neuron
        extra = rowed.op_time_s(op) - plain.op_time_s(op)
        assert extra == pytest.approx(2000 * 1e-7)
        per_byte[name] = rowed.op_time_s(op) / op.nbytes
    assert per_byte["phi-2"] > per_byte["opt-6.7b"]  # 2560-wide rows against 4096-wide


def test_trace_statistics_states_a_trained_predictors_held_out_quality(tmp_path, capsys):
    out = tmp_path / "s.yaml"
    base = ["trace", "statistics", "traces/smollm2-135m.trace", "--name", "s", "--out", str(out)]
    assert main([*base, "--predictor", "predictors/smollm2-135m-r32.npz", "--predictor-recall", "0.9"]) == 0
    stats = load_statistics(str(out), "test")
    assert (stats.predictor.recall, stats.predictor.fp_rate) == (0.8573, 0.4215)  # its meta's held-out quality
    wrong = ["--rule", "threshold:0.95", "--predictor", "predictors/smollm2-135m-r32.npz"]
    assert main([*base[:-2], "--out", str(tmp_path / "t.yaml"), *wrong]) == 2
    assert "trained on labels 'threshold:0.9', the statistics measure 'threshold:0.95'" in capsys.readouterr().err
    assert not (tmp_path / "t.yaml").exists()


@pytest.mark.parametrize("command", ["statistics", "stats"])
def test_a_bad_rule_on_the_command_line_is_one_line(tmp_path, capsys, command):
    args = ["trace", command, "traces/smollm2-135m.trace", "--rule", "bogus", "--out", str(tmp_path / "x.yaml")]
    assert main(args + (["--name", "x"] if command == "statistics" else [])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--rule: unknown sparsity rule 'bogus'" in err
    assert not (tmp_path / "x.yaml").exists()


def test_llm_in_flash_serves_requests_one_after_another(tmp_path):
    (case,) = _experiment(tmp_path, "opt-6.7b", "opt-6.7b-table6")
    two = load_experiment(tmp_path / "e.yaml", {"requests": 2})[0]
    one, both = simulate_case(case, timeline=False), simulate_case(two, timeline=False)
    decode = both.tokens[both.tokens.phase == "decode"]
    assert len(decode) == 2 * 4 and both.requests["finished_s"].notna().all()
    first = one.tokens[one.tokens.phase == "decode"]["neurons_predicted"].to_numpy()
    assert (decode["neurons_predicted"].to_numpy()[4:] == first).all()  # the second reads the source from token 0


def test_fitted_window_shares_are_what_the_simulators_window_loads_and_holds():
    from sim.lif.bits import pack_rows
    from sim.lif.window import SlidingWindow

    masks = np.random.default_rng(3).random((40, 2, 64)) < 0.2
    source = ArraySource(masks)
    source.n_layers, source.d_ff = 2, 64
    source.contexts = lambda start, stop: np.zeros(stop - start, np.int64)
    source.describe = lambda: "random"
    stats = fit_statistics(source, "r", "tiny", "test", k=3)
    for k in (1, 2, 3, 5):
        window, fresh, held = SlidingWindow(2, 64, k), [], []
        for t in range(40):
            step = window.step_bits(pack_rows(masks[t]))
            if t >= k:  # full windows before t
                fresh.append(step.load.sum() / 128)
                held.append(step.resident.sum() / 128)
        assert stats.window.by_k[k] == pytest.approx([np.mean(fresh), np.mean(held)], abs=1e-5), k
