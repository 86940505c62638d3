"""Accuracy of FFN activation sparsity on held-out text (``python -m sim trace accuracy FILE --out DIR``).

SmolLM2's analogue of ActiveFlow Table 3 / TEAL: for each rule (threshold, top-k on the FFN; ``activeflow``: top-k
input channels of every op, :class:`ChannelTopK`, with ``activeflow_predicted`` taking q/k/v's and gate/up's channels
from the previous layer, misses not reloaded) and sparsity, every
held-out context is prefilled once with the numpy backend's FFN selector in "post" mode (gate and up run
dense, the down projection only over the kept neurons, :mod:`sim.lab.kernels.forward`), and compared with the
dense run of the same tokens:

* ``ppl``        exp(mean next-token negative log-likelihood) over all predicted positions;
* ``agreement``  teacher-forced greedy-token agreement: fraction of positions whose argmax equals the
                 dense model's argmax at that position (same prefix, so errors do not compound);
* ``kept``       mean fraction of FFN neurons kept per token and layer (1 - achieved sparsity).

Threshold rules are calibrated per layer (quantile of |silu(gate)*up|) on calibration text from the corpus
``trace`` split, which is disjoint from the held-out split (different files). Writes ``accuracy.csv``,
``config.yaml`` (resolved) and ``about.md`` into the output folder; ``experiments/plots/accuracy.py`` plots.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from sim.config.base import StrictModel, load_yaml, validate
from sim.lab import corpus
from sim.traces.sparsity import k_for, layer_thresholds, topk_mask


class AccuracyConfig(StrictModel):
    kind: Literal["accuracy"] = "accuracy"
    name: str = "accuracy"
    model: str = "smollm2-135m"
    rules: list[Literal["threshold", "topk", "activeflow", "activeflow_predicted"]] = ["threshold", "topk"]
    sparsities: list[float] = Field(default=[0.0, 0.25, 0.4, 0.5, 0.6, 0.7, 0.8])
    heldout_tokens_per_context: int = Field(64, gt=1, description="tokens of each held-out context")
    heldout_contexts_per_task: int = Field(1, gt=0)
    calibration_tokens_per_context: int = Field(64, gt=0, description="trace-split tokens per context")
    calibration_contexts_per_task: int = Field(1, gt=0)


def _texts(split: str, per_task: int, n_tokens: int, tok) -> list[tuple[str, list[int]]]:
    seen: dict[str, int] = {}
    out = []
    for ctx in corpus.contexts(split):
        seen[ctx.task] = seen.get(ctx.task, 0) + 1
        if seen[ctx.task] <= per_task:
            out.append((f"{ctx.task}/{ctx.name}", tok.encode(corpus.load(ctx).text)[:n_tokens]))
    return out


def _run(cfg, w, ids: list[int], hooks=None) -> np.ndarray:
    from sim.lab.kernels import RunState, prefill

    return prefill(cfg, w, RunState.new(cfg, len(ids)), ids, hooks)  # [n, vocab]


def _calibrate(cfg, w, texts) -> np.ndarray:
    """|ffn_act| [T, L, F] of the dense model on the calibration texts."""
    from sim.lab.kernels import Hooks

    acts: list[np.ndarray] = []
    for _, ids in texts:
        layers: dict[int, np.ndarray] = {}
        _run(cfg, w, ids, Hooks(observer=lambda a, layers=layers: layers.__setitem__(a.layer, np.abs(a.ffn_act))))
        acts.append(np.stack([layers[i] for i in range(cfg.n_layers)], axis=1))
    return np.concatenate(acts)


def _nll(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """Next-token negative log-likelihoods [n-1] (logits[t] predicts ids[t+1])."""
    z = logits[:-1].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(ids) - 1), np.asarray(ids[1:])]


def _selector(rule: str, sparsity: float, thresholds: np.ndarray | None, kept: list[float]):
    from sim.lab.kernels import FfnSelector

    def select(layer: int, x: np.ndarray, act: np.ndarray) -> np.ndarray:
        if rule == "threshold":
            mask = np.abs(act) > thresholds[layer]  # [n, F]
        else:
            mask = topk_mask(act[:, None, :], k_for(sparsity, act.shape[-1]))[:, 0]
        kept.append(float(mask.mean()))
        return mask

    return FfnSelector(select, "post")


class ChannelTopK:
    """ActiveFlow's active weights on the numpy model: every op computes from the top-k = (1 - sparsity) c input
    channels of its input (by |x|, per token). ``predicted``: the q/k/v and gate/up inputs use the channels that
    the previous layer's same input selected (cross-layer prediction at distance 1, misses NOT reloaded; layer 0
    uses its own); o and down always use their own."""

    def __init__(self, sparsity: float, predicted: bool, kept: list[float]):
        self.sparsity, self.predicted, self.kept = sparsity, predicted, kept
        self.last: dict[str, np.ndarray] = {}  # input name -> the previous layer's mask [n, c]

    def __call__(self, layer: int, name: str, x: np.ndarray) -> np.ndarray:
        if self.sparsity <= 0:
            self.kept.append(1.0)
            return x
        c = x.shape[-1]
        k = max(1, int(round((1 - self.sparsity) * c)))
        own = np.zeros(x.shape, bool)
        np.put_along_axis(own, np.argpartition(-np.abs(x), k - 1, axis=-1)[:, :k], True, axis=-1)
        use = own
        if self.predicted and name in ("attn_in", "mlp_in"):
            use = self.last.get(name, own) if layer > 0 else own
            self.last[name] = own
        self.kept.append(float(use.mean()))
        return np.where(use, x, 0.0).astype(x.dtype)


def run_accuracy(path: str | Path, out: Path, log=print, progress: bool = True) -> Path:
    """Measure every point of the experiment file at ``path`` into the folder ``out``; ``progress``: a line per
    point on ``log``."""
    from sim.lab.kernels import Hooks
    from sim.lab.modelfile import load_model, load_tokenizer, resolve_model_path

    config = validate(AccuracyConfig, load_yaml(path), path)
    log = log if progress else (lambda *_: None)
    model_path = resolve_model_path(config.model)
    cfg, w = load_model(model_path)
    tok = load_tokenizer(model_path)
    held = _texts("heldout", config.heldout_contexts_per_task, config.heldout_tokens_per_context, tok)
    calib = _calibrate(cfg, w, _texts("trace", config.calibration_contexts_per_task,
                                      config.calibration_tokens_per_context, tok))  # fmt: skip
    dense = [_run(cfg, w, ids) for _, ids in held]
    rows, t0 = [_row("dense", 0.0, [1.0], dense, dense, held)], time.perf_counter()
    for rule in config.rules:
        for s in config.sparsities:
            kept: list[float] = []
            thr = layer_thresholds(calib, s) if rule == "threshold" else None
            if rule.startswith("activeflow"):
                hooks = Hooks(channels=ChannelTopK(s, rule == "activeflow_predicted", kept))
            else:
                hooks = Hooks(ffn_selector=_selector(rule, s, thr, kept))
            rows.append(_row(rule, s, kept, [_run(cfg, w, ids, hooks) for _, ids in held], dense, held))
            log(f"{rule} {s:.2f}: ppl {rows[-1]['ppl']:.3f}, agreement {rows[-1]['agreement']:.3f}")
    return _write(out, config, rows, held, calib.shape[0], time.perf_counter() - t0)


def _row(rule: str, s: float, kept: list[float], logits: list, dense: list, held: list) -> dict:
    nll = np.concatenate([_nll(lg, ids) for lg, (_, ids) in zip(logits, held, strict=True)])
    agree = np.concatenate([lg.argmax(1) == d.argmax(1) for lg, d in zip(logits, dense, strict=True)])
    return {"rule": rule, "sparsity": s, "kept": float(np.mean(kept)), "ppl": float(np.exp(nll.mean())),
            "nll": float(nll.mean()), "agreement": float(agree.mean()), "n_tokens": int(agree.size)}  # fmt: skip


def _write(out: Path, config: AccuracyConfig, rows: list[dict], held: list, n_calib: int, elapsed_s: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    tmp = out / "accuracy.csv.tmp"
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(out / "accuracy.csv")
    names = ", ".join(f"{n} ({len(ids)} tok)" for n, ids in held)
    (out / "about.md").write_text(
        f"# {config.name}\n\nModel {config.model}; held-out contexts (corpus split `heldout`): {names}.\n"
        f"Threshold rules calibrated on {n_calib} tokens of the `trace` split. FFN selector mode: post.\n"
        f"No trace file drives this experiment: it runs the numpy model itself. Run time {elapsed_s:.0f} s.\n"
    )
    return out / "accuracy.csv"
