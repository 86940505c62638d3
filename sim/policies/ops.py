"""Compute ops of one step, from model shapes: the FLOPs and bytes each kernel touches.

One :class:`Op` per kernel (never per neuron or per request). A step computes ``n`` tokens (the batch's decode
tokens, or a prefill chunk): weight matmuls do ``n`` times the FLOPs of one token but read the weights once;
attention reads each request's cached K and V once and attends every new token to the positions before it
(causal). Activations (a few d_model vectors per token) are ignored. FLOPs count 2 per multiply-add.
"""

from __future__ import annotations

from sim.devices.processor import Op
from sim.engine.requests import Step
from sim.models.profile import ModelProfile, dtype_bytes


def attended_positions(step: Step) -> int:
    """Keys attended, summed over the step's new tokens: token j of a request with kv cached tokens sees kv + j."""
    return sum(n * kv + n * (n - 1) // 2 for kv, n in zip(step.kv_tokens, step.new_tokens, strict=True))


class StepOps:
    """The ops of a model's layers at one dtype, for any step. Weight ops depend only on the tokens a step computes
    and are built once per token count (a processor memoises op times by identity); attention is built per step."""

    def __init__(self, model: ModelProfile, dtype: str, kv_dtype: str):
        self.model, self.dtype, self.kv_dtype = model, dtype, kv_dtype
        self._memo: dict[tuple, tuple[Op, ...]] = {}

    def _weights(self, name: str, n_weights: float, n_tokens: int, gathered: bool = False, rows: int = 0
                 ) -> tuple[Op, ...]:  # fmt: skip
        key = (name, n_weights, n_tokens, gathered, rows)
        found = self._memo.get(key)
        if found is None:
            op = Op(name, 2.0 * n_weights * n_tokens, dtype_bytes(self.dtype, n_weights), self.dtype, gathered, rows)
            found = self._memo[key] = (op,)
        return found

    def attention(self, step: Step) -> tuple[Op, ...]:
        """q/k/v projections, attention over the KV cache, output projection (one layer)."""
        core = self.core(sum(step.kv_tokens), attended_positions(step))
        return self.qkv(step) + core + self.o_proj(step)

    def qkv(self, step: Step) -> tuple[Op, ...]:
        return self._weights("qkv_proj", sum(self.model.op_weights(op) for op in ("q", "k", "v")), step.n_tokens)

    def o_proj(self, step: Step) -> tuple[Op, ...]:
        return self._weights("o_proj", self.model.op_weights("o"), step.n_tokens)

    def core(self, keys_read: float, keys_attended: float, name: str = "attention") -> tuple[Op, ...]:
        """Attention over the KV cache of one layer: ``keys_read`` cached positions read (K and V, every head),
        ``keys_attended`` (query, key) pairs summed over the step's queries (q.K^T and p.V for every head)."""
        if keys_read <= 0 and keys_attended <= 0:
            return ()
        m = self.model
        kv_values = 2 * keys_read * m.n_kv_heads * m.head_dim
        flops = 2.0 * 2 * m.n_heads * m.head_dim * keys_attended
        return (Op(name, flops, dtype_bytes(self.kv_dtype, kv_values), self.kv_dtype),)

    def ffn(self, n_neurons: float, n_tokens: int, gathered: bool = False) -> tuple[Op, ...]:
        """FFN of one layer over ``n_neurons`` neurons (MoE: the routed experts' neurons summed); ``gathered``: the
        kernel indexes scattered rows (a sparse gather) instead of a contiguous matrix."""
        if n_neurons <= 0:
            return ()
        rows = int(n_neurons) * len(self.model.ffn_ops) if gathered else 0  # each neuron: a row of every FFN matrix
        return self._weights("ffn", n_neurons * self.model.neuron_weights, n_tokens, gathered, rows)

    def lm_head(self, step: Step) -> tuple[Op, ...]:
        """Logits of the tokens a decode step emits (a prefill step emits none: see sim/engine/requests.py)."""
        if step.phase != "decode":
            return ()
        return self._weights("lm_head", self.model.vocab_size * self.model.d_model, step.batch)

    def dense_layer(self, step: Step, last: bool) -> tuple[Op, ...]:
        """Attention + the dense FFN of one layer; the LM head is charged to the last layer."""
        m = self.model
        ops = self.attention(step) + self.ffn(m.d_ff * m.experts_top_k, step.n_tokens)
        return ops + self.lm_head(step) if last else ops
