"""Low-rank activation predictor (LLM in a Flash §3.1, after Deja Vu): per layer, FFN input -> active neurons.

Per layer l: ``logits = ((x - mu) / sd) @ W1 @ W2 + b`` with ``W1 [d, r]``, ``W2 [r, F]``, ``b [F]``; a neuron
is predicted active when its logit exceeds the layer's threshold. Training (numpy, seeded): weighted logistic
loss (positive class weighted by ``pos_weight``) with minibatch Adam on the first ``1 - calib_fraction`` of the
training tokens; the threshold is then set on the last ``calib_fraction`` of them (tokens the weights did not
see, so held-out recall lands near the target) so that ``target_recall`` of the truly active neurons are
predicted (the paper: 5% false negatives). Evaluate on held-out tokens with :func:`evaluate`.

Cost charged to the simulation (:func:`predictor_weights`): ``(d + F) * r``
weights per layer resident in DRAM at the model dtype and ``2 (d + F) r`` FLOPs per token per layer
(standardisation and bias are folded into W1 / b and not charged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.models.profile import dtype_bytes


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 64
    epochs: int = 30
    batch: int = 256
    lr: float = 1e-2
    pos_weight: float | None = None  # None: sqrt(negatives / positives) of the layer
    target_recall: float = 0.95
    calib_fraction: float = 0.2  # last part of the training tokens, used only to set the threshold


@dataclass(frozen=True)
class LayerPredictor:
    W1: np.ndarray  # [d, r] (standardisation folded in)
    W2: np.ndarray  # [r, F]
    b: np.ndarray  # [F]
    threshold: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.W1) @ self.W2 + self.b  # [T, d] -> [T, F]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x) > self.threshold  # [T, F] bool


def _adam(params: list[np.ndarray], grads: list[np.ndarray], state: list[list[np.ndarray]], step: int, lr: float):
    b1, b2, eps = 0.9, 0.999, 1e-8
    for p, g, (m, v) in zip(params, grads, state, strict=True):
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        p -= lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)


def train_layer(x: np.ndarray, y: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> LayerPredictor:
    """x [T, d] FFN inputs, y [T, F] bool active -> a predictor reaching cfg.target_recall on the calibration part."""
    x = np.asarray(x, np.float32)
    n_cal = int(round(cfg.calib_fraction * len(x)))
    (x, x_cal), (y, y_cal) = np.split(x, [len(x) - n_cal]), np.split(y, [len(y) - n_cal])
    if n_cal == 0:
        x_cal, y_cal = x, y
    T, d = x.shape
    F = y.shape[1]
    mu, sd = x.mean(0), x.std(0) + 1e-6  # [d]
    xs = (x - mu) / sd  # [T, d]
    rate = np.clip(y.mean(0), 1e-4, 1 - 1e-4)  # [F]
    pos = float(y.mean())
    w_pos = cfg.pos_weight if cfg.pos_weight is not None else float(np.sqrt((1 - pos) / max(pos, 1e-6)))
    W1 = (rng.standard_normal((d, cfg.rank)) / np.sqrt(d)).astype(np.float32)
    W2 = (rng.standard_normal((cfg.rank, F)) * 0.01).astype(np.float32)
    b = np.log(rate / (1 - rate)).astype(np.float32)
    params = [W1, W2, b]
    state = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    step = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(T)
        for start in range(0, T, cfg.batch):  # minibatches; each step vectorised
            idx = order[start : start + cfg.batch]
            xb, yb = xs[idx], y[idx].astype(np.float32)  # [B, d], [B, F]
            h = xb @ W1  # [B, r]
            p = 1.0 / (1.0 + np.exp(-(h @ W2 + b)))  # [B, F]
            dz = (p * (w_pos * yb + 1 - yb) - w_pos * yb) / len(idx)  # d loss / d logit
            dW2, db = h.T @ dz, dz.sum(0)
            dW1 = xb.T @ (dz @ W2.T)
            step += 1
            _adam(params, [dW1, dW2, db], state, step, cfg.lr)
    W1f = (W1 / sd[:, None]).astype(np.float32)  # fold standardisation: ((x-mu)/sd) W1 = x W1f - mu W1f
    bf = (b - (mu @ W1f) @ W2).astype(np.float32)
    layer = LayerPredictor(W1f, W2, bf, 0.0)
    threshold = recall_threshold(layer.logits(x_cal), y_cal, cfg.target_recall)
    return LayerPredictor(W1f, W2, bf, threshold)


def recall_threshold(logits: np.ndarray, y: np.ndarray, target_recall: float) -> float:
    """Largest threshold t such that at least target_recall of the positives have logit > t."""
    pos = np.sort(logits[y])
    if len(pos) == 0:
        return float("inf")
    n_miss = int(np.floor((1 - target_recall) * len(pos)))  # positives allowed at or below t
    return float(np.nextafter(pos[n_miss], -np.inf)) if n_miss == 0 else float(pos[n_miss - 1])


@dataclass(frozen=True)
class Quality:
    precision: float
    recall: float
    fn_rate: float  # false negatives / truly active
    fp_rate: float  # false positives / truly inactive
    predicted_fraction: float  # predicted active / F
    true_fraction: float

    @staticmethod
    def of(pred: np.ndarray, true: np.ndarray) -> Quality:
        tp = float((pred & true).sum())
        n_pred, n_true, n = float(pred.sum()), float(true.sum()), float(true.size)
        recall = tp / n_true if n_true else 1.0
        return Quality(
            precision=tp / n_pred if n_pred else 1.0,
            recall=recall,
            fn_rate=1.0 - recall,
            fp_rate=(n_pred - tp) / (n - n_true) if n > n_true else 0.0,
            predicted_fraction=n_pred / n,
            true_fraction=n_true / n,
        )


class LowRankPredictor:
    """One :class:`LayerPredictor` per layer, evaluated for all layers at once (ranks zero-padded)."""

    def __init__(self, layers: list[LayerPredictor]):
        self.layers = layers
        self.ranks = np.array([lp.W1.shape[1] for lp in layers], np.int64)  # [L]
        r = int(self.ranks.max())
        self.W1 = np.stack([np.pad(lp.W1, ((0, 0), (0, r - lp.W1.shape[1]))) for lp in layers])  # [L, d, r]
        self.W2 = np.stack([np.pad(lp.W2, ((0, r - lp.W2.shape[0]), (0, 0))) for lp in layers])  # [L, r, F]
        self.b = np.stack([lp.b for lp in layers])  # [L, F]
        self.threshold = np.array([lp.threshold for lp in layers], np.float32)  # [L]
        self.d_model, self.d_ff = self.W1.shape[1], self.W2.shape[2]

    @staticmethod
    def train(x: np.ndarray, y: np.ndarray, cfgs: list[TrainConfig], rng: np.random.Generator) -> LowRankPredictor:
        """x [T, L, d], y [T, L, F] bool, one TrainConfig per layer -> predictor."""
        return LowRankPredictor([train_layer(x[:, l], y[:, l], cfgs[l], rng) for l in range(x.shape[1])])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x [T, L, d] -> predicted active [T, L, F]."""
        h = np.einsum("tld,ldr->tlr", x.astype(np.float32), self.W1)  # [T, L, r]
        z = np.einsum("tlr,lrf->tlf", h, self.W2) + self.b  # [T, L, F]
        return z > self.threshold[None, :, None]

    def nbytes(self, dtype: str) -> float:
        """DRAM held by all layers' factors at ``dtype``."""
        return dtype_bytes(dtype, float(predictor_weights(self.d_model, self.d_ff, self.ranks).sum()))


def predictor_weights(d_model: int, d_ff: int, ranks: np.ndarray) -> np.ndarray:
    """[L] weights of a rank-r_l low-rank predictor per layer, (d + F) r_l: what it holds in memory; a token's
    prediction costs 2 FLOPs per weight. The one place the simulation prices a predictor (trained or statistical)."""
    return (d_model + d_ff) * np.asarray(ranks, dtype=np.float64)


def evaluate(predictor: LowRankPredictor, x: np.ndarray, y: np.ndarray) -> list[Quality]:
    """Per-layer quality on (held-out) x [T, L, d], y [T, L, F]."""
    pred = predictor.predict(x)
    return [Quality.of(pred[:, l], y[:, l]) for l in range(y.shape[1])]


# ---- predictor files (np.savez): factors + one threshold row per recall target + JSON metadata -------------------
def save(path, predictor: LowRankPredictor, recall_targets, thresholds: np.ndarray, meta: dict) -> None:
    """Write ``W1 [L, d, r]`` and ``W2 [L, r, F]`` as float16 (round the factors first if thresholds must be exact:
    :func:`rounded`), ``b [L, F]``, ``ranks [L]``, ``thresholds [R, L]`` for ``recall_targets [R]``, ``meta`` JSON."""
    import json

    L, d, F = len(predictor.layers), predictor.d_model, predictor.d_ff
    np.savez(path, W1=predictor.W1.astype(np.float16), W2=predictor.W2.astype(np.float16), b=predictor.b,
             ranks=predictor.ranks, recall_targets=np.asarray(recall_targets, np.float64),
             thresholds=np.asarray(thresholds, np.float32).reshape(len(recall_targets), L),
             shape=np.array([L, d, F]), meta=np.array(json.dumps(meta)))  # fmt: skip


def rounded(predictor: LowRankPredictor) -> LowRankPredictor:
    """The predictor with its factors rounded through float16, i.e. exactly what :func:`save` stores."""
    from dataclasses import replace

    r16 = lambda a: a.astype(np.float16).astype(np.float32)  # noqa: E731
    return LowRankPredictor([replace(lp, W1=r16(lp.W1), W2=r16(lp.W2)) for lp in predictor.layers])


def load(path, n_layers: int, d_model: int, d_ff: int, recall: float | None = None) -> tuple[LowRankPredictor, dict]:
    """Read a predictor file for a model of these shapes -> (predictor with the thresholds of ``recall``, meta).

    ``recall=None`` takes the first stored target. A missing file, a shape mismatch or a recall target not in
    the file raises a one-line :class:`~sim.errors.ConfigError` naming the file.
    """
    import json
    from pathlib import Path

    from sim.errors import ConfigError

    if not Path(path).is_file():
        raise ConfigError(path, "predictor_path", "no such predictor file (see predictors/README.md)")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    want = {"n_layers": n_layers, "d_model": d_model, "d_ff": d_ff}
    for key, got in zip(want, arrays["shape"].tolist(), strict=True):
        if got != want[key]:
            raise ConfigError(path, key, f"predictor was trained for {key}={got}, the model has {want[key]}", got)
    targets = arrays["recall_targets"].tolist()
    row = 0 if recall is None else next((i for i, r in enumerate(targets) if abs(r - recall) < 1e-9), None)
    if row is None:
        raise ConfigError(path, "recall", f"not a stored recall target (stored: {targets})", recall)
    layers = [
        LayerPredictor(
            arrays["W1"][l, :, :r].astype(np.float32),
            arrays["W2"][l, :r].astype(np.float32),
            arrays["b"][l].astype(np.float32),
            float(arrays["thresholds"][row, l]),
        )
        for l, r in enumerate(arrays["ranks"].tolist())
    ]
    return LowRankPredictor(layers), {**json.loads(str(arrays["meta"])), "recall_targets": targets}
