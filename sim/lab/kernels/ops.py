"""Dense numpy kernels of a Llama-family block: pure functions, float32, shapes in the comments.

n = tokens in the batch, d = d_model, f = d_ff, H = query heads, KV = key/value heads, hd = head_dim,
T = positions in the KV cache that a query may see.
"""

from __future__ import annotations

import numpy as np


def matmul(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Linear layer with torch/GGUF orientation: x [n, in], w [out, in], b [out] -> [n, out]."""
    y = x @ w.T
    return y if b is None else y + b


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x [n, d] -> x / sqrt(mean(x^2) + eps) * weight  [n, d]."""
    ms = np.mean(x * x, axis=-1, keepdims=True)  # [n, 1]
    return (x / np.sqrt(ms + eps)) * weight


def rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate-half ("NEOX", Hugging Face) RoPE: dims i and i+hd/2 form a pair.

    x [n, heads, hd], positions [n] (int), inv_freq [hd/2] -> [n, heads, hd].
    """
    ang = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # [n, hd/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]  # [n, 1, hd/2]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # [n, heads, hd/2] each
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos: np.ndarray) -> np.ndarray:
    """Causal grouped-query attention.

    q [n, H, hd] at absolute positions q_pos [n]; k, v [T, KV, hd] for positions 0..T-1 -> [n, H*hd].
    Query i sees key positions t <= q_pos[i].
    """
    n, H, hd = q.shape
    T, KV, _ = k.shape
    qg = q.reshape(n, KV, H // KV, hd).transpose(1, 2, 0, 3)  # [KV, g, n, hd]: query head h uses kv head h // g
    scores = np.matmul(qg, k.transpose(1, 2, 0)[:, None]) / np.float32(np.sqrt(hd))  # [KV, g, n, T] (batched GEMM)
    future = np.arange(T)[None, :] > q_pos[:, None]  # [n, T]
    scores = np.where(future, -np.inf, scores)
    p = softmax(scores, axis=-1)  # [KV, g, n, T]
    out = np.matmul(p, v.transpose(1, 0, 2)[:, None])  # [KV, g, n, hd]
    return out.transpose(2, 0, 1, 3).reshape(n, H * hd).astype(np.float32)


def swiglu_act(x: np.ndarray, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """FFN intermediate silu(x gate^T) * (x up^T): x [n, d], gate/up [f, d] -> [n, f]."""
    return silu(matmul(x, gate)) * matmul(x, up)


def ffn_dense(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SwiGLU FFN: x [n, d] -> (y [n, d], act [n, f]); down is [d, f]."""
    act = swiglu_act(x, gate, up)  # [n, f]
    return matmul(act, down), act
