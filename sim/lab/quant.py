"""Weight quantization on the real SmolLM2 (``kind: quantization``): what each storage format the simulator prices
(:data:`sim.models.profile.DTYPE_BITS`) costs in weight error and in perplexity, per tensor class.

Each format is applied as *fake quantization*: a weight matrix W [out, in] is cut into groups of ``group``
consecutive input weights per row (as GGUF and HQQ store them), each group quantized and dequantized back to
float32, and the numpy backend runs the model on the result:

* ``q8_0`` / ``q4_0``  symmetric, group 32, one fp16 scale (GGUF's rules: q4_0 scales by the group's value of
  largest magnitude / -8, levels 0..15 around 8);
* ``q4_1``             asymmetric, group 32, fp16 scale and minimum;
* ``hqq4_g64`` / ``hqq3_g64`` / ``hqq2_g16``  asymmetric b-bit with a per-group scale and zero (the Mixtral-offloading
  formats, papers.md). HQQ refines each group's zero-point by half-quadratic optimisation and meta-quantizes
  its scales (which is how 2-bit group 16 costs ~2.6 bits); here the groups are rounded to nearest over their
  min..max range with fp16 scale and zero: HQQ's own error is at most this. Bytes are priced as DTYPE_BITS says.

Tensor classes: ``ffn`` (gate, up, down: the experts of an MoE, the neurons of LLM in a Flash) and ``attention``
(q, k, v, o). The weights start from the Q4_1 GGUF file, dequantized: the dense reference is that model, and a
format at or above Q4_1's resolution re-quantizes already quantized weights (its error is a lower bound on what
it would do to the original fp16 weights). Per (format, tensors): bits per weight, relative Frobenius error of
the weights, held-out perplexity and teacher-forced greedy agreement against the dense run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from sim.config.base import StrictModel, load_yaml, validate
from sim.models.profile import DTYPE_BITS


@dataclasses.dataclass(frozen=True)
class Format:
    bits: int
    group: int
    symmetric: bool


FORMATS = {
    "q8_0": Format(8, 32, True),
    "q4_0": Format(4, 32, True),
    "q4_1": Format(4, 32, False),
    "hqq4_g64": Format(4, 64, False),
    "hqq3_g64": Format(3, 64, False),
    "hqq2_g16": Format(2, 16, False),
}
TENSORS = {"ffn": ("gate", "up", "down"), "attention": ("wq", "wk", "wv", "wo")}


def fake_quantize(w: np.ndarray, fmt: str) -> np.ndarray:
    """w [out, in] -> what ``fmt`` stores of it, dequantized: float32 [out, in]."""
    spec = FORMATS[fmt]
    out, n_in = w.shape
    if n_in % spec.group:
        raise ValueError(f"{fmt}: rows of {n_in} weights do not split into groups of {spec.group}")
    g = w.reshape(out, n_in // spec.group, spec.group).astype(np.float32)  # [out, G, group]
    if spec.symmetric and spec.bits == 4:  # GGUF q4_0: d = (value of largest magnitude) / -8, levels 0..15
        at = np.take_along_axis(g, np.abs(g).argmax(axis=-1)[..., None], axis=-1)  # [out, G, 1]
        d = _fp16(at / -8.0)
        q = np.clip(np.round(g / _nonzero(d) + 8.0), 0, 15)
        deq = (q - 8.0) * d
    elif spec.symmetric:  # q8_0: d = max |x| / 127
        d = _fp16(np.abs(g).max(axis=-1, keepdims=True) / 127.0)
        deq = np.clip(np.round(g / _nonzero(d)), -127, 127) * d
    else:  # affine over the group's range: scale and zero (minimum) in fp16
        lo = _fp16(g.min(axis=-1, keepdims=True))
        scale = _fp16((g.max(axis=-1, keepdims=True) - lo) / (2**spec.bits - 1))
        deq = np.clip(np.round((g - lo) / _nonzero(scale)), 0, 2**spec.bits - 1) * scale + lo
    return deq.reshape(out, n_in).astype(np.float32)


def _fp16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


def _nonzero(a: np.ndarray) -> np.ndarray:
    return np.where(a == 0, 1.0, a)


def quantize_weights(w, fmt: str, tensors: str):
    """A copy of the model's weights with every matrix of the class ``tensors`` fake-quantized; (weights, relative
    Frobenius error over the class)."""
    names, err, norm, layers = TENSORS[tensors], 0.0, 0.0, []
    for lw in w.layers:
        changed = {}
        for name in names:
            a = getattr(lw, name)
            q = fake_quantize(a if name != "down" else np.ascontiguousarray(a), fmt)
            err, norm = err + float(np.sum((q - a) ** 2)), norm + float(np.sum(a.astype(np.float64) ** 2))
            changed[name] = np.asfortranarray(q) if name == "down" else q
        layers.append(dataclasses.replace(lw, **changed))
    return dataclasses.replace(w, layers=tuple(layers)), float(np.sqrt(err / norm))


class QuantizationConfig(StrictModel):
    kind: Literal["quantization"] = "quantization"
    name: str = "quantization"
    description: str = ""
    model: str = "smollm2-135m"
    formats: list[Literal[tuple(FORMATS)]] = Field(list(FORMATS), min_length=1)  # type: ignore[valid-type]
    tensors: list[Literal["ffn", "attention"]] = Field(["ffn", "attention"], min_length=1)
    heldout_tokens_per_context: int = Field(128, gt=1)
    heldout_contexts_per_task: int = Field(2, gt=0)


def run_quantization(path: str | Path, out: Path, log=print, progress: bool = True) -> Path:
    from sim.lab.accuracy import _row, _run, _texts
    from sim.lab.modelfile import load_named

    config = validate(QuantizationConfig, load_yaml(path), path)
    log = log if progress else (lambda *_: None)
    t0 = time.perf_counter()
    cfg, w, tok = load_named(config.model)
    held = _texts("heldout", config.heldout_contexts_per_task, config.heldout_tokens_per_context, tok)
    dense = [_run(cfg, w, ids) for _, ids in held]
    rows = [_row("dense", 0.0, [1.0], dense, dense, held) | {"format": "q4_1 file", "tensors": "none"}]
    for tensors in config.tensors:
        for fmt in config.formats:
            qw, error = quantize_weights(w, fmt, tensors)
            row = _row("quantized", 0.0, [1.0], [_run(cfg, qw, ids) for _, ids in held], dense, held)
            rows.append(row | {"format": fmt, "tensors": tensors, "bits_per_weight": DTYPE_BITS[fmt],
                               "weight_rel_error": error})  # fmt: skip
            log(f"{tensors} {fmt}: weight error {error:.4f}, ppl {row['ppl']:.3f}, agreement {row['agreement']:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    table = pd.DataFrame(rows).drop(columns=["rule", "sparsity", "kept"])
    table.to_csv(out / "quantization.csv", index=False)
    names = ", ".join(f"{n} ({len(ids)} tok)" for n, ids in held)
    (out / "about.md").write_text(
        f"# {config.name}\n\n{config.description}\n\nModel {config.model} (weights dequantized from the Q4_1 GGUF "
        f"file: the dense reference); formats {config.formats} fake-quantized per tensor class {config.tensors} "
        f"(sim/lab/quant.py); held-out contexts (split `heldout`): {names}. No trace file drives this experiment: "
        f"it runs the numpy model itself. Run time {time.perf_counter() - t0:.0f} s.\n"
    )
    return out / "quantization.csv"
