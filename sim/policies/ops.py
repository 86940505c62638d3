"""Compute ops of one decode step, from model shapes: the FLOPs and bytes each kernel touches.

One :class:`Op` per kernel (never per neuron). Bytes are the weights read plus the KV cache read by
attention; activations (a few d_model vectors) are ignored. FLOPs count 2 per multiply-add.
"""

from __future__ import annotations

from sim.devices.processor import Op
from sim.models.profile import ModelProfile, dtype_bytes


def attention_ops(model: ModelProfile, dtype: str, kv_len: int, kv_dtype: str = "fp16") -> tuple[Op, ...]:
    """Dense attention of one layer for one new token attending to ``kv_len`` cached positions."""
    qkv = sum(model.op_weights(op) for op in ("q", "k", "v"))
    o = model.op_weights("o")
    kv_values = 2 * kv_len * model.n_kv_heads * model.head_dim  # K and V
    core_flops = 2.0 * 2 * model.n_heads * model.head_dim * kv_len  # q.K^T and p.V
    return (
        Op("qkv_proj", 2.0 * qkv, dtype_bytes(dtype, qkv), dtype),
        Op("attention", core_flops, dtype_bytes(kv_dtype, kv_values), kv_dtype),
        Op("o_proj", 2.0 * o, dtype_bytes(dtype, o), dtype),
    )


def ffn_ops(model: ModelProfile, dtype: str, n_neurons: float, gathered: bool = False) -> tuple[Op, ...]:
    """FFN of one layer over ``n_neurons`` neurons (all experts' active neurons summed for MoE).

    ``gathered``: the kernel indexes scattered rows (sparse gather) instead of a contiguous matrix.
    """
    if n_neurons <= 0:
        return ()
    weights = n_neurons * model.neuron_weights
    return (Op("ffn", 2.0 * weights, dtype_bytes(dtype, weights), dtype, gathered),)


def dense_ffn_neurons(model: ModelProfile) -> int:
    """Neurons a dense decode step computes in one layer (MoE: the top-k experts' neurons)."""
    return model.d_ff * model.experts_top_k


def lm_head_ops(model: ModelProfile, dtype: str) -> tuple[Op, ...]:
    weights = model.vocab_size * model.d_model
    return (Op("lm_head", 2.0 * weights, dtype_bytes(dtype, weights), dtype),)


def dense_layer_ops(model: ModelProfile, dtype: str, kv_len: int, last: bool) -> tuple[Op, ...]:
    """Attention + dense FFN of one layer; the LM head is charged to the last layer."""
    ops = attention_ops(model, dtype, kv_len) + ffn_ops(model, dtype, dense_ffn_neurons(model))
    return ops + lm_head_ops(model, dtype) if last else ops
