"""Train a low-rank predictor on the real model (``python -m sim predictor train``) and report its quality.

1. :func:`capture_ffn` prefills each corpus context once (numpy backend, one batch per context) and keeps,
   for positions ``skip_tokens .. skip_tokens + per_context``, the MLP input ``mlp_in [T, L, d]`` and
   ``|ffn_act| [T, L, F]``. Skipping the first 64 positions of each ``trace``-split context keeps the tokens of
   the committed trace (60 per context) out of the training set, so the simulator's predictions on that trace
   are out of sample.
2. Labels: a sparsity rule (default ``threshold:0.9``: per layer, the 90% quantile of |ffn_act| over the
   training tokens) marks the active neurons; its thresholds are saved so the accuracy runner's oracle uses the
   same definition.
3. Training (:meth:`LowRankPredictor.train`, seeded) on the tokens shuffled across contexts (so the
   calibration tail that sets the threshold covers every task); the factors are rounded to float16 (what the
   file stores) before the thresholds are set, one row per recall target, on that calibration tail.
4. Quality per recall target on held-out tokens (corpus split ``heldout``), pooled over layers and tokens.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from sim.lab import corpus
from sim.lif.predictor import LowRankPredictor, Quality, TrainConfig, recall_threshold, rounded
from sim.traces.sparsity import FittedRule, SparsityRule


@dataclass(frozen=True)
class TrainSpec:
    model: str = "smollm2-135m"
    rank: int = 32
    tokens: int = 3072  # training tokens, split evenly over the trace-split contexts
    epochs: int = 20
    rule: str = "threshold:0.9"
    recall_targets: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)
    heldout_tokens: int = 512  # split evenly over the heldout-split contexts
    skip_tokens: int = 64  # leading positions of each training context not trained on (the trace's tokens)
    calib_fraction: float = 0.2
    seed: int = 0

    def command(self, out: str) -> str:
        targets = ",".join(f"{r:g}" for r in self.recall_targets)
        return (f"python -m sim predictor train --model {self.model} --rank {self.rank} --tokens {self.tokens} "
                f"--epochs {self.epochs} --rule {self.rule} --recall-targets {targets} "
                f"--heldout-tokens {self.heldout_tokens} --skip-tokens {self.skip_tokens} --seed {self.seed} "
                f"--out {out}")  # fmt: skip


def capture_ffn(cfg, w, tok, split: str, tokens: int, skip_tokens: int = 0, progress: bool = True):
    """-> (mlp_in [T, L, d] float32, |ffn_act| [T, L, F] float32, names of the contexts used)."""
    from sim.lab.kernels import Hooks, RunState, prefill

    ctxs = corpus.contexts(split)
    per = tokens // len(ctxs)
    xs, acts, names = [], [], []
    for ctx in tqdm(ctxs, desc=f"capture {split}", unit="ctx", disable=not progress, leave=False):
        ids = tok.encode(corpus.load(ctx).text)[: skip_tokens + per]
        if len(ids) <= skip_tokens:
            continue
        got: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def keep(a, got=got):
            got[a.layer] = (a.mlp_in[skip_tokens:], np.abs(a.ffn_act[skip_tokens:]))

        prefill(cfg, w, RunState.new(cfg, len(ids)), ids, Hooks(observer=keep), last_only=True)
        xs.append(np.stack([got[l][0] for l in range(cfg.n_layers)], axis=1))  # [n, L, d]
        acts.append(np.stack([got[l][1] for l in range(cfg.n_layers)], axis=1))  # [n, L, F]
        names.append(f"{ctx.task}/{ctx.name}")
    return np.concatenate(xs), np.concatenate(acts), names


def fit_labels(rule: str, act: np.ndarray) -> FittedRule:
    """The labelling rule calibrated on act [T, L, F] (thresholds per layer for threshold rules)."""
    return SparsityRule.parse(rule).fit(act)


def layer_truth(fitted: FittedRule, layer: int, act: np.ndarray) -> np.ndarray:
    """Truly active neurons of one layer: act [n, F] -> bool [n, F] under the fitted rule."""
    thr = None if fitted.thresholds is None else fitted.thresholds[layer : layer + 1]
    return FittedRule(fitted.rule, thr).mask(act[:, None, :])[:, 0]


def train(spec: TrainSpec, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """x [T, L, d], y [T, L, F] -> (float16-rounded predictor, thresholds [R, L] per recall target)."""
    perm = rng.permutation(len(x))
    x, y = x[perm], y[perm]
    tc = TrainConfig(rank=spec.rank, epochs=spec.epochs, target_recall=spec.recall_targets[0],
                     calib_fraction=spec.calib_fraction)  # fmt: skip
    pred = rounded(LowRankPredictor.train(x, y, [tc] * x.shape[1], rng))
    n_cal = int(round(spec.calib_fraction * len(x))) or len(x)  # the tail train_layer held out
    x_cal, y_cal = x[-n_cal:], y[-n_cal:]
    thr = np.empty((len(spec.recall_targets), x.shape[1]), np.float32)
    for l, lp in enumerate(pred.layers):
        z = lp.logits(x_cal[:, l])  # [n_cal, F]
        thr[:, l] = [recall_threshold(z, y_cal[:, l], r) for r in spec.recall_targets]
    return pred, thr


def quality(pred: LowRankPredictor, thresholds: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Pooled quality on x [T, L, d], y [T, L, F] for each threshold row [R, L]; also the worst layer's recall."""
    h = np.einsum("tld,ldr->tlr", x.astype(np.float32), pred.W1)
    z = np.einsum("tlr,lrf->tlf", h, pred.W2) + pred.b  # [T, L, F]
    rows = []
    for row in thresholds:
        p = z > row[None, :, None]
        per_layer = [Quality.of(p[:, l], y[:, l]).recall for l in range(y.shape[1])]
        rows.append({**asdict(Quality.of(p, y)), "min_layer_recall": float(min(per_layer))})
    return rows


def train_predictor(spec: TrainSpec, out: str, log=print, progress: bool = True) -> dict:
    """Capture, label, train, evaluate on held-out tokens and save to ``out``; returns the metadata written."""
    from sim.lab.modelfile import load_model, load_tokenizer, resolve_model_path
    from sim.lab.modelfile.registry import sha256_file
    from sim.lif.predictor import save

    path = resolve_model_path(spec.model)
    cfg, w = load_model(path)
    tok = load_tokenizer(path)
    t0 = time.perf_counter()
    x, act, names = capture_ffn(cfg, w, tok, "trace", spec.tokens, spec.skip_tokens, progress)
    xh, acth, held = capture_ffn(cfg, w, tok, "heldout", spec.heldout_tokens, 0, progress)
    t1 = time.perf_counter()
    fitted = fit_labels(spec.rule, act)
    pred, thr = train(spec, x, fitted.mask(act), np.random.default_rng(spec.seed))
    t2 = time.perf_counter()
    rows = quality(pred, thr, xh, fitted.mask(acth))
    for r, q in zip(spec.recall_targets, rows, strict=True):
        log(f"rank {spec.rank} target {r:g}: held-out precision {q['precision']:.3f} recall {q['recall']:.3f} "
            f"FN {q['fn_rate']:.3f} predicted {q['predicted_fraction']:.3f} "
            f"(true {q['true_fraction']:.3f})")  # fmt: skip
    meta = {"model": spec.model, "gguf_file": path.name, "gguf_sha256": sha256_file(path), "spec": asdict(spec),
            "command": spec.command(out), "rule": spec.rule, "train_contexts": names, "heldout_contexts": held,
            "train_tokens": int(len(x)), "heldout_tokens": int(len(xh)),
            "label_thresholds": None if fitted.thresholds is None else fitted.thresholds.tolist(),
            "heldout_quality": dict(zip([f"{r:g}" for r in spec.recall_targets], rows, strict=True)),
            "capture_s": t1 - t0, "train_s": t2 - t1}  # fmt: skip
    save(out, pred, spec.recall_targets, thr, meta)
    log(f"wrote {out}: capture {t1 - t0:.0f} s, training {t2 - t1:.0f} s")
    return meta
