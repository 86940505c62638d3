"""KV-cache policies (sim/kv): SimHash sampling against MagicPIG's closed form, what each policy keeps, and the
numpy backend's attention through a policy (on the real model when its file is there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.cli import main
from sim.config.experiment import load_experiment
from sim.engine.simulate import prepare_case, simulate_case
from sim.kv import lsh
from sim.kv.selection import H2O, Full, MagicPIG, Quest, Streaming, TopK, attend, select
from sim.lab.kernels.ops import attention


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize(("K", "L", "cos"), [(8, 75, 0.6), (10, 150, 0.8), (4, 10, 0.3)])
def test_simhash_sampling_rate_matches_the_closed_form(K, L, cos):
    rng = np.random.default_rng(0)
    hd, trials = 64, 400
    q = _unit(rng.standard_normal(hd))
    orth = _unit(rng.standard_normal(hd) - q * (q @ _unit(rng.standard_normal(hd))))
    orth = _unit(orth - q * (q @ orth))
    k = cos * q + np.sqrt(1 - cos**2) * orth  # unit key at the given angle
    hits = 0
    for _ in range(trials):
        planes = lsh.projections(rng, hd, K, L)
        hits += int(lsh.collisions(lsh.codes(q[None], planes, K), lsh.codes(k[None], planes, K))[0, 0] >= 2)
    u = float(lsh.sample_probability(np.array(cos), K, L))
    assert abs(hits / trials - u) <= 4 * np.sqrt(u * (1 - u) / trials) + 1e-3


def _layer(seed: int = 0, T: int = 96, n: int = 8, H: int = 4, KV: int = 2, hd: int = 16):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, H, hd)).astype(np.float32)
    k = rng.standard_normal((T, KV, hd)).astype(np.float32)
    v = rng.standard_normal((T, KV, hd)).astype(np.float32)
    pos = np.arange(T - n, T)
    scores = np.einsum("nkgd,tkd->kgnt", q.reshape(n, KV, H // KV, hd), k).reshape(H, n, T) / np.sqrt(hd)
    return q, k, v, pos, scores


def test_full_policy_is_the_kernels_causal_attention():
    q, k, v, pos, scores = _layer()
    keep, log_w = select(Full(name="full"), q, k, pos, scores)
    np.testing.assert_allclose(attend(scores, v, keep, log_w), attention(q, k, v, pos), rtol=1e-5, atol=1e-6)


def test_what_each_policy_keeps():
    q, k, v, pos, scores = _layer()
    seen = pos + 1
    keep, _ = select(Streaming(name="streaming", sinks=4, window=10), q, k, pos, scores)
    assert (keep.sum(-1) == np.minimum(seen, 14)).all() and keep[..., :4].all()
    keep, _ = select(TopK(name="topk", budget=0.25), q, k, pos, scores)
    assert (keep.sum(-1) == np.ceil(0.25 * seen)).all()
    best = np.where(keep, scores, np.inf).min(-1)  # the smallest kept score beats every dropped one
    assert (np.where(keep | (np.arange(len(k)) > pos[:, None]), -np.inf, scores).max(-1) <= best).all()
    keep, _ = select(TopK(name="topk", budget=1.0), q, k, pos, scores)
    assert (keep.sum(-1) == seen).all()
    acc = np.random.default_rng(1).random(scores.shape)
    keep, _ = select(H2O(name="h2o", budget=0.3, recent=8), q, k, pos, scores, acc=acc)
    assert (keep.sum(-1) == np.ceil(0.3 * seen)).all() and all(
        keep[:, i, p - 7 : p + 1].all() for i, p in enumerate(pos)
    )
    keep, _ = select(Quest(name="quest", budget=0.2, page_tokens=8), q, k, pos, scores)
    own = [keep[:, i, (p // 8) * 8 : p + 1].all() for i, p in enumerate(pos)]
    assert all(own) and (keep.sum(-1) <= np.ceil(0.2 * seen / 8)[None] * 8).all()
    assert not (keep & (np.arange(len(k)) > pos[:, None])).any()  # causal


def test_magicpig_keeps_sinks_and_window_exactly_and_weights_only_sampled_keys():
    q, k, v, pos, scores = _layer(T=200)
    policy = MagicPIG(name="magicpig", K=4, L=20, sinks=4, window=16)
    planes = lsh.projections(np.random.default_rng(2), q.shape[-1], policy.K, policy.L)
    keep, log_w = select(policy, q, k, pos, scores, planes=planes)
    for i, p in enumerate(pos):
        assert keep[:, i, :4].all() and keep[:, i, p - 15 : p + 1].all() and not keep[:, i, p + 1 :].any()
        assert (log_w[:, i, :4] == 0).all() and (log_w[:, i, p - 15 : p + 1] == 0).all()
    sampled = keep & (log_w > 0)
    assert sampled.any() and (log_w[~keep] == 0).all()


# ---- the simulator's side: kv_offload on the round-number fixture (10 GB/s PCIe, 100 GB/s CPU, 1 TB/s GPU) -----
FIXTURES = Path(__file__).parent / "fixtures"
KV_PER_TOKEN_LAYER = 2 * 8 * 128 * 2  # model-uniform: K and V, 8 kv heads x 128, fp16


def _kv_case(tmp_path, **fields):
    base = {
        "name": "kv",
        "hardware": str(FIXTURES / "hw-simple.yaml"),
        "model": str(FIXTURES / "model-uniform.yaml"),
        "processor": "gpu",
        "context_tokens": 4000,
        "decode_tokens": 3,
        "prefill_chunk_tokens": 0,
        "timeline_tokens": 0,
        "placement": {"kv": "dram"},
        "policy": {"name": "kv_offload", "attention_on": "gpu"},
    }
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(_merge(base, fields)))
    return path


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(a[key], value) if isinstance(value, dict) and isinstance(a.get(key), dict) else value
    return out


def _simulate(path):
    (case,) = load_experiment(path)
    return simulate_case(case, timeline=False)


def test_fetching_the_kv_cache_over_pcie_costs_its_bytes_over_the_link(tmp_path):
    r = _simulate(_kv_case(tmp_path))
    steps = r.tokens.query("phase == 'decode'")
    kv_tokens = 4000 + np.arange(3)  # tokens cached before each decode step
    expected_s = 4 * kv_tokens * KV_PER_TOKEN_LAYER / 10e9  # four layers, serial with compute
    np.testing.assert_allclose(steps["xfer_s"], expected_s, rtol=1e-9)


def test_streaming_holds_and_reads_only_sinks_and_window(tmp_path):
    policy = {"attention": {"name": "streaming", "sinks": 4, "window": 60}}
    r = _simulate(_kv_case(tmp_path, policy=policy))
    steps = r.tokens.query("phase == 'decode'")
    np.testing.assert_allclose(steps["xfer_s"], 4 * 64 * KV_PER_TOKEN_LAYER / 10e9, rtol=1e-9)
    assert r.summary["kv_peak_GB"] == pytest.approx(64 * 4 * KV_PER_TOKEN_LAYER / 1e9)


def test_cpu_attention_moves_only_q_and_the_output(tmp_path):
    r = _simulate(_kv_case(tmp_path, policy={"attention_on": "cpu"}))
    steps = r.tokens.query("phase == 'decode'")
    q_bytes = 8 * 128 * 2  # one token's q (fp16), and the same for the output
    np.testing.assert_allclose(steps["xfer_s"], 4 * 2 * q_bytes / 10e9, rtol=1e-9)


def test_magicpig_reads_its_sampled_share_and_counts_its_hash_tables(tmp_path):
    policy = {"attention_on": "cpu", "attention": {"name": "magicpig", "K": 10, "L": 100}, "sampled_fraction": 0.05}
    path = _kv_case(tmp_path, policy=policy, batch=2)
    (case,) = load_experiment(path)
    prep = prepare_case(case, timeline=False, cache=None)
    assert prep.policy.keys(4000) == (pytest.approx(0.05 * (4000 - 68)), 68.0)
    h2o = {"attention_on": "cpu", "attention": {"name": "h2o", "budget": 0.01, "recent": 64}}
    policy = prepare_case(load_experiment(_kv_case(tmp_path, policy=h2o))[0], timeline=False, cache=None).policy
    assert policy.keys(4000) == (64.0, 0.0) and policy.kv_tokens_held(4000) == 64.0  # the budget includes recent
    quest = {"attention_on": "cpu", "attention": {"name": "quest", "budget": 0.1, "page_tokens": 16}}
    policy = prepare_case(load_experiment(_kv_case(tmp_path, policy=quest))[0], timeline=False, cache=None).policy
    assert policy.keys(4000) == (25 * 16 + 250, 0.0)  # 25 pages read whole + one K-sized min/max pair per page
    tables = prep.devices.memories["dram"].tenants()["hash_tables"]
    assert tables == 4 * 8 * 100 * (4000 + 3) * 2 * 2  # layers x kv heads x L x context x 2 B x batch
    default = {"attention_on": "cpu", "attention": {"name": "magicpig", "K": 10, "L": 150}}
    prep = prepare_case(load_experiment(_kv_case(tmp_path, policy=default))[0], timeline=False, cache=None)
    assert 0.01 < prep.policy.sampled_fraction < 0.1  # from SmolLM2's real q/k (sim/kv/stats.py)


def test_a_kv_cache_that_cannot_fit_is_one_line_before_the_run(tmp_path, capsys):
    path = _kv_case(tmp_path, placement={"kv": "vram"}, context_tokens=1_000_000)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vram: 1 request(s) x 1000003 tokens need" in err and "at most 0" in err


@pytest.mark.model
def test_the_real_model_through_kv_policies(model_path, tmp_path):
    from sim.lab.kv_accuracy import run_kv_accuracy

    spec = {
        "kind": "kv_accuracy",
        "context_tokens": 160,
        "eval_tokens": 8,
        "tasks": ["literature"],
        "policies": [{"name": "full"}, {"name": "topk", "budget": 1.0}, {"name": "magicpig", "K": 6, "L": 40,
                     "window": 16}, {"name": "streaming", "sinks": 4, "window": 8}],
    }  # fmt: skip
    (tmp_path / "kv.yaml").write_text(yaml.safe_dump(spec))
    import pandas as pd

    rows = pd.read_csv(run_kv_accuracy(tmp_path / "kv.yaml", tmp_path / "out", progress=False)).set_index("policy")
    full, every = rows.loc["full"], rows.loc["topk budget=1"]
    assert full.attn_rel_error == 0 and full.agreement == 1 and full.ppl == pytest.approx(full.dense_ppl)
    assert full.accepted_gamma2 == 2 and full.accepted_gamma6 == 6  # the full cache drafts what it verifies
    assert every.attn_rel_error < 1e-5 and every.keys_fraction == 1  # top-k of everything is full attention
    magic = rows.loc["magicpig K=6 L=40 sinks=4 window=16"]
    assert magic.sampled_fraction == pytest.approx(magic.closed_form_fraction, rel=0.25)  # hashing = the formula
    stream = rows.loc["streaming sinks=4 window=8"]
    assert stream.keys_fraction < 0.1 and stream.attn_rel_error > every.attn_rel_error


def test_speculative_acceptance_counts_leading_agreements():
    from sim.lab.kv_accuracy import accepted

    agree = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
    assert accepted(agree, 2) == pytest.approx(8 / 7)  # runs 2,1,0,2,2,1,0 from the 7 start positions
    assert accepted(np.ones(10, bool), 6) == 6 and accepted(np.zeros(10, bool), 2) == 0


def test_a_speculative_round_costs_gamma_drafts_and_one_verify_and_emits_accepted_plus_one(tmp_path):
    draft = {"name": "streaming", "sinks": 4, "window": 60}
    base = _simulate(_kv_case(tmp_path, decode_tokens=1)).tokens["total_s"].iloc[0]  # one full-cache token
    one_draft = _simulate(_kv_case(tmp_path, decode_tokens=1, policy={"attention": draft})).tokens["total_s"].iloc[0]
    spec = {"speculate": {"gamma": 3, "draft": draft, "accepted": 1.5}}
    r = _simulate(_kv_case(tmp_path, decode_tokens=25, policy=spec))
    steps = r.tokens
    assert steps["emitted_tokens"].sum() == 25 and r.summary["tokens"] == 25
    assert steps["emitted_tokens"].iloc[:4].tolist() == [2, 3, 2, 3]  # 2.5 a round: the remainder carries over
    # a round: 3 draft passes (each a full-cache token minus the keys it skips) then a verify pass over 4 tokens
    assert steps["total_s"].iloc[0] == pytest.approx(3 * one_draft + base, rel=0.05)
    assert r.summary["tokens_per_s"] == pytest.approx(r.summary["tokens_per_step"] / steps["total_s"].mean())


@pytest.mark.parametrize(
    "speculate",
    [{"draft": {"name": "topk"}, "accepted": 2.0, "acceptance_rate": 0.9}, {"draft": {"name": "full"}, "accepted": 1},
     {"gamma": 2, "draft": {"name": "topk"}, "accepted": 3}],
)  # fmt: skip
def test_bad_speculation_settings_are_one_line_errors(tmp_path, speculate):
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="speculate"):
        load_experiment(_kv_case(tmp_path, policy={"speculate": speculate}))
