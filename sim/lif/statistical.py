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
        if self.fp_weights is not None:
            w = np.asarray(self.fp_weights, np.float32)
            if (w < 0).any():
                raise ValueError("fp_weights must be >= 0")
            object.__setattr__(self, "fp_weights", w)
            object.__setattr__(self, "_w_total", w.sum(axis=1, dtype=np.float64))  # [L]

    def predict(self, true: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """true [L, F] bool -> predicted [L, F] bool: u < recall where active, u < p_fp where not."""
        L, F = true.shape
        u = rng.random(true.shape, dtype=np.float32)  # [L, F] one uniform per neuron
        if self.fp_weights is None:
            threshold = np.where(true, np.float32(self.recall), np.float32(self.fp_rate))  # [L, F]
            return u < threshold
        active = np.flatnonzero(true)  # [a] flat indices, layer-major
        layer = active // F
        w_pos = np.bincount(layer, weights=self.fp_weights.ravel()[active], minlength=L)  # [L]
        n_neg = F - np.bincount(layer, minlength=L)  # [L]
        scale = self.fp_rate * n_neg / np.maximum(self._w_total - w_pos, 1e-30)  # [L]
        threshold = self.fp_weights * scale[:, None].astype(np.float32)  # [L, F] p_fp; u < p >= 1 always: no clip
        threshold.reshape(-1)[active] = np.float32(self.recall)  # u is compared once per neuron
        return u < threshold

    def nbytes(self, d_model: int, d_ff: int, ranks: np.ndarray, dtype: str) -> float:
        """DRAM a real low-rank predictor of these ranks would hold (what the simulation charges)."""
        return dtype_bytes(dtype, float((d_model + d_ff) * np.asarray(ranks).sum()))
