"""What drives a simulation: an :class:`ActivationSource` says which FFN neurons each token uses.

Three implementations share the protocol: :class:`TraceSource` (a real trace + a sparsity rule),
:class:`sim.traces.projection.ProjectedSource` (a real trace mapped onto a bigger model's shape) and
:class:`sim.traces.synthetic.SyntheticSource` (a generator whose statistics were fitted on a real trace).
Every result should record ``source.describe()``: it names the trace file (and its hash) that drove it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from sim.errors import TraceError
from sim.traces.encoding import code_threshold, codes_above, log8_table
from sim.traces.format import TraceReader
from sim.traces.report import fit_rule
from sim.traces.sparsity import SparsityRule


@runtime_checkable
class ActivationSource(Protocol):
    """Tokens 0..n_tokens-1 of activity for a model with ``n_layers`` layers of ``d_ff`` neurons."""

    n_layers: int
    d_ff: int
    n_tokens: int

    def masks(self, start: int, stop: int) -> np.ndarray:
        """Active neurons of tokens [start, stop): bool [stop - start, n_layers, d_ff]."""
        ...

    def hidden(self, start: int, stop: int) -> np.ndarray | None:
        """MLP inputs (predictor features) [stop - start, n_layers, d_model], or None if the source has none."""
        ...

    def describe(self) -> str:
        """One line naming what drove this source (trace file, hash, rule, projection, fit)."""
        ...

    def active_counts(self, start: int, stop: int) -> np.ndarray:
        """[L, n] int64: in how many tokens of [start, stop) each neuron is active, ``masks(start, stop).sum(0)``."""
        ...

    def contexts(self, start: int, stop: int) -> np.ndarray:
        """[stop - start] int64 context (prompt) id per token: consecutive tokens of one context are related."""
        ...


class SourceBase:
    """What a source gets from its masks unless it knows better: counts summed from the masks, one context."""

    def active_counts(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.masks(start, stop), bool).sum(axis=0, dtype=np.int64)

    def contexts(self, start: int, stop: int) -> np.ndarray:
        return np.zeros(stop - start, dtype=np.int64)

    def fingerprint(self) -> str | None:
        """A string that changes whenever the masks could (the trace's bytes, the rule, any draws), for caching what
        is derived from them on disk; None: not known (nothing derived from it is cached)."""
        return None


def digest_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def check_range(source: ActivationSource, start: int, stop: int) -> None:
    if not 0 <= start <= stop <= source.n_tokens:
        raise ValueError(f"token range [{start}, {stop}) outside [0, {source.n_tokens}) of {source.describe()}")


class TraceSource(SourceBase):
    """A real trace made into masks by a sparsity rule (thresholds calibrated on the trace itself)."""

    def __init__(self, trace: str | Path | TraceReader, rule: SparsityRule | str = "threshold:0.9",
                 calib_tokens: int = 2048, model: object | None = None):  # fmt: skip
        self.reader = trace if isinstance(trace, TraceReader) else TraceReader(trace)
        if model is not None:
            self.reader.validate_against(model)
        self.rule = SparsityRule.parse(rule) if isinstance(rule, str) else rule
        self.fitted = fit_rule(self.reader, self.rule, calib_tokens)
        m = self.reader.model
        self.n_layers, self.d_ff, self.d_model = int(m["n_layers"]), int(m["d_ff"]), int(m["d_model"])
        self.n_tokens = self.reader.n_tokens
        self._sha = ""
        self._code_thr = self._code_thresholds()

    def _code_thresholds(self) -> np.ndarray | None:
        """Threshold rules on log8 fields compare stored codes (same masks, no decoding): [L] int codes."""
        enc = self.reader.encoding(self.rule.field)
        if self.rule.kind != "threshold" or enc.kind != "log8":
            return None
        return code_threshold(log8_table(**enc.params), self.fitted.thresholds)

    def masks(self, start: int, stop: int) -> np.ndarray:
        check_range(self, start, stop)
        if self._code_thr is not None:
            codes = self.reader.read(self.rule.field, start, stop, decoded=False)  # uint8 [T, L, F]
            return codes_above(codes, self._code_thr[:, None])
        return self.fitted.mask(self.reader.read(self.rule.field, start, stop))  # [T, L, F]

    def values(self, start: int, stop: int) -> np.ndarray:
        """|ffn_act| [T, L, F] as stored (needed by projections)."""
        check_range(self, start, stop)
        if not self.reader.has("ffn_act"):
            raise TraceError(
                f"trace {self.reader.path}: has no ffn_act field (fields: {', '.join(self.reader.fields)})"
            )
        return self.reader.read("ffn_act", start, stop)

    def hidden(self, start: int, stop: int) -> np.ndarray | None:
        check_range(self, start, stop)
        return self.reader.read("mlp_in", start, stop) if self.reader.has("mlp_in") else None

    def tokens(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Token metadata of [start, stop): token_id, position, task_id, context_id."""
        return {f: self.reader.read(f, start, stop) for f in ("token_id", "position", "task_id", "context_id")}

    def contexts(self, start: int, stop: int) -> np.ndarray:
        return self.reader.read("context_id", start, stop).astype(np.int64)

    @property
    def sha256(self) -> str:
        if not self._sha:
            with open(self.reader.path, "rb") as f:
                self._sha = hashlib.file_digest(f, "sha256").hexdigest()
        return self._sha

    def describe_file(self) -> str:
        name = self.reader.model.get("name", "?")
        return f"trace {self.reader.path} (sha256 {self.sha256[:12]}, {name}, {self.n_tokens} tokens)"

    def describe(self) -> str:
        return f"{self.describe_file()}, rule {self.rule.describe()}"

    def fingerprint(self) -> str:
        thresholds = self.fitted.thresholds if self.fitted.thresholds is not None else np.zeros(0)
        return f"trace:{self.sha256}:{self.rule.describe()}:{digest_arrays(np.asarray(thresholds, np.float64))}"


class Offset(SourceBase):
    """A source whose token 0 is another source's token ``offset`` (e.g. to skip a predictor's training tokens)."""

    def __init__(self, base: ActivationSource, offset: int):
        if offset >= base.n_tokens:
            raise TraceError(f"offset_tokens {offset} >= the {base.n_tokens} tokens of {base.describe()}")
        self.base, self.offset = base, offset
        self.n_layers, self.d_ff, self.n_tokens = base.n_layers, base.d_ff, base.n_tokens - offset

    def masks(self, start: int, stop: int) -> np.ndarray:
        return self.base.masks(start + self.offset, stop + self.offset)

    def active_counts(self, start: int, stop: int) -> np.ndarray:
        return self.base.active_counts(start + self.offset, stop + self.offset)

    def contexts(self, start: int, stop: int) -> np.ndarray:
        return self.base.contexts(start + self.offset, stop + self.offset)

    def hidden(self, start: int, stop: int) -> np.ndarray | None:
        return self.base.hidden(start + self.offset, stop + self.offset)

    def describe(self) -> str:
        return f"{self.base.describe()}, from token {self.offset}"

    def fingerprint(self) -> str | None:
        base = self.base.fingerprint()
        return None if base is None else f"{base}|from {self.offset}"


LOOPED_TOKENS = 2**40  # a looped source never runs out


class Looped(SourceBase):
    """A source that starts again at its first token after its last: token t is ``base`` token t mod n.

    For runs longer than a trace. The repetition is stated in :meth:`describe` (so in every result): a window
    or cache sees the same tokens again after n, which a real long generation would not."""

    def __init__(self, base: ActivationSource):
        self.base, self.period = base, int(base.n_tokens)
        self.n_layers, self.d_ff, self.n_tokens = base.n_layers, base.d_ff, LOOPED_TOKENS

    def _pieces(self, start: int, stop: int) -> list[tuple[int, int]]:
        """[start, stop) as base ranges, in order."""
        pieces, t = [], start
        while t < stop:
            lo = t % self.period
            hi = min(self.period, lo + (stop - t))
            pieces.append((lo, hi))
            t += hi - lo
        return pieces

    def masks(self, start: int, stop: int) -> np.ndarray:
        return np.concatenate([self.base.masks(lo, hi) for lo, hi in self._pieces(start, stop)])

    def active_counts(self, start: int, stop: int) -> np.ndarray:
        return sum(self.base.active_counts(lo, hi) for lo, hi in self._pieces(start, stop))

    def hidden(self, start: int, stop: int) -> np.ndarray | None:
        parts = [self.base.hidden(lo, hi) for lo, hi in self._pieces(start, stop)]
        return None if parts[0] is None else np.concatenate(parts)

    def describe(self) -> str:
        return f"{self.base.describe()}, looped every {self.period} tokens"

    def fingerprint(self) -> str | None:
        base = self.base.fingerprint()
        return None if base is None else f"{base}|looped"
