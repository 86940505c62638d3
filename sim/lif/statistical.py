"""Statistical predictor calibrated to LLM in a Flash App. C, for projected shapes (e.g. OPT-6.7B) where no
hidden states of that width exist to train a real predictor on.

Given the TRUE active mask of a token it emits a predicted mask with the paper's measured quality: each truly
active neuron is kept with probability ``recall`` (0.95: 5% false negatives) and each inactive neuron becomes a
false positive with probability ``fp_rate`` on average (0.07: 7% false positives). With ≈3.3% truly active
(Table 6 mean) that predicts 0.95·3.3% + 0.07·96.7% ≈ 10% of the FFN per token, the paper's figure.

False positives are not uniform: a neuron's FP probability is proportional to ``fp_weights`` (e.g. its activation
frequency in the trace, so hot neurons are mispredicted more often, as a trained predictor does), scaled per layer
and token so that the expected count is ``fp_rate`` x inactive neurons (clipped at probability 1). Randomness
comes only from the np.random.Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.models.profile import dtype_bytes


@dataclass(frozen=True)
class StatisticalPredictor:
    recall: float = 0.95
    fp_rate: float = 0.07
    fp_weights: np.ndarray | None = None  # [L, F] >= 0; None: uniform
    label: str = "statistical predictor calibrated to LLM in a Flash App. C"

    def __post_init__(self) -> None:
        if not 0.0 <= self.recall <= 1.0 or not 0.0 <= self.fp_rate <= 1.0:
            raise ValueError(f"recall and fp_rate must be in [0, 1] (got {self.recall}, {self.fp_rate})")

    def predict(self, true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """true [L, F] bool -> predicted [L, F] bool."""
        u = rng.random(true.shape, dtype=np.float32)  # [L, F]
        keep = true & (u < self.recall)
        neg = ~true
        w = np.ones(true.shape, np.float32) if self.fp_weights is None else self.fp_weights.astype(np.float32)
        w_neg_sum = (w * neg).sum(axis=1, keepdims=True)  # [L, 1]
        scale = self.fp_rate * neg.sum(axis=1, keepdims=True) / np.maximum(w_neg_sum, 1e-30)  # [L, 1]
        p_fp = np.minimum(w * scale, 1.0)
        fp = neg & (u < p_fp)  # independent of keep: u is only compared on disjoint sets
        return keep | fp

    def nbytes(self, d_model: int, d_ff: int, ranks: np.ndarray, dtype: str) -> float:
        """DRAM a real low-rank predictor of these ranks would hold (what the simulation charges)."""
        return dtype_bytes(dtype, float((d_model + d_ff) * np.asarray(ranks).sum()))
