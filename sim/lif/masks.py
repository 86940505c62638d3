"""Per-token (true, predicted) FFN neuron sets for decode steps t = 0, 1, ..., from an activation source.

The source (``sim.traces.source.ActivationSource``) gives ``masks(start, stop) -> bool [T, L, n]`` and, for
the trained predictor, ``hidden(start, stop) -> mlp_in [T, L, d]``. Decode step t reads source token
``offset + t``; tokens are fetched in blocks (and the trained predictor runs a block at a time, vectorised over
tokens and layers). Predictor kinds:

* ``oracle``       predicted = true (no predictor error, no predictor cost);
* ``none``         every neuron predicted (dense FFN; without a source every neuron also counts as active);
* ``trained``      a :class:`~sim.lif.predictor.LowRankPredictor` on the source's hidden states;
* ``statistical``  a :class:`~sim.lif.statistical.StatisticalPredictor` drawing from its own Generator, made
                   from ``seed``, so every run of the stream sees identical predictions.

A step comes as :class:`TokenMasks`: the predicted set packed (:mod:`sim.lif.bits`) and the counts a policy
reports. The first ``cache_tokens`` steps are kept: after :meth:`MaskStream.reset` (e.g. between a policy's dry
run and its real run) they are replayed, not recomputed, and the steps after them continue the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import ConfigError
from sim.lif import bits
from sim.lif.predictor import LowRankPredictor
from sim.lif.statistical import StatisticalPredictor

PREDICTOR_KINDS = ("none", "oracle", "trained", "statistical")


@dataclass(frozen=True, slots=True)
class TokenMasks:
    pred_bits: np.ndarray  # [L, nw] uint64 predicted neurons, packed
    n_pred: np.ndarray  # [L] int64 predicted neurons per layer
    n_true: int  # truly active neurons (all layers)
    n_fn: int  # truly active neurons not predicted (false negatives)
    n: int  # neurons per layer

    @property
    def pred(self) -> np.ndarray:
        return bits.unpack_rows(self.pred_bits, self.n)  # [L, n] bool

    def pred_flat(self) -> np.ndarray:
        """[p] int64 sorted flat indices ``l * n + i`` of the predicted neurons."""
        return bits.flat_indices(self.pred_bits, self.n)


class MaskStream:
    def __init__(
        self, source: Any, kind: str, offset: int, predictor: Any = None, seed: int = 0, block: int = 64,
        shape: tuple[int, int] | None = None, cache_tokens: int = 0, n_steps: int | None = None,
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
        self.cache_tokens, self._cache = cache_tokens, []
        if n_steps is not None and source is not None:
            self._check_length(n_steps)
        self._restart()

    def _check_length(self, n_steps: int) -> None:
        """The source must hold steps 0..n_steps-1 (ConfigError naming decode_tokens, caught at validate)."""
        n_tokens = int(self.source.n_tokens)
        if self.offset + n_steps > n_tokens:
            first = f"from token {self.offset} " if self.offset else ""
            reason = (
                f"{n_steps} steps need {n_steps} source tokens {first}but {self.source.describe()} has {n_tokens}; "
                "decode fewer tokens or set activations.loop: true"
            )
            raise ConfigError("experiment", "decode_tokens", reason, n_steps)

    def _restart(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._start, self._true, self._pred = -1, None, None
        self._next, self._made = 0, 0  # next step asked for, next step to compute

    @property
    def position(self) -> int:
        """The next step :meth:`token` expects."""
        return self._next

    def reset(self) -> None:
        """Start again at step 0: cached steps are replayed; if steps were computed past the cache, recompute."""
        if self._made > len(self._cache):
            self._cache.clear()
            self._restart()
        self._next = 0

    def token(self, t: int) -> TokenMasks:
        """The masks of decode step t; steps must come in order (the RNG stream is ordered)."""
        if t != self._next:
            raise ValueError(f"mask stream expected decode step {self._next}, got {t} (call reset() to restart)")
        self._next += 1
        if t < len(self._cache):
            return self._cache[t]
        if self.kind == "replay":
            raise ValueError(f"a replayed mask stream holds {len(self._cache)} steps; step {t} was not stored")
        out = self._compute(t)
        self._made += 1
        if t < self.cache_tokens:
            self._cache.append(out)
        return out

    def cached_arrays(self) -> dict[str, np.ndarray]:
        """The cached steps as arrays (for storing them: :meth:`replay`)."""
        c = self._cache
        return {
            "pred_bits": np.stack([m.pred_bits for m in c]),  # [T, L, nw] uint64
            "n_pred": np.stack([m.n_pred for m in c]),  # [T, L] int64
            "n_true": np.array([m.n_true for m in c], np.int64),  # [T]
            "n_fn": np.array([m.n_fn for m in c], np.int64),  # [T]
        }

    @staticmethod
    def replay(arrays: dict[str, np.ndarray], n: int) -> MaskStream:
        """A stream that returns stored steps (:meth:`cached_arrays`) and has no source to compute more."""
        stream = MaskStream(None, "none", 0, shape=(arrays["pred_bits"].shape[1], n))
        stream._cache = [
            TokenMasks(p, c, int(t), int(f), n)
            for p, c, t, f in zip(arrays["pred_bits"], arrays["n_pred"], arrays["n_true"], arrays["n_fn"], strict=True)
        ]
        stream.cache_tokens = len(stream._cache)
        stream.kind = "replay"
        return stream

    def fill(self, n_steps: int) -> None:
        """Compute and cache steps 0..n_steps-1 (then :meth:`reset` to read them from step 0)."""
        self.cache_tokens = max(self.cache_tokens, n_steps)
        for t in range(self._next, n_steps):
            self.token(t)
        self.reset()

    def _compute(self, t: int) -> TokenMasks:
        start = (t // self.block) * self.block
        if start != self._start:
            self._load_block(start)
        true = self._true[t - start]  # [L, n]
        n_layers, n = true.shape
        if self.kind == "statistical":
            active = np.flatnonzero(true)  # [a] ascending
            kept = self.predictor.keep_active(active, self._rng)
            pred = np.concatenate([kept, self.predictor.false_positives(true, active, self._rng)])
            pred_bits = bits.from_flat(pred, n_layers, n)
            return TokenMasks(pred_bits, bits.row_counts(pred_bits), len(active), len(active) - len(kept), n)
        pred_bits, true_bits = bits.pack_rows(self._pred[t - start]), bits.pack_rows(true)
        n_fn = int(bits.row_counts(true_bits & ~pred_bits).sum())
        return TokenMasks(pred_bits, bits.row_counts(pred_bits), int(bits.row_counts(true_bits).sum()), n_fn, n)

    def _load_block(self, start: int) -> None:
        if self.source is None:  # kind "none" without a trace: every neuron is active and predicted
            self._true = self._pred = np.ones((self.block, *self.shape), bool)
            self._start = start
            return
        lo, hi = self.offset + start, self.offset + start + self.block
        n_tokens = self.source.n_tokens
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
