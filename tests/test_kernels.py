"""numpy kernels: closed-form checks, sparse == dense with all indices, prefill == decode, bytes touched == charged."""

from __future__ import annotations

import numpy as np
import pytest

from sim.lab.kernels import (
    FfnSelector,
    Hooks,
    ModelConfig,
    RunState,
    Touched,
    Weights,
    decode_step,
    ops,
    prefill,
    sparse,
)
from sim.lab.modelfile.gguf_load import unpermute_qk

CFG = ModelConfig("llama", n_layers=2, d_model=16, d_ff=24, n_heads=4, n_kv_heads=2, head_dim=4, vocab_size=50,
                  context_length=32, rope_theta=10000.0)  # fmt: skip
CFG_BIAS = ModelConfig("qwen2", 2, 16, 24, 4, 1, 4, 50, 32, qkv_bias=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(params=[CFG, CFG_BIAS], ids=["llama", "qwen2-bias"])
def tiny(request, rng):
    return request.param, Weights.random(request.param, rng)


# ---- closed forms ------------------------------------------------------------------------------------------------
def test_rmsnorm_closed_form():
    x = np.array([[3.0, 4.0]], np.float32)
    out = ops.rmsnorm(x, np.array([1.0, 2.0], np.float32), eps=0.0)
    np.testing.assert_allclose(out, [[3 / np.sqrt(12.5), 8 / np.sqrt(12.5)]], rtol=1e-6)


def test_rope_rotates_pair_i_and_i_plus_half_by_position_times_freq():
    inv_freq = np.array([0.5, 0.25], np.float32)  # hd = 4
    x = np.array([[[1.0, 0.0, 0.0, 0.0]]], np.float32)  # [1, 1, 4]: unit vector in dim 0
    out = ops.rope(x, np.array([3]), inv_freq)[0, 0]
    np.testing.assert_allclose(out, [np.cos(1.5), 0.0, np.sin(1.5), 0.0], atol=1e-6)
    np.testing.assert_allclose(ops.rope(x, np.array([0]), inv_freq), x)


def test_rope_scores_depend_only_on_relative_position(rng):
    inv_freq = 1.0 / 100.0 ** (np.arange(0, 8, 2) / 8).astype(np.float32)
    q, k = rng.standard_normal((2, 1, 1, 8)).astype(np.float32)

    def score(m: int, n: int) -> float:
        return float(np.sum(ops.rope(q, np.array([m]), inv_freq) * ops.rope(k, np.array([n]), inv_freq)))

    assert score(7, 3) == pytest.approx(score(14, 10), rel=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 4), rel=1e-3)


def _rope_interleaved(x, pos, inv_freq):
    """llama.cpp's "normal" RoPE: rotates adjacent pairs (2i, 2i+1). x [n, heads, hd]."""
    ang = pos[:, None, None] * inv_freq[None, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = x0 * np.cos(ang) - x1 * np.sin(ang), x1 * np.cos(ang) + x0 * np.sin(ang)
    return out


def _permute_like_convert_hf_to_gguf(w, n_heads):
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermuted_gguf_rows_with_rotate_half_rope_equal_llama_cpp_interleaved_rope(rng):
    n_heads, hd, d = 3, 8, 10
    w_hf = rng.standard_normal((n_heads * hd, d)).astype(np.float32)
    w_gguf = _permute_like_convert_hf_to_gguf(w_hf, n_heads)
    np.testing.assert_array_equal(unpermute_qk(w_gguf, n_heads), w_hf)
    x, pos = rng.standard_normal((5, d)).astype(np.float32), np.arange(5)
    inv_freq = (1.0 / 100.0 ** (np.arange(0, hd, 2) / hd)).astype(np.float32)
    ours = ops.rope((x @ unpermute_qk(w_gguf, n_heads).T).reshape(5, n_heads, hd), pos, inv_freq)
    llama_cpp = _rope_interleaved((x @ w_gguf.T).reshape(5, n_heads, hd), pos, inv_freq)
    np.testing.assert_allclose(ours.reshape(5, -1), unpermute_qk(llama_cpp.reshape(5, -1).T, n_heads).T, atol=1e-5)


def test_attention_with_one_position_returns_its_value(rng):
    q, k, v = (rng.standard_normal((1, h, 4)).astype(np.float32) for h in (4, 2, 2))
    out = ops.attention(q, k, v, np.array([0]))
    np.testing.assert_allclose(out.reshape(4, 4), np.repeat(v[0], 2, axis=0), rtol=1e-6)


# ---- sparse == dense ----------------------------------------------------------------------------------------------
def test_sparse_kernels_with_all_indices_equal_dense(tiny, rng):
    cfg, w = tiny
    lw, x = w.layers[0], rng.standard_normal(cfg.d_model).astype(np.float32)
    y_dense, act_dense = ops.ffn_dense(x[None], lw.gate, lw.up, lw.down)
    every = np.arange(cfg.d_ff)
    y, act = sparse.ffn_sparse(x, lw.gate, lw.up, lw.down, every)
    np.testing.assert_allclose(y, y_dense[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(act, act_dense[0], rtol=1e-6)
    np.testing.assert_allclose(sparse.down_sparse(act, lw.down, every), y_dense[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse.matmul_in_sparse(x, lw.wq, np.arange(cfg.d_model)), lw.wq @ x, rtol=1e-5)


def test_ffn_sparse_equals_dense_with_unselected_neurons_zeroed(tiny, rng):
    cfg, w = tiny
    lw, x = w.layers[1], rng.standard_normal(cfg.d_model).astype(np.float32)
    idx = np.sort(rng.choice(cfg.d_ff, 7, replace=False))
    act = ops.swiglu_act(x[None], lw.gate, lw.up)[0]
    masked = np.where(np.isin(np.arange(cfg.d_ff), idx), act, 0.0)
    y, _ = sparse.ffn_sparse(x, lw.gate, lw.up, lw.down, idx)
    np.testing.assert_allclose(y, lw.down @ masked, rtol=1e-5, atol=1e-6)


def test_attention_sparse_all_positions_equals_dense_and_subset_renormalises(rng):
    T, KV, H, hd = 6, 2, 4, 4
    k, v = rng.standard_normal((2, T, KV, hd)).astype(np.float32)
    q = rng.standard_normal((1, H, hd)).astype(np.float32)
    dense = ops.attention(q, k, v, np.array([T - 1]))[0]
    np.testing.assert_allclose(sparse.attention_sparse(q[0], k, v, np.arange(T)), dense, rtol=1e-5)
    subset = np.array([0, 2, 5])
    np.testing.assert_allclose(sparse.attention_sparse(q[0], k, v, subset), ops.attention(q, k[subset], v[subset],
                               np.array([2]))[0], rtol=1e-5)  # fmt: skip


# ---- forward -------------------------------------------------------------------------------------------------------
def test_prefill_equals_token_by_token_decode(tiny, rng):
    cfg, w = tiny
    tokens = rng.integers(0, cfg.vocab_size, 9)
    batched = prefill(cfg, w, RunState.new(cfg, 16), tokens)
    state = RunState.new(cfg, 16)
    stepped = np.stack([decode_step(cfg, w, state, int(t)) for t in tokens])
    np.testing.assert_allclose(batched, stepped, rtol=1e-4, atol=1e-4)
    assert state.pos == 9


@pytest.mark.parametrize("mode", ["post", "pre"])
def test_selector_keeping_every_neuron_equals_dense(tiny, rng, mode):
    cfg, w = tiny
    tokens = rng.integers(0, cfg.vocab_size, 5)
    keep_all = FfnSelector(lambda layer, x, act: np.ones((len(x), cfg.d_ff), bool), mode)
    dense = prefill(cfg, w, RunState.new(cfg, 8), tokens)
    sparse_ = prefill(cfg, w, RunState.new(cfg, 8), tokens, Hooks(ffn_selector=keep_all))
    np.testing.assert_allclose(sparse_, dense, rtol=1e-4, atol=1e-4)


def test_selector_mask_and_index_arrays_agree_and_pre_mode_zeroes_unselected(rng):
    w = Weights.random(CFG, rng)
    tokens = rng.integers(0, CFG.vocab_size, 4)
    idx = [np.sort(rng.choice(CFG.d_ff, 5, replace=False)) for _ in tokens]
    mask = np.zeros((4, CFG.d_ff), bool)
    for t, ix in enumerate(idx):
        mask[t, ix] = True
    seen = []
    by_idx = prefill(CFG, w, RunState.new(CFG, 8), tokens, Hooks(ffn_selector=FfnSelector(lambda *a: idx, "pre")))
    obs = Hooks(observer=seen.append, ffn_selector=FfnSelector(lambda *a: mask, "pre"))
    by_mask = prefill(CFG, w, RunState.new(CFG, 8), tokens, obs)
    np.testing.assert_allclose(by_idx, by_mask, rtol=1e-6)
    assert [a.layer for a in seen] == [0, 1]
    assert np.all(seen[0].ffn_act[~mask] == 0) and np.all(seen[0].ffn_act[mask] != 0)


def test_observer_sees_documented_shapes(tiny, rng):
    cfg, w = tiny
    seen = []
    prefill(cfg, w, RunState.new(cfg, 8), rng.integers(0, cfg.vocab_size, 3), Hooks(observer=seen.append))
    a = seen[-1]
    assert (a.attn_in.shape, a.mlp_in.shape, a.ffn_act.shape) == ((3, 16), (3, 16), (3, 24))
    assert (a.q.shape, a.k.shape, list(a.positions)) == ((3, 4, 4), (3, cfg.n_kv_heads, 4), [0, 1, 2])


def test_selector_errors_name_the_bad_shape(rng):
    w = Weights.random(CFG, rng)
    bad = Hooks(ffn_selector=FfnSelector(lambda *a: [np.arange(3)], "post"))
    with pytest.raises(ValueError, match="must return 2 index arrays"):
        prefill(CFG, w, RunState.new(CFG, 8), [1, 2], bad)
    with pytest.raises(ValueError, match="mode must be 'post' or 'pre'"):
        FfnSelector(lambda *a: None, "middle")
    with pytest.raises(ValueError, match="need 1..4 tokens"):
        prefill(CFG, w, RunState.new(CFG, 4), list(range(5)))


# ---- bytes touched == bytes charged -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["q4_1", "fp16"])
def test_bytes_touched_equal_bytes_charged(rng, dtype):
    w, prof = Weights.random(CFG, rng), CFG.profile()
    lw, x, idx = w.layers[0], np.ones(CFG.d_model, np.float32), np.array([1, 5, 6, 9])
    t = Touched()
    sparse.ffn_sparse(x, lw.gate, lw.up, lw.down, idx, t)
    assert t.nbytes(dtype) == sparse.ffn_sparse_bytes(idx, CFG, dtype) == len(idx) * prof.neuron_bytes(dtype)
    t = Touched()
    sparse.down_sparse(x[: len(idx)], lw.down, idx, t)
    assert t.nbytes(dtype) == sparse.down_sparse_bytes(idx, CFG, dtype) == len(idx) * prof.row_bytes(dtype)
    t = Touched()
    sparse.matmul_in_sparse(x, lw.wq, idx, t)
    assert t.nbytes(dtype) == sparse.matmul_in_sparse_bytes(idx, CFG.q_dim, dtype)
    t, cache = Touched(), np.zeros((10, CFG.n_kv_heads, CFG.head_dim), np.float32)
    sparse.attention_sparse(np.ones((CFG.n_heads, CFG.head_dim), np.float32), cache, cache, idx, t)
    per_layer_kv = prof.kv_bytes_per_token(dtype) / CFG.n_layers
    assert t.nbytes(dtype) == sparse.attention_sparse_bytes(idx, CFG, dtype) == len(idx) * per_layer_kv


def test_forward_touched_counts_every_selected_neuron_of_every_layer(rng):
    w, k = Weights.random(CFG, rng), 6
    t = Touched()
    sel = FfnSelector(lambda layer, x, act: [np.arange(k)] * len(x), "pre")
    prefill(CFG, w, RunState.new(CFG, 8), [3, 4, 5], Hooks(ffn_selector=sel, touched=t))
    assert t.nbytes("fp32") == 3 * CFG.n_layers * sparse.ffn_sparse_bytes(np.arange(k), CFG, "fp32")


@pytest.mark.model
def test_smollm_prefill_equals_token_by_token_decode(smollm):
    cfg, w, tok = smollm
    tokens = tok.encode("Sparse inference reads only the neurons it needs.")
    batched = prefill(cfg, w, RunState.new(cfg, 32), tokens)
    state = RunState.new(cfg, 32)
    stepped = np.stack([decode_step(cfg, w, state, t) for t in tokens])
    np.testing.assert_allclose(batched, stepped, atol=2e-3)  # logits span ~±35; fp32 sums in a different order
    assert np.array_equal(batched.argmax(1), stepped.argmax(1))
