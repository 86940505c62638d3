"""numpy backend speed on SmolLM2-135M: decode tokens/s (dense, sparse FFN at 50 %), prefill tokens/s.

``run()`` returns ``(name, value, unit)`` rows; ``python benchmarks/bench_kernels.py`` prints them as
``name value unit`` lines. Needs the model file (``python -m sim model fetch smollm2-135m``). Wall-clock
figures depend on the BLAS thread count (reported as ``blas_threads``): on a busy 2-core machine
``OPENBLAS_NUM_THREADS=1`` is often faster than the default.
"""

from __future__ import annotations

import os
import time

import numpy as np

from sim.lab.kernels import FfnSelector, Hooks, ModelConfig, RunState, Weights, decode_step, prefill
from sim.lab.modelfile import load_model, load_tokenizer, open_gguf

PROMPT = "The storage hierarchy of a phone: flash, DRAM, and the caches of the processor. " * 4
N_DECODE = 24
N_PREFILL = 128
KEEP = 0.5  # fraction of FFN neurons kept by the sparse runs


def _decode_tok_per_s(cfg: ModelConfig, w: Weights, prompt: list[int], hooks: Hooks | None) -> float:
    state = RunState.new(cfg, len(prompt) + N_DECODE + 1)
    token = int(np.argmax(prefill(cfg, w, state, prompt, last_only=True)[-1]))
    wall0 = time.perf_counter()
    for _ in range(N_DECODE):
        token = int(np.argmax(decode_step(cfg, w, state, token, hooks)))
    return N_DECODE / (time.perf_counter() - wall0)


def _top_half_post(layer: int, x: np.ndarray, act: np.ndarray) -> np.ndarray:
    """TEAL/CATS-style: keep the KEEP fraction of neurons with the largest |act| per token -> mask [n, d_ff]."""
    k = int(act.shape[1] * KEEP)
    idx = np.argpartition(-np.abs(act), k - 1, axis=1)[:, :k]
    mask = np.zeros(act.shape, bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def _fixed_half_pre(cfg: ModelConfig, rng: np.random.Generator):
    """A stand-in predictor: one fixed random KEEP fraction of neurons per layer (measures kernel speed only)."""
    sets = [np.sort(rng.choice(cfg.d_ff, int(cfg.d_ff * KEEP), replace=False)) for _ in range(cfg.n_layers)]
    return lambda layer, x, act: [sets[layer]] * len(x)


def run(model: str = "smollm2-135m", seed: int = 0) -> list[tuple[str, float, str]]:
    reader = open_gguf(model)
    cfg, w = load_model(reader)
    tokens = load_tokenizer(reader).encode(PROMPT)
    prompt = tokens[:16]
    long = (tokens * (N_PREFILL // len(tokens) + 1))[:N_PREFILL]
    wall0 = time.perf_counter()
    prefill(cfg, w, RunState.new(cfg, N_PREFILL), long)
    prefill_tps = N_PREFILL / (time.perf_counter() - wall0)
    post = Hooks(ffn_selector=FfnSelector(_top_half_post, "post"))
    pre = Hooks(ffn_selector=FfnSelector(_fixed_half_pre(cfg, np.random.default_rng(seed)), "pre"))
    return [
        ("numpy_decode_dense", _decode_tok_per_s(cfg, w, prompt, None), "tokens/s"),
        ("numpy_decode_ffn50_post", _decode_tok_per_s(cfg, w, prompt, post), "tokens/s"),
        ("numpy_decode_ffn50_pre", _decode_tok_per_s(cfg, w, prompt, pre), "tokens/s"),
        (f"numpy_prefill_{N_PREFILL}", prefill_tps, "tokens/s"),
        ("blas_threads", float(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count() or 1)), "threads"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.4g} {unit}")
