"""KIVI (Liu et al., ICML 2024, arXiv 2402.02750): the KV cache quantized to ``bits`` without calibration.

Keys are quantized **per channel**: each head dimension of a group of ``group`` consecutive tokens shares a scale
and a zero (keys have outlier channels, so a channel's range is tight); values **per token**: each token's head
vector in groups of ``group`` dimensions. Both asymmetric (min..max), round to nearest. Only whole key groups of
tokens older than the ``residual`` most recent are quantized; the rest -- the last partial group and the residual
window -- stay in full precision, as KIVI streams them. Scales and zeros are kept at fp16.
"""

from __future__ import annotations

import numpy as np


def _affine(g: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Round-to-nearest over each group's min..max along ``axis``; fp16 scale and zero; dequantized float32."""
    lo = g.min(axis=axis, keepdims=True).astype(np.float16).astype(np.float32)
    scale = ((g.max(axis=axis, keepdims=True) - lo) / (2**bits - 1)).astype(np.float16).astype(np.float32)
    q = np.clip(np.round((g - lo) / np.where(scale == 0, 1.0, scale)), 0, 2**bits - 1)
    return (q * scale + lo).astype(np.float32)


def quantized_tokens(n_tokens: int, group: int, residual: int) -> int:
    """How many of the oldest tokens are quantized: whole groups of ``group`` before the residual window."""
    return max(n_tokens - residual, 0) // group * group


def quantize_kv(k: np.ndarray, v: np.ndarray, n_quantized: int, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """(k', v') with the first ``n_quantized`` tokens quantized; k, v [T, KV, hd] float32."""
    T, KV, hd = k.shape
    if n_quantized == 0:
        return k, v
    if n_quantized % group or hd % group and group < hd:
        raise ValueError(f"KIVI groups of {group} do not tile {n_quantized} tokens / head_dim {hd}")
    kq, vq = k.copy(), v.copy()
    old = k[:n_quantized].reshape(n_quantized // group, group, KV, hd)  # [G, group tokens, KV, hd]
    kq[:n_quantized] = _affine(old, bits, axis=1).reshape(n_quantized, KV, hd)  # per channel over tokens
    width = min(group, hd)
    old_v = v[:n_quantized].reshape(n_quantized, KV, hd // width, width)  # [n, KV, groups of dims, width]
    vq[:n_quantized] = _affine(old_v, bits, axis=3).reshape(n_quantized, KV, hd)  # per token over dims
    return kq, vq
