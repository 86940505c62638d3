"""The LLM in a Flash compute set as a "pre"-mode FFN selector for the numpy backend (one batched prefill).

Per layer and position t of a prefill of n tokens (teacher forcing, so every position sees the true prefix):

* ``pred [n, F]``: the predictor's mask from the layer's MLP input (``trained``), the true active set
  (``oracle``: no false negatives), or every neuron (``none``);
* the computed set: ``pred`` itself (``ffn_compute: active``) or the sliding window's resident set, the causal
  union of ``pred`` over positions t-k+1 .. t (``ffn_compute: resident``, :func:`window_union`), which is
  what :class:`sim.lif.window.SlidingWindow` holds after step t (without co-activation friends);
* gate, up and down then run only over the computed set (:func:`sim.lab.kernels.sparse.ffn_sparse`).

To count false negatives the selector also computes the layer's dense ``silu(gate x) * (up x)`` on the same
input and applies the labelling rule the predictor was trained with (``truth``): that extra work is
measurement, not part of the computed set, and is not counted in ``Touched``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sim.lif.predictor import LowRankPredictor


def window_union(mask: np.ndarray, k: int) -> np.ndarray:
    """mask [n, F] bool -> [n, F] bool: row t is the OR of rows max(0, t-k+1) .. t (a causal running union)."""
    if k < 1:
        raise ValueError(f"window k must be >= 1 (got {k})")
    c = np.cumsum(mask, axis=0, dtype=np.int32)  # [n, F] masks seen up to t
    before = np.zeros_like(c)
    before[k:] = c[:-k]  # masks seen up to t-k
    return (c - before) > 0


@dataclass
class Counts:
    """Neuron counts pooled over positions and layers (for fractions and false-negative rates)."""

    slots: int = 0  # positions x layers x F
    computed: int = 0
    predicted: int = 0
    true: int = 0
    missed_by_predictor: int = 0  # true & ~pred
    missed: int = 0  # true & ~computed (what the window did not recover)

    def add(self, true: np.ndarray, pred: np.ndarray, comp: np.ndarray) -> None:
        self.slots += true.size
        self.computed += int(comp.sum())
        self.predicted += int(pred.sum())
        self.true += int(true.sum())
        self.missed_by_predictor += int((true & ~pred).sum())
        self.missed += int((true & ~comp).sum())

    def summary(self) -> dict[str, float]:
        n_true = max(self.true, 1)
        return {
            "fraction_computed": self.computed / max(self.slots, 1),
            "fraction_predicted": self.predicted / max(self.slots, 1),
            "fraction_true": self.true / max(self.slots, 1),
            "fn_rate": self.missed_by_predictor / n_true,
            "fn_rate_computed": self.missed / n_true,
        }


@dataclass
class LifSelector:
    """Builds the FfnSelector of one configuration; ``counts`` accumulates over every prefill it serves.

    ``truth(layer, act [n, F]) -> bool [n, F]`` is the labelling rule; ``gate_up(layer)`` gives the layer's
    (gate [F, d], up [F, d]) for the measurement of the true set.
    """

    kind: Literal["none", "oracle", "trained"]
    ffn_compute: Literal["active", "resident"]
    window_k: int
    truth: Callable[[int, np.ndarray], np.ndarray]
    gate_up: Callable[[int], tuple[np.ndarray, np.ndarray]]
    predictor: LowRankPredictor | None = None
    counts: Counts = field(default_factory=Counts)

    def __post_init__(self) -> None:
        if self.kind == "trained" and self.predictor is None:
            raise ValueError("selector kind 'trained' needs a predictor")

    def masks(self, layer: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x [n, d] -> (true, predicted, computed), each bool [n, F]."""
        from sim.lab.kernels.ops import swiglu_act

        true = self.truth(layer, swiglu_act(x, *self.gate_up(layer)))  # [n, F]
        if self.kind == "oracle":
            pred = true
        elif self.kind == "none":
            pred = np.ones_like(true)
        else:
            pred = self.predictor.layers[layer].predict(x)  # [n, F]
        comp = pred if self.ffn_compute == "active" else window_union(pred, self.window_k)
        return true, pred, comp

    def select(self, layer: int, x: np.ndarray, _act: np.ndarray | None) -> np.ndarray:
        true, pred, comp = self.masks(layer, x)
        self.counts.add(true, pred, comp)
        return comp

    def ffn_selector(self):
        from sim.lab.kernels import FfnSelector

        return FfnSelector(self.select, "pre")
