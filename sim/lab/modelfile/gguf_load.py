"""Read a Llama-family GGUF (llama, mistral, qwen2) into :class:`ModelConfig` + float32 :class:`Weights`.

Metadata keys are arch-prefixed (``{arch}.block_count``, ``{arch}.attention.head_count`` ...). Tensors are
dequantized with ``gguf.quants.dequantize`` to float32, orientation ``[out, in]`` as stored.

RoPE and the q/k row order: llama.cpp's converter (convert_hf_to_gguf.py ``LlamaModel.permute``) reorders the
rows of q and k of llama-arch models so that llama.cpp's "normal" RoPE, which rotates adjacent pairs
(2i, 2i+1), equals Hugging Face's rotate-half RoPE, which pairs (i, i + hd/2). We undo that permutation at load
time, so q/k (and the captured post-RoPE q/k) are in Hugging Face order and one rotate-half RoPE serves every
architecture. qwen2 files are not permuted (llama.cpp runs them with NEOX = rotate-half RoPE).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

from sim.errors import ModelFileError
from sim.lab.kernels.model import LayerWeights, ModelConfig, Weights, rope_inv_freq
from sim.lab.modelfile.registry import resolve_model_path

# architecture -> q/k rows permuted by llama.cpp's converter (interleaved-pair RoPE in llama.cpp)
ARCH_QK_PERMUTED: dict[str, bool] = {"llama": True, "mistral": True, "qwen2": False}


def open_gguf(model: str | os.PathLike | GGUFReader) -> GGUFReader:
    """Known model name, GGUF path or an open reader -> reader (parsing the metadata takes seconds: share it)."""
    if isinstance(model, GGUFReader):
        return model
    path = resolve_model_path(model)
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as err:
        raise ModelFileError(f"{path}: cannot read as GGUF ({err})") from err


def meta(reader: GGUFReader, key: str, default: object = ...) -> object:
    """The value of metadata ``key`` (scalar, string or list); ``default`` if absent, else ModelFileError."""
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise ModelFileError(f"{reader.data.filename}: metadata key {key!r} is missing")
        return default
    return field.contents()


def read_config(reader: GGUFReader) -> ModelConfig:
    """Shapes and constants from the GGUF metadata (+ tensor list for tied embeddings / biases)."""
    arch = str(meta(reader, "general.architecture"))
    if arch not in ARCH_QK_PERMUTED:
        raise ModelFileError(
            f"{reader.data.filename}: general.architecture {arch!r} is not supported "
            f"(supported: {', '.join(ARCH_QK_PERMUTED)})"
        )
    names = {t.name for t in reader.tensors}
    if "blk.0.ffn_gate_exps.weight" in names:
        raise ModelFileError(f"{reader.data.filename}: mixture-of-experts FFN tensors are not supported")
    n_heads = int(meta(reader, f"{arch}.attention.head_count"))
    d_model = int(meta(reader, f"{arch}.embedding_length"))
    head_dim = int(meta(reader, f"{arch}.attention.key_length", d_model // n_heads))
    rope_dims = int(meta(reader, f"{arch}.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ModelFileError(f"{reader.data.filename}: partial RoPE ({rope_dims} of {head_dim} dims) is not supported")
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return ModelConfig(
        arch=arch,
        n_layers=int(meta(reader, f"{arch}.block_count")),
        d_model=d_model,
        d_ff=int(meta(reader, f"{arch}.feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(meta(reader, f"{arch}.attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        vocab_size=int(embd.shape[-1]),  # ggml shape is [d_model, vocab]
        context_length=int(meta(reader, f"{arch}.context_length")),
        rope_theta=float(meta(reader, f"{arch}.rope.freq_base", 10000.0)),
        norm_eps=float(meta(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        qkv_bias="blk.0.attn_q.bias" in names,
        tied_embeddings="output.weight" not in names,
        name=str(meta(reader, "general.name", Path(reader.data.filename).stem)),
    )


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo convert_hf_to_gguf's q/k permutation: w [n_heads*hd, ...] (rows of head h: pair-interleaved) ->
    Hugging Face order (first half / second half of each head)."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(reader: GGUFReader) -> dict[str, np.ndarray]:
    return {t.name: dequantize(t.data, t.tensor_type).astype(np.float32, copy=False) for t in reader.tensors}


def _layer(cfg: ModelConfig, t: dict[str, np.ndarray], i: int) -> LayerWeights:
    p = f"blk.{i}."
    wq, wk, bq, bk = t[p + "attn_q.weight"], t[p + "attn_k.weight"], t.get(p + "attn_q.bias"), t.get(p + "attn_k.bias")
    if ARCH_QK_PERMUTED[cfg.arch]:
        wq, wk = unpermute_qk(wq, cfg.n_heads), unpermute_qk(wk, cfg.n_kv_heads)
        bq = None if bq is None else unpermute_qk(bq, cfg.n_heads)
        bk = None if bk is None else unpermute_qk(bk, cfg.n_kv_heads)
    return LayerWeights(
        attn_norm=t[p + "attn_norm.weight"], wq=wq, wk=wk, wv=t[p + "attn_v.weight"], wo=t[p + "attn_output.weight"],
        ffn_norm=t[p + "ffn_norm.weight"], gate=t[p + "ffn_gate.weight"], up=t[p + "ffn_up.weight"],
        down=t[p + "ffn_down.weight"], bq=bq, bk=bk, bv=t.get(p + "attn_v.bias"),
    )  # fmt: skip


def load_model(model: str | os.PathLike | GGUFReader) -> tuple[ModelConfig, Weights]:
    """Known model name, GGUF path or open reader -> (config, float32 read-only weights)."""
    reader = open_gguf(model)
    cfg = read_config(reader)
    t = _tensors(reader)
    try:
        layers = tuple(_layer(cfg, t, i) for i in range(cfg.n_layers))
    except KeyError as err:
        raise ModelFileError(f"{reader.data.filename}: tensor {err.args[0]!r} is missing") from err
    embd = t["token_embd.weight"]
    inv_freq = rope_inv_freq(cfg, t.get("rope_freqs.weight"))
    return cfg, Weights(embd, t["output_norm.weight"], t.get("output.weight", embd), layers, inv_freq)
