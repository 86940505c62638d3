"""How each trace field is stored on disk, and its documented error.

Encodings (the manifest records the encoding and its parameters per field):

``log8``  uint8 code of a magnitude ``m >= 0`` (used for ``ffn_act`` = |silu(gate)*up|):
          ``code = 0`` if ``m < 2**lo_log2``, else ``clip(round((log2 m - lo_log2) * steps) + 1, 1, 255)``;
          decoded ``m' = 0`` for code 0, else ``2 ** (lo_log2 + (code - 1) / steps)``.
          Relative error ``|m' - m| / m <= 2 ** (1 / (2 * steps)) - 1`` for ``2**lo_log2 <= m <= 2**hi``
          (``hi = lo_log2 + 254 / steps``); smaller values decode to 0, larger ones saturate at ``2**hi``.
          Monotone: ``m1 <= m2`` implies ``code(m1) <= code(m2)``, so rankings survive up to ties.
          ``keep_top`` < 1 stores only the ``round(keep_top * F)`` largest magnitudes of each (token, layer)
          row (the rest get code 0), so rules that keep at most that fraction (sparsity >= 1 - keep_top)
          are exact up to the quantisation; denser rules are refused by the reader's users.
``int8c`` int8 code in [-levels, levels] per element with a float32 scale per channel (all axes but the
          token axis) and chunk: ``x' = code * scale / levels``, ``scale = max |x|`` over the chunk's tokens;
          absolute error ``<= scale / (2 * levels)`` (member ``FIELD.scale.npy`` beside ``FIELD.npy``).
          ``levels`` = 127 is 8-bit; 31 is 6-bit (about 2/3 of the compressed size).
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

    kind: str  # log8 | int8c | fp16 | bits | raw
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
        if self.kind == "int8c":  # relative to the channel's max |x| over the chunk, not to the value
            return 0.5 / self.params.get("levels", 127)
        return 0.0

    @property
    def members(self) -> tuple[str, ...]:
        """Member suffixes besides the main array (``FIELD.SUFFIX.npy``)."""
        return ("scale",) if self.kind == "int8c" else ()

    def encode(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """values [n, ...] -> {"": main array, suffix: extra array} to store."""
        out = ENCODERS[self.kind][0](x, **self.params)
        return out if isinstance(out, dict) else {"": out}

    def decode(self, stored: dict[str, np.ndarray], last_dim: int) -> np.ndarray:
        """Stored arrays -> values; ``last_dim`` is the decoded size of the last axis (for ``bits``)."""
        if self.kind == "int8c":
            return _int8c_decode(stored[""], stored["scale"], **self.params)
        return ENCODERS[self.kind][1](stored[""], last_dim, **self.params)


def log8(lo_log2: float = -16.0, steps: int = 8, keep_top: float = 1.0) -> Encoding:
    if not 0.0 < keep_top <= 1.0:
        raise ValueError(f"keep_top must be in (0, 1] (got {keep_top})")
    return Encoding("log8", {"lo_log2": float(lo_log2), "steps": int(steps), "keep_top": float(keep_top)})


def _log8_encode(m: np.ndarray, lo_log2: float, steps: int, keep_top: float = 1.0) -> np.ndarray:
    m = np.abs(np.asarray(m, dtype=np.float32))  # [..., F]
    with np.errstate(divide="ignore"):
        level = np.rint((np.log2(m) - lo_log2) * steps) + 1.0  # -inf for m == 0
    code = np.where(m < 2.0**lo_log2, 0, np.clip(level, 1, 255)).astype(np.uint8)
    if keep_top < 1.0:
        k = max(1, int(round(keep_top * m.shape[-1])))
        drop = np.argpartition(-m, k - 1, axis=-1)[..., k:]  # all but the k largest of each row
        np.put_along_axis(code, drop, 0, axis=-1)
    return code


def log8_table(lo_log2: float, steps: int, keep_top: float = 1.0) -> np.ndarray:
    """[256] float32 decoded value of each log8 code (increasing)."""
    return np.concatenate([[0.0], 2.0 ** (lo_log2 + np.arange(255) / steps)]).astype(np.float32)


def code_threshold(table: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Largest code whose value is <= threshold (-1 if none), so ``table[code] > t  <=>  code > result``."""
    return np.searchsorted(table, np.asarray(threshold, dtype=np.float32), side="right") - 1


def codes_above(codes: np.ndarray, cthr: np.ndarray) -> np.ndarray:
    """codes uint8 [..., *cthr.shape] > cthr (int, -1 meaning "everything"), without widening the codes."""
    mask = codes > np.clip(cthr, 0, 255).astype(np.uint8)
    if (cthr < 0).any():
        mask |= cthr < 0
    return mask


def _log8_decode(code: np.ndarray, last_dim: int, lo_log2: float, steps: int, keep_top: float = 1.0) -> np.ndarray:
    return log8_table(lo_log2, steps)[code]


def _int8c_encode(x: np.ndarray, levels: int = 127) -> dict[str, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)  # [n, ...]
    scale = np.abs(x).max(axis=0) if len(x) else np.zeros(x.shape[1:], np.float32)  # [...]
    safe = np.where(scale > 0, scale, 1.0)
    return {"": np.rint(x / safe * levels).astype(np.int8), "scale": scale.astype(np.float32)}


def _int8c_decode(code: np.ndarray, scale: np.ndarray, levels: int = 127) -> np.ndarray:
    return code.astype(np.float32) * (scale / np.float32(levels))


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
    "int8c": (_int8c_encode, None),
    "fp16": (lambda x: _fp16_encode(x), _fp16_decode),
    "bits": (_bits_encode, _bits_decode),
    "raw": (_raw_encode, _raw_decode),
}
