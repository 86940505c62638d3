"""The three things llama2.c's ``run.c`` keeps apart: Config (shapes), Weights (read-only), RunState (KV cache).

Orientation: every projection matrix is stored as GGUF/torch stores it, ``[out_features, in_features]``, so a
linear layer is ``x @ W.T``. For the FFN this means ``gate`` and ``up`` are ``[d_ff, d_model]`` (neuron i is
row i) and ``down`` is ``[d_model, d_ff]`` (neuron i is column i). ``down`` is kept in Fortran order so that each
neuron's column is contiguous in memory (as in LLM in a Flash's row-column bundling): gathering k columns is a
k-row memcpy instead of a strided gather (measured 10x faster in numpy).

q/k rows are in Hugging Face order (llama-arch GGUFs are un-permuted at load, see ``sim.lab.modelfile.gguf_load``),
so RoPE is the rotate-half ("NEOX") form for every supported architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.models.profile import ModelProfile


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of a Llama-family decoder (read from GGUF metadata)."""

    arch: str  # GGUF general.architecture: llama, mistral, qwen2
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    tied_embeddings: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def profile(self, source: str = "GGUF metadata") -> ModelProfile:
        """The simulator's :class:`ModelProfile` of these shapes (for charging bytes, validating traces)."""
        return ModelProfile(
            name=self.name or self.arch,
            source=source,
            n_layers=self.n_layers,
            d_model=self.d_model,
            d_ff=self.d_ff,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            vocab_size=self.vocab_size,
            ffn_kind="swiglu",
            tied_embeddings=self.tied_embeddings,
        )


def _readonly(a: np.ndarray | None, order: str = "C") -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float32, order=order)
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class LayerWeights:
    """One transformer block, float32, read-only. Shapes in the field comments."""

    attn_norm: np.ndarray  # [d]
    wq: np.ndarray  # [n_heads*hd, d]
    wk: np.ndarray  # [n_kv*hd, d]
    wv: np.ndarray  # [n_kv*hd, d]
    wo: np.ndarray  # [d, n_heads*hd]
    ffn_norm: np.ndarray  # [d]
    gate: np.ndarray  # [d_ff, d]   neuron i = row i
    up: np.ndarray  # [d_ff, d]     neuron i = row i
    down: np.ndarray  # [d, d_ff]   neuron i = column i; Fortran order, so a column is contiguous
    bq: np.ndarray | None = None  # [n_heads*hd] (qwen2)
    bk: np.ndarray | None = None  # [n_kv*hd]
    bv: np.ndarray | None = None  # [n_kv*hd]

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, _readonly(getattr(self, name), "F" if name == "down" else "C"))


@dataclass(frozen=True)
class Weights:
    """All weights, float32, read-only. ``output`` is the same array as ``tok_embd`` when embeddings are tied."""

    tok_embd: np.ndarray  # [vocab, d]
    output_norm: np.ndarray  # [d]
    output: np.ndarray  # [vocab, d]
    layers: tuple[LayerWeights, ...]
    inv_freq: np.ndarray = field(default=None)  # [hd/2] RoPE inverse frequencies (llama3 factors applied)

    def __post_init__(self) -> None:
        tied = self.output is self.tok_embd
        for name in ("tok_embd", "output_norm", "output", "inv_freq"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))
        if tied:  # keep one array (and the identity) for tied embeddings
            object.__setattr__(self, "output", self.tok_embd)

    @staticmethod
    def random(cfg: ModelConfig, rng: np.random.Generator, scale: float = 0.1) -> Weights:
        """Small random weights for tests (no model file needed)."""

        def mat(*shape: int) -> np.ndarray:
            return (rng.standard_normal(shape) * scale).astype(np.float32)

        def norm() -> np.ndarray:
            return (1.0 + rng.standard_normal(cfg.d_model) * 0.1).astype(np.float32)

        def bias(n: int) -> np.ndarray | None:
            return mat(n) if cfg.qkv_bias else None

        d, f = cfg.d_model, cfg.d_ff
        layers = tuple(
            LayerWeights(
                norm(),
                mat(cfg.q_dim, d),
                mat(cfg.kv_dim, d),
                mat(cfg.kv_dim, d),
                mat(d, cfg.q_dim),
                norm(),
                mat(f, d),
                mat(f, d),
                mat(d, f),
                bias(cfg.q_dim),
                bias(cfg.kv_dim),
                bias(cfg.kv_dim),
            )  # fmt: skip
            for _ in range(cfg.n_layers)
        )
        embd = mat(cfg.vocab_size, d) * 10
        return Weights(embd, norm(), embd, layers, rope_inv_freq(cfg))


def rope_inv_freq(cfg: ModelConfig, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """theta^(-2i/hd) for i < hd/2, divided by llama3-style per-frequency factors when the GGUF has them."""
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim)  # [hd/2]
    if freq_factors is not None:
        inv = inv / np.asarray(freq_factors, dtype=np.float64)
    return inv.astype(np.float32)


@dataclass
class RunState:
    """Mutable per-sequence state: KV cache and the number of positions already in it."""

    k_cache: np.ndarray  # [n_layers, max_seq, n_kv, hd]
    v_cache: np.ndarray  # [n_layers, max_seq, n_kv, hd]
    pos: int = 0

    @staticmethod
    def new(cfg: ModelConfig, max_seq: int) -> RunState:
        if not 0 < max_seq <= cfg.context_length:
            raise ValueError(f"max_seq must be in 1..{cfg.context_length} (got {max_seq})")
        shape = (cfg.n_layers, max_seq, cfg.n_kv_heads, cfg.head_dim)
        return RunState(np.zeros(shape, np.float32), np.zeros(shape, np.float32), 0)

    @property
    def max_seq(self) -> int:
        return self.k_cache.shape[1]

    def reset(self) -> None:
        self.pos = 0
