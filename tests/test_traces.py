"""Trace format round trip and errors, sparsity rules, mask statistics vs closed forms, projection and the
fitted synthetic generator. Everything runs on small synthetic arrays (no model file needed)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from sim.config.profiles import load_model
from sim.errors import TraceError
from sim.traces import stats
from sim.traces.encoding import Encoding, log8
from sim.traces.format import TraceReader, TraceWriter
from sim.traces.projection import ProjectedSource, density_profile, layer_map, opt_6_7b_density
from sim.traces.source import ActivationSource, SourceBase, TraceSource
from sim.traces.sparsity import SparsityRule, k_for, layer_thresholds, threshold_mask, topk_mask
from sim.traces.synthetic import SyntheticSource, fit

MODEL = {"name": "tiny", "n_layers": 4, "d_model": 16, "d_ff": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 4}


def _arrays(rng: np.random.Generator, T: int, ctx_len: int = 40) -> dict[str, np.ndarray]:
    L, d, F = MODEL["n_layers"], MODEL["d_model"], MODEL["d_ff"]
    ctx = np.arange(T) // ctx_len
    return {
        "ffn_act": np.exp(rng.normal(-2.0, 2.0, (T, L, F))).astype(np.float32),
        "gate_neg": rng.random((T, L, F)) < 0.6,
        "mlp_in": rng.standard_normal((T, L, d)).astype(np.float32),
        "q": rng.standard_normal((T, L, 4, 4)).astype(np.float32),
        "k": rng.standard_normal((T, L, 2, 4)).astype(np.float32),
        "token_id": rng.integers(0, 1000, T).astype(np.int32),
        "position": (np.arange(T) % ctx_len).astype(np.int32),
        "task_id": (ctx // 2).astype(np.int16),
        "context_id": ctx.astype(np.int32),
    }


def _write(path, arrays, fields=("ffn_act", "gate_neg", "mlp_in", "q", "k"), chunk=32, pieces=(0, 7, 50), **kw):
    T = len(arrays["token_id"])
    with TraceWriter(path, MODEL, list(fields), chunk_tokens=chunk, **kw) as w:
        bounds = [*pieces, T]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            w.append({f: v[a:b] for f, v in arrays.items() if f in w.fields})
        w.close({"command": "test"})
    return path


@pytest.fixture()
def trace(tmp_path):
    arrays = _arrays(np.random.default_rng(1), 100)
    return _write(tmp_path / "t.trace", arrays), arrays


def test_round_trip_chunk_by_chunk_within_documented_error(trace):
    path, arrays = trace
    with TraceReader(path) as r:
        assert r.n_tokens == 100 and r.chunks == [(0, 32), (32, 64), (64, 96), (96, 100)]
        seen = 0
        for chunk in r.iter_chunks(["ffn_act", "gate_neg", "mlp_in", "q", "token_id", "context_id"]):
            idx = chunk["token_index"]
            assert len(idx) <= 32 and idx[0] == seen
            seen = idx[-1] + 1
            for f in ("gate_neg", "token_id", "context_id"):
                np.testing.assert_array_equal(chunk[f], arrays[f][idx])
            rel = np.abs(chunk["ffn_act"] - arrays["ffn_act"][idx]) / arrays["ffn_act"][idx]
            in_range = arrays["ffn_act"][idx] >= 2.0**-16
            assert rel[in_range].max() <= log8().max_rel_error + 1e-6
            for f in ("mlp_in", "q"):
                np.testing.assert_allclose(chunk[f], arrays[f][idx], rtol=2.0**-11, atol=1e-7)
        assert seen == 100
        np.testing.assert_array_equal(r.read("k", 30, 70), arrays["k"][30:70].astype(np.float16).astype(np.float32))


def test_int8c_and_keep_top_encodings(tmp_path):
    arrays = _arrays(np.random.default_rng(2), 70)
    enc = {"mlp_in": Encoding("int8c", {"levels": 31}), "ffn_act": log8(keep_top=0.25)}
    with TraceReader(_write(tmp_path / "e.trace", arrays, ("ffn_act", "mlp_in"), encodings=enc)) as r:
        x, act = r.read("mlp_in"), r.read("ffn_act")
    for c0 in (0, 32, 64):  # scale is per channel and chunk
        truth = arrays["mlp_in"][c0 : c0 + 32]
        assert np.all(np.abs(x[c0 : c0 + 32] - truth) <= np.abs(truth).max(axis=0) / 62 + 1e-6)
    kept = act > 0
    np.testing.assert_array_equal(kept.sum(axis=-1), 16)  # round(0.25 * 64) per (token, layer)
    np.testing.assert_array_equal(kept, topk_mask(arrays["ffn_act"], 16))


def _rewrite_manifest(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, edit(data) if item.filename == "manifest.json" else data)
    return dst


def _bump_version(data: bytes) -> bytes:
    m = json.loads(data)
    m["format_version"] = 2
    return json.dumps(m).encode()


def test_corrupt_traces_raise_one_line_trace_errors(trace, tmp_path):
    path, _ = trace
    raw = path.read_bytes()
    (tmp_path / "cut.trace").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TraceError, match=r"cut\.trace: not a readable trace archive, truncated or corrupt"):
        TraceReader(tmp_path / "cut.trace")
    with pytest.raises(TraceError, match=r"nope\.trace: no such file"):
        TraceReader(tmp_path / "nope.trace")
    _rewrite_manifest(path, tmp_path / "json.trace", lambda d: d[:-5])
    with pytest.raises(TraceError, match=r"json\.trace: manifest\.json is not valid JSON"):
        TraceReader(tmp_path / "json.trace")
    _rewrite_manifest(path, tmp_path / "v2.trace", _bump_version)
    with pytest.raises(TraceError, match=r"v2\.trace: format_version 2 is not supported \(this reader reads 1\)"):
        TraceReader(tmp_path / "v2.trace")


def test_missing_and_damaged_members(trace, tmp_path):
    path, _ = trace
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp_path / "gap.trace", "w") as zout:
        for item in zin.infolist():
            if item.filename != "chunks/000002/mlp_in.npy":
                zout.writestr(item, zin.read(item.filename))
    with pytest.raises(TraceError, match=r"missing member chunks/000002/mlp_in\.npy"):
        TraceReader(tmp_path / "gap.trace")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp_path / "bad.trace", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data[:40] if item.filename == "chunks/000001/q.npy" else data)
    with TraceReader(tmp_path / "bad.trace") as r:
        r.read("q", 0, 10)  # chunk 0 is fine
        with pytest.raises(TraceError, match=r"member chunks/000001/q\.npy is corrupt"):
            r.read("q", 0, 40)


def test_chunk_cache_reads_each_member_once_within_its_bound(trace):
    path, _ = trace
    with TraceReader(path, cache_bytes=0) as plain, TraceReader(path) as cached:
        members = []
        read = cached._zip.read
        cached._zip.read = lambda name: members.append(name) or read(name)
        for start, stop, decoded in [(0, 40, False), (10, 70, True), (0, 100, False), (5, 99, True), (33, 34, True)]:
            for field in ("ffn_act", "mlp_in", "k"):
                got = cached.read(field, start, stop, decoded=decoded)
                np.testing.assert_array_equal(got, plain.read(field, start, stop, decoded=decoded))
                one_chunk = start // 32 == (stop - 1) // 32
                assert got.flags.writeable != one_chunk  # a view of the cache is read-only, a concatenation a copy
        assert len(members) == len(set(members)) == 4 * 3  # each chunk of each field decompressed once
        assert len(plain._cache) == 1  # cache_bytes=0 keeps just the chunk read last
        small = TraceReader(path, cache_bytes=30_000)
        for field in ("ffn_act", "mlp_in", "q", "k"):
            small.read(field, 0, 100, decoded=True)
            assert small._cached_bytes <= 30_000 or len(small._cache) == 1


def test_cached_chunks_do_not_hide_a_corrupt_one(trace, tmp_path):
    path, _ = trace
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp_path / "bad.trace", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data[:-7] if item.filename == "chunks/000002/ffn_act.npy" else data)
    with TraceReader(tmp_path / "bad.trace") as r:
        first = r.read("ffn_act", 0, 64, decoded=False).copy()
        for decoded in (False, True, False):
            with pytest.raises(TraceError, match=r"bad\.trace: member chunks/000002/ffn_act\.npy is corrupt"):
                r.read("ffn_act", 50, 70, decoded=decoded)
        np.testing.assert_array_equal(r.read("ffn_act", 0, 64, decoded=False), first)


def test_validate_against_names_every_mismatch(trace):
    path, _ = trace
    with TraceReader(path) as r:
        expected = r"t\.trace: n_layers 4 != model opt-6\.7b n_layers 32;.*d_ff 64 != model opt-6\.7b d_ff 16384"
        with pytest.raises(TraceError, match=expected):
            r.validate_against(load_model("opt-6.7b"))
        r.validate_against(type("Same", (), dict(MODEL))())  # identical shapes pass


def test_threshold_rule_hits_target_per_layer():
    rng = np.random.default_rng(3)
    act = np.exp(rng.normal(0.0, 1.0, (300, 3, 128))) * np.array([1.0, 5.0, 0.1])[None, :, None]
    for s in (0.25, 0.5, 0.9):
        density = threshold_mask(act, layer_thresholds(act, s)).mean(axis=(0, 2))
        np.testing.assert_allclose(density, 1 - s, atol=0.002)
    per_layer = layer_thresholds(act, np.array([0.5, 0.7, 0.9]))
    np.testing.assert_allclose(threshold_mask(act, per_layer).mean(axis=(0, 2)), [0.5, 0.3, 0.1], atol=0.002)


def test_topk_and_gate_rules():
    rng = np.random.default_rng(4)
    act = rng.random((20, 2, 50))
    m = topk_mask(act, k_for(0.8, 50))
    np.testing.assert_array_equal(m.sum(axis=-1), 10)
    assert np.all(act[m].min() >= np.sort(act, axis=-1)[..., -10].min())
    assert np.all(np.where(m, act, np.inf).min(axis=-1) >= np.where(m, -np.inf, act).max(axis=-1))
    gate_neg = rng.random((5, 2, 50)) < 0.3
    np.testing.assert_array_equal(SparsityRule("gate").fit().mask(gate_neg), ~gate_neg)


def test_window_use_is_monotone_and_matches_closed_form():
    T, F, p = 60, 48, 6
    t, i = np.arange(T)[:, None], np.arange(F)[None, :]
    mask = np.repeat(((t + i) % p == 0)[:, None, :], 2, axis=1)  # each neuron active once every p tokens
    use, n_pos = stats.window_use(mask, list(range(1, 10)))
    np.testing.assert_allclose(use[:, 0], [min(k, p) / p for k in range(1, 10)])
    np.testing.assert_array_equal(n_pos, [T - k + 1 for k in range(1, 10)])
    rnd = np.random.default_rng(5).random((40, 3, 30)) < 0.1
    curve, _ = stats.window_use(rnd, list(range(1, 12)))
    assert np.all(np.diff(curve, axis=0) >= 0)
    np.testing.assert_allclose(curve[0], rnd.mean(axis=(0, 2)))


def test_cross_layer_overlap_and_lfu_closed_forms():
    rng = np.random.default_rng(6)
    same = np.repeat(rng.random((50, 1, 100)) < 0.2, 4, axis=1)
    overlap, _ = stats.cross_layer_overlap(same, [1, 2, 3])
    np.testing.assert_allclose(overlap, 1.0)
    indep = rng.random((400, 4, 200)) < 0.2
    overlap, base = stats.cross_layer_overlap(indep, [1, 2])
    np.testing.assert_allclose(overlap, base, atol=0.01)
    warm = np.array([[5, 0, 3, 1]])
    ev = np.array([[2, 7, 1, 4]])
    assert stats.lfu_hit_rate(warm, ev, 2) == (3.0, 14.0)  # cache {0, 2}: 2 + 1 hits of 14
    num, den = stats.persistence(np.array([[[1, 0]], [[1, 1]], [[0, 1]]], dtype=bool))
    assert (num[0], den[0]) == (2.0, 3.0)


def test_stats_cli_writes_tables(trace, tmp_path):
    from sim.cli import main

    path, _ = trace
    assert main(["trace", "stats", str(path), "--rule", "topk:0.75", "--max-k", "4", "--out", str(tmp_path / "s")]) == 0
    window = (tmp_path / "s" / "window.csv").read_text().splitlines()
    assert window[0] == "rule,k,use" and len(window) == 5
    result = json.loads((tmp_path / "s" / "trace_stats.json").read_text())
    assert result["topk:0.75"]["density"]["mean"] == pytest.approx(0.25)
    assert {r["warmed_on"] for r in result["topk:0.75"]["reuse"]} == {
        "same_context",
        "same_task",
        "other_task",
        "oracle",
    }


def test_trace_source_refuses_rules_denser_than_stored(tmp_path):
    arrays = _arrays(np.random.default_rng(7), 64)
    path = _write(tmp_path / "k.trace", arrays, ("ffn_act",), encodings={"ffn_act": log8(keep_top=0.2)})
    with pytest.raises(TraceError, match=r"stores only the top 20% of ffn_act .* rule threshold:0\.5"):
        TraceSource(path, "threshold:0.5")
    with pytest.raises(TraceError, match=r"rule threshold:0\.8 \(needs sparsity > 0\.8\)"):
        TraceSource(path, "threshold:0.8")  # would sit on the stored zeros and turn into top-k
    src = TraceSource(path, "topk:0.9")
    assert isinstance(src, ActivationSource) and src.masks(3, 9).shape == (6, 4, 64)
    assert "k.trace" in src.describe() and "topk:0.9" in src.describe()


def test_code_space_masks_equal_decoded_masks(trace):
    path, _ = trace
    src = TraceSource(path, "threshold:0.7", calib_tokens=100)
    decoded = src.reader.read("ffn_act", 10, 90)
    np.testing.assert_array_equal(src.masks(10, 90), threshold_mask(decoded, src.fitted.thresholds))
    proj = ProjectedSource(TraceSource(path, "dense"), 3, 150, 0.05, np.random.default_rng(0), calib_tokens=100)
    by_float = np.stack([proj._projected(decoded, l) > proj.thresholds[l] for l in range(3)], axis=1)
    np.testing.assert_array_equal(proj.masks(10, 90), by_float)


def test_density_profile_matches_published_points_and_mean():
    d = opt_6_7b_density(32)
    np.testing.assert_allclose(d[[0, 15, 31]], [0.0156, 0.0266, 0.0536])
    assert d.mean() == pytest.approx(0.0330)  # Table 6's mean
    np.testing.assert_allclose(density_profile({1: 0.1, 3: 0.3}, 5), [0.1, 0.15, 0.2, 0.25, 0.3])
    np.testing.assert_array_equal(layer_map(30, 32)[[0, -1]], [0, 29])
    assert np.all(np.diff(layer_map(30, 32)) >= 0)


def test_projection_hits_density_targets_per_layer(tmp_path):
    rng = np.random.default_rng(8)
    arrays = _arrays(rng, 200)
    base = TraceSource(_write(tmp_path / "p.trace", arrays, ("ffn_act",)), "dense")
    target = np.linspace(0.02, 0.06, 6)
    proj = ProjectedSource(base, 6, 256, target, np.random.default_rng(9), calib_tokens=200)
    m = proj.masks(0, 200)
    assert m.shape == (200, 6, 256) and proj.hidden(0, 5) is None
    np.testing.assert_allclose(m.mean(axis=(0, 2)), target, rtol=0.02)
    assert "p.trace" in proj.describe() and "d_ff 64->256" in proj.describe()
    again = ProjectedSource(base, 6, 256, target, np.random.default_rng(9), calib_tokens=200)
    np.testing.assert_array_equal(again.masks(10, 30), m[10:30])


def test_synthetic_generator_reproduces_fitted_statistics():
    truth = _StickySource(n_tokens=1500, density=np.array([0.05, 0.2]), lam=np.array([0.3, 0.7]))
    fitted = fit(truth)
    np.testing.assert_allclose(fitted.density, truth.pi.mean(axis=1), rtol=0.1)
    gen = SyntheticSource(fitted, np.random.default_rng(10), n_tokens=1500)
    m = gen.masks(0, 1500)
    refit = fit(gen)
    np.testing.assert_allclose(m.mean(axis=(0, 2)), fitted.density, rtol=0.05)
    np.testing.assert_allclose(refit.persistence, fitted.persistence, atol=0.03)
    np.testing.assert_allclose(refit.alpha, fitted.alpha, atol=0.25)
    np.testing.assert_array_equal(gen.masks(250, 270), m[250:270])  # across a block boundary
    big = SyntheticSource(fitted, np.random.default_rng(10), n_tokens=300, n_layers=4, d_ff=512)
    assert big.masks(0, 300).shape == (300, 4, 512)


class _StickySource(SourceBase):
    """Neurons with Zipf-like popularity and known lag-1 autocorrelation, as an ActivationSource."""

    def __init__(self, n_tokens: int, density: np.ndarray, lam: np.ndarray, d_ff: int = 200):
        rng = np.random.default_rng(11)
        self.n_tokens, self.n_layers, self.d_ff = n_tokens, len(density), d_ff
        pi = ((np.arange(d_ff) + 0.5) / d_ff) ** -0.8
        pi = np.minimum(pi / pi.mean() * density[:, None], 0.95)  # [L, F]
        stay, on = pi + lam[:, None] * (1 - pi), pi * (1 - lam[:, None])
        self.pi, state, out = pi, rng.random(pi.shape) < pi, []
        for _ in range(n_tokens):
            out.append(state)
            u = rng.random(pi.shape)
            state = np.where(state, u < stay, u < on)
        self._m = np.stack(out)

    def masks(self, start, stop):
        return self._m[start:stop]

    def hidden(self, start, stop):
        return None

    def describe(self):
        return "sticky test source"


def test_corpus_splits_are_disjoint_and_carry_provenance():
    from sim.lab import corpus

    trace, held = corpus.contexts("trace"), corpus.contexts("heldout")
    assert {(c.kind, c.package, c.path) for c in trace}.isdisjoint({(c.kind, c.package, c.path) for c in held})
    assert {c.task for c in trace} == {c.task for c in held} == set(corpus.TASKS)
    passage = corpus.load(corpus.contexts("trace", ["docs"])[0])
    assert passage.provenance["source"].startswith("CPython") and len(passage.provenance["text_sha256"]) == 64
    assert "Command-line parsing library" in passage.text  # argparse's module docstring
    with pytest.raises(Exception, match="unknown task; known: code, docs, legal, literature"):
        corpus.contexts("trace", ["poetry"])
