"""Model profile: the shapes of a decoder-only transformer, and bytes per layer / op / row / column.

Ops of one layer (names used throughout the simulator and the flash layouts):
  attention: ``q`` [d_model, n_heads*head_dim], ``k`` and ``v`` [d_model, n_kv_heads*head_dim],
             ``o`` [n_heads*head_dim, d_model]
  FFN (per expert): ``up`` [d_model, d_ff], ``down`` [d_ff, d_model], and ``gate`` [d_model, d_ff] when gated.
A *neuron* i of the FFN is column i of up (and gate) and row i of down: d_model weights in each matrix.

Features that change what a layer holds or how its ops depend on each other (each model file cites them):
``ffn_kind`` (the activation: relu, squared_relu, gelu, swiglu, geglu, fatrelu = SwiGLU whose gate is zeroed below
``fatrelu_threshold``; gated kinds have a gate matrix), ``parallel_attention`` (attention and FFN read the same
normalised input, so the FFN's loads need not wait for attention), ``rotary_fraction`` (share of head_dim rotated:
partial rotary changes no weights), ``qk_norm`` (a LayerNorm over q and k: 2 x head_dim x 2 weights per layer),
``biases`` (attention biases, counted in their op), ``tied_embeddings`` (the LM head is the input table).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.config.base import StrictModel

# bits per weight including block-scale overhead (GGUF: Q4_0 = 18 B per 32 weights = 4.5 bit,
# Q4_1 = 20 B / 32 = 5 bit, Q8_0 = 34 B / 32 = 8.5 bit; ggml/src/ggml-common.h block structs).
DTYPE_BITS: dict[str, float] = {
    "fp32": 32.0,
    "fp16": 16.0,
    "bf16": 16.0,
    "int8": 8.0,
    "q8_0": 8.5,
    "q4_0": 4.5,
    "q4_1": 5.0,
    # HQQ formats of the Mixtral-offloading setups (papers.md, Eliseev & Mazur arXiv 2312.17238): 4-bit group 64
    # with a 16-bit scale and zero per group = 4 + 32/64; 2-bit group 16 "~2.6 bits/param with scales" (stated);
    # 3-bit group 64: 3 + 32/64 (the 4-bit format's per-group scale and zero).
    "hqq4_g64": 4.5,
    "hqq2_g16": 2.6,
    "hqq3_g64": 3.5,
}

FfnKind = Literal["relu", "squared_relu", "gelu", "swiglu", "geglu", "fatrelu"]
GATED_KINDS = ("swiglu", "geglu", "fatrelu")
ATTENTION_OPS = ("q", "k", "v", "o")


def dtype_bytes(dtype: str, n_weights: float) -> float:
    """Bytes of ``n_weights`` weights stored as ``dtype`` (scale overhead included)."""
    if dtype not in DTYPE_BITS:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BITS)}")
    return n_weights * DTYPE_BITS[dtype] / 8.0


class ModelProfile(StrictModel):
    name: str
    source: str = Field(description="where the shapes come from (config.json, paper)")
    # Bounds: a few times the largest published models (so a typo such as d_ff: 10^9 is an error, not a
    # MemoryError): 1000 layers, d_model 65536, 2^20 FFN neurons per expert, 4M vocabulary, 4096 experts.
    n_layers: int = Field(gt=0, le=1000)
    d_model: int = Field(gt=0, le=65536)
    d_ff: int = Field(gt=0, le=2**20, description="FFN hidden size per expert")
    n_heads: int = Field(gt=0, le=1024)
    n_kv_heads: int = Field(gt=0, le=1024)
    head_dim: int = Field(gt=0, le=1024)
    vocab_size: int = Field(gt=0, le=2**22)
    ffn_kind: FfnKind
    tied_embeddings: bool = False
    max_positions_learned: int = Field(0, ge=0, le=2**20, description="learned position table rows (OPT), else 0")
    n_experts: int = Field(1, ge=1, le=4096)
    experts_top_k: int = Field(1, ge=1, le=4096)
    fatrelu_threshold: float | None = Field(
        None, ge=0, description="fatrelu: the gate activation below which a neuron is zero (FATReLU)"
    )
    parallel_attention: bool = Field(False, description="attention and FFN read the same input (Falcon, Phi-2)")
    rotary_fraction: float = Field(1.0, ge=0, le=1, description="share of head_dim RoPE rotates (partial rotary)")
    qk_norm: bool = Field(False, description="LayerNorm (weight + bias) over each head's q and k (Persimmon)")
    biases: bool = Field(False, description="attention projections carry biases (counted with their op)")

    @model_validator(mode="after")
    def _check(self) -> ModelProfile:
        if (self.ffn_kind == "fatrelu") != (self.fatrelu_threshold is not None):
            raise ValueError("fatrelu_threshold is set exactly when ffn_kind is fatrelu")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.experts_top_k > self.n_experts:
            raise ValueError(f"experts_top_k {self.experts_top_k} > n_experts {self.n_experts}")
        return self

    # ---- shapes (weights counts) ---------------------------------------------------------------
    @property
    def gated(self) -> bool:
        return self.ffn_kind in GATED_KINDS

    @property
    def ffn_ops(self) -> tuple[str, ...]:
        return ("gate", "up", "down") if self.gated else ("up", "down")

    def op_weights(self, op: str) -> int:
        """Weights in one op of one layer (FFN ops: of one expert). Attention biases and q/k norms are counted with
        their op; FFN biases (at most 2 d_ff + d_model per layer, < 0.05% of it) are not: a neuron stays d_model
        weights per matrix, the unit every layout stores."""
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        b = int(self.biases)
        qk_norm = 2 * self.head_dim if self.qk_norm else 0  # weight + bias over head_dim, shared by the heads
        sizes = {
            "q": self.d_model * q_dim + b * q_dim + qk_norm,
            "k": self.d_model * kv_dim + b * kv_dim + qk_norm,
            "v": self.d_model * kv_dim + b * kv_dim,
            "o": q_dim * self.d_model + b * self.d_model,
            "gate": self.d_model * self.d_ff if self.gated else 0,
            "up": self.d_model * self.d_ff,
            "down": self.d_ff * self.d_model,
        }
        if op not in sizes:
            raise ValueError(f"unknown op {op!r}")
        return sizes[op]

    @property
    def attention_weights_per_layer(self) -> int:
        return sum(self.op_weights(op) for op in ATTENTION_OPS)

    @property
    def ffn_weights_per_layer(self) -> int:
        """All experts' FFN weights of one layer."""
        return self.n_experts * sum(self.op_weights(op) for op in self.ffn_ops)

    @property
    def embedding_weights(self) -> int:
        """Token embeddings, learned positions, and the LM head unless tied."""
        table = self.vocab_size * self.d_model
        return table * (1 if self.tied_embeddings else 2) + self.max_positions_learned * self.d_model

    @property
    def total_weights(self) -> int:
        per_layer = self.attention_weights_per_layer + self.ffn_weights_per_layer
        return self.n_layers * per_layer + self.embedding_weights

    @property
    def neuron_weights(self) -> int:
        """Weights of one FFN neuron (a bundle: up column + down row [+ gate column])."""
        return len(self.ffn_ops) * self.d_model

    # ---- bytes -----------------------------------------------------------------------------------
    def attention_bytes_per_layer(self, dtype: str) -> float:
        return dtype_bytes(dtype, self.attention_weights_per_layer)

    def ffn_bytes_per_layer(self, dtype: str) -> float:
        return dtype_bytes(dtype, self.ffn_weights_per_layer)

    def layer_bytes(self, dtype: str) -> float:
        return self.attention_bytes_per_layer(dtype) + self.ffn_bytes_per_layer(dtype)

    def embedding_bytes(self, dtype: str) -> float:
        return dtype_bytes(dtype, self.embedding_weights)

    def total_bytes(self, dtype: str) -> float:
        return dtype_bytes(dtype, self.total_weights)

    def row_bytes(self, dtype: str) -> float:
        """One row / column of d_model weights (one neuron's share of one FFN matrix)."""
        return dtype_bytes(dtype, self.d_model)

    def neuron_bytes(self, dtype: str) -> float:
        return dtype_bytes(dtype, self.neuron_weights)

    def kv_bytes_per_token(self, dtype: str = "fp16") -> float:
        """K and V of one token over all layers: 2 * n_layers * n_kv_heads * head_dim values."""
        return dtype_bytes(dtype, 2 * self.n_layers * self.n_kv_heads * self.head_dim)

    def flops_per_token(self) -> float:
        """Dense decode matmul FLOPs (2 per weight used; MoE uses top-k experts), attention excluded."""
        ffn_active = self.ffn_weights_per_layer * self.experts_top_k / self.n_experts
        per_layer = self.attention_weights_per_layer + ffn_active
        lm_head = self.vocab_size * self.d_model
        return 2.0 * (self.n_layers * per_layer + lm_head)
