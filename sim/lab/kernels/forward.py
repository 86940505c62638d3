"""Forward pass of a Llama-family model in numpy, with two hook points.

Entry points (all mutate only ``state``: they append to the KV cache and advance ``state.pos``)::

    prefill(cfg, w, state, tokens, hooks=None, last_only=False) -> logits [n, vocab] (or [1, vocab])
    decode_step(cfg, w, state, token, hooks=None)               -> logits [vocab]
    generate_greedy(cfg, w, prompt, n_new, hooks=None, ...)     -> list[int] (the new tokens)

Hooks (``Hooks(observer=..., ffn_selector=...)``):

* ``observer(acts: LayerActivations) -> None`` is called once per layer after the layer ran, with
  ``attn_in`` [n, d] (normed attention input), ``q`` [n, H, hd] and ``k`` [n, KV, hd] after RoPE,
  ``mlp_in`` [n, d] (normed MLP input) and ``ffn_act`` = silu(gate)*up [n, d_ff] (in "pre" mode the
  unselected neurons are 0: they were never computed). Arrays are fresh; keep them or copy parts.
* ``ffn_selector = FfnSelector(select, mode)``; ``select(layer, mlp_in [n, d], ffn_act [n, d_ff] | None)``
  returns either a boolean mask [n, d_ff] or a sequence of n integer index arrays (neurons to keep).
  mode "post" (TEAL, CATS): gate/up run dense, ``select`` sees ffn_act, the down projection runs only over
  the kept neurons (:func:`sim.lab.kernels.sparse.down_sparse`). mode "pre" (predictor, LLM in a Flash):
  ``select`` gets ffn_act=None, and gate, up and down all run only over the kept neurons
  (:func:`sim.lab.kernels.sparse.ffn_sparse`).
* ``touched``: an optional :class:`sim.lab.kernels.sparse.Touched` that counts what the sparse kernels read.

Example (capture |ffn_act| of every layer while prefilling, then decode with TEAL-style 50% sparsity)::

    from sim.lab.kernels import FfnSelector, Hooks, RunState, decode_step, prefill
    from sim.lab.modelfile import load_model, load_tokenizer

    cfg, w = load_model("smollm2-135m")
    tokens = load_tokenizer("smollm2-135m").encode("The capital of France is")
    state = RunState.new(cfg, max_seq=512)
    mags = {}
    prefill(cfg, w, state, tokens, Hooks(observer=lambda a: mags.__setitem__(a.layer, np.abs(a.ffn_act))))
    half = FfnSelector(lambda layer, x, act: np.abs(act) >= np.median(np.abs(act), axis=1, keepdims=True))
    logits = decode_step(cfg, w, state, 6342, Hooks(ffn_selector=half))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sim.lab.kernels.model import LayerWeights, ModelConfig, RunState, Weights
from sim.lab.kernels.ops import attention, ffn_dense, matmul, rmsnorm, rope, swiglu_act
from sim.lab.kernels.sparse import Touched, down_sparse, ffn_sparse

Selection = np.ndarray | Sequence[np.ndarray]  # bool mask [n, d_ff] or n index arrays


@dataclass(frozen=True)
class LayerActivations:
    """What one layer saw for a batch of n tokens at absolute ``positions`` [n]."""

    layer: int
    positions: np.ndarray  # [n]
    attn_in: np.ndarray  # [n, d]
    q: np.ndarray  # [n, H, hd] after RoPE
    k: np.ndarray  # [n, KV, hd] after RoPE
    mlp_in: np.ndarray  # [n, d]
    ffn_act: np.ndarray  # [n, d_ff] silu(gate)*up


@dataclass(frozen=True)
class FfnSelector:
    """Chooses the FFN neurons each token keeps; see the module docstring for the two modes."""

    select: Callable[[int, np.ndarray, np.ndarray | None], Selection]
    mode: Literal["post", "pre"] = "post"

    def __post_init__(self) -> None:
        if self.mode not in ("post", "pre"):
            raise ValueError(f"FfnSelector mode must be 'post' or 'pre' (got {self.mode!r})")


@dataclass(frozen=True)
class Hooks:
    observer: Callable[[LayerActivations], None] | None = None
    ffn_selector: FfnSelector | None = None
    touched: Touched | None = None
    # replaces causal attention: (layer, q [n, H, hd], k [T, KV, hd], v [T, KV, hd], pos [n]) -> [n, H*hd]
    attention: Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    # input-channel sparsity (ActiveFlow): (layer, input, x [n, c]) -> x with the inactive channels zeroed, for
    # input in attn_in (q, k, v), o_in, mlp_in (gate, up), down_in; each op then sums only its kept columns
    channels: Callable[[int, str, np.ndarray], np.ndarray] | None = None
    # replaces the whole FFN: (layer, mlp_in [n, d]) -> y [n, d] (e.g. a sum over weights held in several places);
    # the observer then sees an empty ffn_act [n, 0]
    ffn: Callable[[int, np.ndarray], np.ndarray] | None = None


NO_HOOKS = Hooks()


def as_index_arrays(sel: Selection, n: int, d_ff: int) -> list[np.ndarray]:
    """Normalise a selection (mask [n, d_ff] or n index arrays) to n sorted int64 index arrays."""
    if isinstance(sel, np.ndarray) and sel.dtype == bool:
        if sel.shape != (n, d_ff):
            raise ValueError(f"selector mask must have shape {(n, d_ff)} (got {sel.shape})")
        return [np.flatnonzero(row) for row in sel]
    if len(sel) != n:
        raise ValueError(f"selector must return {n} index arrays, one per token (got {len(sel)})")
    return [np.asarray(ix, dtype=np.int64) for ix in sel]


def _ffn(lw: LayerWeights, layer: int, x: np.ndarray, hooks: Hooks) -> tuple[np.ndarray, np.ndarray]:
    """x [n, d] -> (y [n, d], ffn_act [n, f]) dense or through the selector's sparse kernels."""
    sel = hooks.ffn_selector
    if hooks.ffn is not None:
        return hooks.ffn(layer, x), np.zeros((x.shape[0], 0), np.float32)
    if hooks.channels is not None:  # ActiveFlow: gate/up over the kept input channels, down over the kept act
        act = swiglu_act(hooks.channels(layer, "mlp_in", x), lw.gate, lw.up)  # [n, f]
        return matmul(hooks.channels(layer, "down_in", act), lw.down), act
    if sel is None:
        return ffn_dense(x, lw.gate, lw.up, lw.down)
    n, f = x.shape[0], lw.gate.shape[0]
    y = np.empty_like(x)
    if sel.mode == "post":
        act = swiglu_act(x, lw.gate, lw.up)  # [n, f] dense
        for t, ix in enumerate(as_index_arrays(sel.select(layer, x, act), n, f)):
            y[t] = down_sparse(act[t, ix], lw.down, ix, hooks.touched)
        return y, act
    act = np.zeros((n, f), np.float32)
    for t, ix in enumerate(as_index_arrays(sel.select(layer, x, None), n, f)):
        y[t], act[t, ix] = ffn_sparse(x[t], lw.gate, lw.up, lw.down, ix, hooks.touched)
    return y, act


def block(
    cfg: ModelConfig, lw: LayerWeights, inv_freq: np.ndarray, state: RunState, layer: int, x: np.ndarray,
    pos: np.ndarray, hooks: Hooks = NO_HOOKS,
) -> np.ndarray:  # fmt: skip
    """Transformer block ``layer`` (weights ``lw``) on x [n, d] at positions pos [n]; writes K/V into the cache;
    returns [n, d]. ``inv_freq`` [hd/2]: RoPE inverse frequencies."""
    n, hd = x.shape[0], cfg.head_dim
    attn_in = rmsnorm(x, lw.attn_norm, cfg.norm_eps)  # [n, d]
    keep = hooks.channels or (lambda _layer, _name, a: a)
    qkv_in = keep(layer, "attn_in", attn_in)  # [n, d] (the kept channels only, if a hook says so)
    q = rope(matmul(qkv_in, lw.wq, lw.bq).reshape(n, cfg.n_heads, hd), pos, inv_freq)  # [n, H, hd]
    k = rope(matmul(qkv_in, lw.wk, lw.bk).reshape(n, cfg.n_kv_heads, hd), pos, inv_freq)  # [n, KV, hd]
    v = matmul(qkv_in, lw.wv, lw.bv).reshape(n, cfg.n_kv_heads, hd)  # [n, KV, hd]
    start, end = int(pos[0]), int(pos[-1]) + 1
    state.k_cache[layer, start:end], state.v_cache[layer, start:end] = k, v
    attend = attention if hooks.attention is None else functools.partial(hooks.attention, layer)
    att = attend(q, state.k_cache[layer, :end], state.v_cache[layer, :end], pos)  # [n, H*hd]
    x = x + matmul(keep(layer, "o_in", att), lw.wo)
    mlp_in = rmsnorm(x, lw.ffn_norm, cfg.norm_eps)  # [n, d]
    y, act = _ffn(lw, layer, mlp_in, hooks)
    if hooks.observer is not None:
        hooks.observer(LayerActivations(layer, pos, attn_in, q, k, mlp_in, act))
    return x + y


def prefill(
    cfg: ModelConfig, w: Weights, state: RunState, tokens: Sequence[int], hooks: Hooks | None = None,
    last_only: bool = False,
) -> np.ndarray:  # fmt: skip
    """Run n tokens in one causal batch after the state.pos tokens already cached -> logits [n, vocab].

    ``last_only`` computes the LM head for the last token only ([1, vocab]), which saves time in capture.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    if n == 0 or state.pos + n > state.max_seq:
        raise ValueError(f"need 1..{state.max_seq - state.pos} tokens to fit the KV cache (got {n})")
    pos = np.arange(state.pos, state.pos + n)  # [n]
    x = w.tok_embd[tokens]  # [n, d]
    for layer in range(cfg.n_layers):
        x = block(cfg, w.layers[layer], w.inv_freq, state, layer, x, pos, hooks or NO_HOOKS)
    state.pos += n
    x = rmsnorm(x[-1:] if last_only else x, w.output_norm, cfg.norm_eps)
    return matmul(x, w.output)  # [n, vocab]


def decode_step(cfg: ModelConfig, w: Weights, state: RunState, token: int, hooks: Hooks | None = None) -> np.ndarray:
    """One token after the cached ones -> logits [vocab]."""
    return prefill(cfg, w, state, [token], hooks)[0]


def generate_greedy(
    cfg: ModelConfig, w: Weights, prompt: Sequence[int], n_new: int, hooks: Hooks | None = None,
    state: RunState | None = None, stop_tokens: Sequence[int] = (),
) -> list[int]:  # fmt: skip
    """Greedy (argmax) continuation of ``prompt``: returns up to n_new new tokens (stops after a stop token)."""
    state = state or RunState.new(cfg, min(cfg.context_length, len(prompt) + n_new))
    nxt = int(np.argmax(prefill(cfg, w, state, prompt, hooks, last_only=True)[-1]))
    out = [nxt]
    while len(out) < n_new and nxt not in stop_tokens:
        nxt = int(np.argmax(decode_step(cfg, w, state, nxt, hooks)))
        out.append(nxt)
    return out
