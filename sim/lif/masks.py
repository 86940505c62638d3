"""Per-token (true, predicted) FFN masks [L, n] for decode steps t = 0, 1, ..., from an activation source.

The source (``sim.traces.source.ActivationSource``) gives ``masks(start, stop) -> bool [T, L, n]`` and, for
the trained predictor, ``hidden(start, stop) -> mlp_in [T, L, d]``. Decode step t reads source token
``offset + t``; tokens are fetched in blocks and predicted a block at a time (vectorised over tokens and
layers). Predictor kinds:

* ``oracle``       predicted = true (no predictor error, no predictor cost);
* ``none``         every neuron predicted (dense FFN; without a source every neuron also counts as active);
* ``trained``      a :class:`~sim.lif.predictor.LowRankPredictor` on the source's hidden states;
* ``statistical``  a :class:`~sim.lif.statistical.StatisticalPredictor` drawing from its own Generator,
                   re-created from ``seed`` by :meth:`MaskStream.reset`, so a dry run and the real run see
                   identical predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.lif.predictor import LowRankPredictor
from sim.lif.statistical import StatisticalPredictor

PREDICTOR_KINDS = ("none", "oracle", "trained", "statistical")


class MaskStream:
    def __init__(
        self, source: Any, kind: str, offset: int, predictor: Any = None, seed: int = 0, block: int = 64,
        shape: tuple[int, int] | None = None,
    ):  # fmt: skip
        if kind not in PREDICTOR_KINDS:
            raise ValueError(f"unknown predictor kind {kind!r}; known: {', '.join(PREDICTOR_KINDS)}")
        if kind == "trained" and not isinstance(predictor, LowRankPredictor):
            raise ValueError("predictor kind 'trained' needs a LowRankPredictor")
        if kind == "statistical" and not isinstance(predictor, StatisticalPredictor):
            raise ValueError("predictor kind 'statistical' needs a StatisticalPredictor")
        self.source, self.kind, self.offset = source, kind, offset
        self.predictor, self.seed, self.block, self.shape = predictor, seed, block, shape
        if source is None and (kind != "none" or shape is None):
            raise ValueError(f"predictor kind {kind!r} needs an activation source (kind 'none' needs shape=)")
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._start, self._true, self._pred = -1, None, None
        self._next = 0

    def token(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(true [L, n], predicted [L, n]) of decode step t; steps must come in order (the RNG stream is ordered)."""
        if t != self._next:
            raise ValueError(f"mask stream expected decode step {self._next}, got {t} (call reset() to restart)")
        self._next += 1
        start = (t // self.block) * self.block
        if start != self._start:
            self._load_block(start)
        true = self._true[t - start]
        if self.kind == "statistical":
            return true, self.predictor.predict(true, self._rng)
        return true, self._pred[t - start]

    def _load_block(self, start: int) -> None:
        if self.source is None:  # kind "none" without a trace: every neuron is active and predicted
            self._true = self._pred = np.ones((self.block, *self.shape), bool)
            self._start = start
            return
        lo, hi = self.offset + start, self.offset + start + self.block
        n_tokens = getattr(self.source, "n_tokens", None)
        if n_tokens is not None:
            hi = min(hi, int(n_tokens))
            if hi <= lo:
                raise ValueError(f"activation source has {n_tokens} tokens; decode step {start} needs token {lo}")
        self._true = np.asarray(self.source.masks(lo, hi), dtype=bool)  # [B, L, n]
        if self.kind == "oracle":
            self._pred = self._true
        elif self.kind == "none":
            self._pred = np.ones_like(self._true)
        elif self.kind == "trained":
            self._pred = self.predictor.predict(self.source.hidden(lo, hi))  # [B, L, n]
        self._start = start
