"""Sparsity rules: which FFN neurons count as *active* for a token, from a trace's recorded magnitudes.

``sparsity`` is always the fraction of neurons dropped (0.9 -> 10% active). Arrays are ``[T, L, F]``
(tokens, layers, d_ff) and every function is vectorised over tokens and layers.

* ``threshold`` (CATS, TEAL): per layer, the ``sparsity``-quantile of |act| over calibration tokens is the
  threshold; a neuron is active when |act| > threshold. Density hits the target on the calibration tokens
  (up to ties: on log8-quantised traces a tie level holds ~1% of the values; the tie goes to whichever side
  lands closer to the target) and varies from token to token.
* ``topk``: exactly ``k = round((1 - sparsity) * F)`` neurons with the largest |act| per token and layer.
* ``gate``: the gate<0 proxy, active where the gate pre-activation is >= 0 (silu of a negative input is in
  (-0.28, 0)). Needs the ``gate_neg`` field (sign of the gate pre-activation, stored as bits by capture);
  its sparsity is whatever the model gives, the ``sparsity`` argument is ignored.
* ``dense``: every neuron active.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULE_KINDS = ("threshold", "topk", "gate", "dense")


def layer_thresholds(act: np.ndarray, sparsity: float | np.ndarray) -> np.ndarray:
    """Per-layer quantile of |act|: act [T, L, F], sparsity scalar or [L] -> thresholds [L].

    When the quantile falls on a tie (quantised traces), the threshold either excludes or includes the tied
    values, whichever gives a density closer to ``1 - sparsity``.
    """
    T, L, F = act.shape
    per_layer = np.abs(act).transpose(1, 0, 2).reshape(L, T * F)  # [L, T*F]
    s = np.broadcast_to(np.asarray(sparsity, dtype=np.float64), (L,))
    out = np.empty(L, dtype=np.float32)
    for l in range(L):
        q = np.float32(np.quantile(per_layer[l], s[l]))
        above, at = np.mean(per_layer[l] > q), np.mean(per_layer[l] == q)
        include = abs(above + at - (1 - s[l])) < abs(above - (1 - s[l]))
        out[l] = np.nextafter(q, np.float32(-np.inf)) if include else q
    return out


def threshold_mask(act: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """act [T, L, F], thresholds [L] -> active [T, L, F] where |act| > threshold."""
    return np.abs(act) > thresholds[None, :, None]


def k_for(sparsity: float, d_ff: int) -> int:
    """Neurons kept per token by top-k at this sparsity."""
    return int(round((1.0 - sparsity) * d_ff))


def topk_mask(act: np.ndarray, k: int) -> np.ndarray:
    """act [T, L, F] -> active [T, L, F] with exactly k True per (token, layer): the k largest |act|."""
    F = act.shape[-1]
    mask = np.zeros(act.shape, dtype=bool)
    if k <= 0:
        return mask
    if k >= F:
        return ~mask
    idx = np.argpartition(-np.abs(act), k - 1, axis=-1)[..., :k]  # [T, L, k]
    np.put_along_axis(mask, idx, True, axis=-1)
    return mask


def gate_mask(gate_neg: np.ndarray) -> np.ndarray:
    """gate_neg [T, L, F] (gate pre-activation < 0) -> active [T, L, F]."""
    return ~np.asarray(gate_neg, dtype=bool)


@dataclass(frozen=True)
class SparsityRule:
    """A rule and its target; :meth:`fit` turns it into a :class:`FittedRule` that makes masks."""

    kind: str = "threshold"
    sparsity: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown sparsity rule {self.kind!r}; known: {', '.join(RULE_KINDS)}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1) (got {self.sparsity})")

    @staticmethod
    def parse(text: str) -> SparsityRule:
        """``threshold:0.5``, ``topk:0.9``, ``gate``, ``dense``."""
        kind, _, value = text.partition(":")
        return SparsityRule(kind, float(value) if value else 0.0)

    @property
    def field(self) -> str:
        """The trace field this rule reads."""
        return "gate_neg" if self.kind == "gate" else "ffn_act"

    def describe(self) -> str:
        return self.kind if self.kind in ("gate", "dense") else f"{self.kind}:{self.sparsity:g}"

    def fit(self, calib_act: np.ndarray | None = None) -> FittedRule:
        """Calibrate on ``calib_act`` [T, L, F] (needed by ``threshold`` only)."""
        thresholds = None
        if self.kind == "threshold":
            if calib_act is None:
                raise ValueError("threshold rule needs calibration activations")
            thresholds = layer_thresholds(calib_act, self.sparsity)
        return FittedRule(self, thresholds)


@dataclass(frozen=True)
class FittedRule:
    rule: SparsityRule
    thresholds: np.ndarray | None = None  # [L] for threshold rules

    def mask(self, values: np.ndarray) -> np.ndarray:
        """values of ``rule.field`` [T, L, F] -> active [T, L, F]."""
        kind = self.rule.kind
        if kind == "threshold":
            return threshold_mask(values, self.thresholds)
        if kind == "topk":
            return topk_mask(values, k_for(self.rule.sparsity, values.shape[-1]))
        if kind == "gate":
            return gate_mask(values)
        return np.ones(values.shape, dtype=bool)
