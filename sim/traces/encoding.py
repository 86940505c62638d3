"""How each trace field is stored on disk, and its documented error.

Encodings (the manifest records the encoding and its parameters per field):

``log8``  uint8 code of a magnitude ``m >= 0`` (used for ``ffn_act`` = |silu(gate)*up|):
          ``code = 0`` if ``m < 2**lo_log2``, else ``clip(round((log2 m - lo_log2) * steps) + 1, 1, 255)``;
          decoded ``m' = 0`` for code 0, else ``2 ** (lo_log2 + (code - 1) / steps)``.
          Relative error ``|m' - m| / m <= 2 ** (1 / (2 * steps)) - 1`` for ``2**lo_log2 <= m <= 2**hi``
          (``hi = lo_log2 + 254 / steps``); smaller values decode to 0, larger ones saturate at ``2**hi``.
          Monotone: ``m1 <= m2`` implies ``code(m1) <= code(m2)``, so rankings survive up to ties.
``fp16``  IEEE half precision (``mlp_in``, ``attn_in``, ``q``, ``k``): relative error <= 2**-11 for
          |x| in [6.1e-5, 65504]; |x| > 65504 is clipped to +-65504 (recorded, never inf).
``bits``  a boolean array packed 8 per byte along its last axis (``np.packbits``, big bit order); exact.
``raw``   the array as it is (token metadata: int32 / int16); exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FP16_MAX = 65504.0


@dataclass(frozen=True)
class Encoding:
    """A field's storage encoding; ``params`` are written verbatim into the manifest."""

    kind: str  # log8 | fp16 | bits | raw
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.params}

    @staticmethod
    def from_json(data: dict) -> Encoding:
        data = dict(data)
        kind = data.pop("kind")
        if kind not in ENCODERS:
            raise ValueError(f"unknown encoding {kind!r}; known: {', '.join(ENCODERS)}")
        return Encoding(kind, data)

    @property
    def max_rel_error(self) -> float:
        """Worst relative error inside the representable range (0 for exact encodings)."""
        if self.kind == "log8":
            return float(2.0 ** (1.0 / (2 * self.params["steps"])) - 1.0)
        if self.kind == "fp16":
            return 2.0**-11
        return 0.0

    def encode(self, x: np.ndarray) -> np.ndarray:
        return ENCODERS[self.kind][0](x, **self.params)

    def decode(self, stored: np.ndarray, last_dim: int) -> np.ndarray:
        """Stored array -> values; ``last_dim`` is the decoded size of the last axis (for ``bits``)."""
        return ENCODERS[self.kind][1](stored, last_dim, **self.params)


def log8(lo_log2: float = -16.0, steps: int = 8) -> Encoding:
    return Encoding("log8", {"lo_log2": float(lo_log2), "steps": int(steps)})


def _log8_encode(m: np.ndarray, lo_log2: float, steps: int) -> np.ndarray:
    m = np.abs(np.asarray(m, dtype=np.float32))
    with np.errstate(divide="ignore"):
        level = np.rint((np.log2(m) - lo_log2) * steps) + 1.0  # -inf for m == 0
    code = np.clip(level, 1, 255)
    return np.where(m < 2.0**lo_log2, 0, code).astype(np.uint8)


def _log8_decode(code: np.ndarray, last_dim: int, lo_log2: float, steps: int) -> np.ndarray:
    table = np.concatenate([[0.0], 2.0 ** (lo_log2 + np.arange(255) / steps)]).astype(np.float32)  # [256]
    return table[code]


def _fp16_encode(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32), -FP16_MAX, FP16_MAX).astype(np.float16)


def _fp16_decode(x: np.ndarray, last_dim: int) -> np.ndarray:
    return x.astype(np.float32)


def _bits_encode(x: np.ndarray) -> np.ndarray:
    return np.packbits(np.asarray(x, dtype=bool), axis=-1)


def _bits_decode(x: np.ndarray, last_dim: int) -> np.ndarray:
    return np.unpackbits(x, axis=-1, count=last_dim).astype(bool)


def _raw_encode(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)


def _raw_decode(x: np.ndarray, last_dim: int) -> np.ndarray:
    return x


ENCODERS = {
    "log8": (_log8_encode, _log8_decode),
    "fp16": (lambda x: _fp16_encode(x), _fp16_decode),
    "bits": (_bits_encode, _bits_decode),
    "raw": (_raw_encode, _raw_decode),
}
