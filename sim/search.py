"""Successive halving over an experiment's cases: the ``search:`` block of an experiment file.

```yaml
search:
  method: halving          # successive halving (Jamieson & Talwalkar 2016; Li et al.'s Hyperband's inner loop)
  objective: tokens_per_s  # a numeric column of summary.csv
  goal: max                # or min (e.g. objective: total_ms)
  min_decode_tokens: 8     # the first rung simulates every case this many tokens
  eta: 3                   # each rung keeps the best 1/eta of the cases and simulates eta x more tokens
  per: dram_budget         # optional: halve separately within each value of this swept path (best per budget)
```

Every case (after ``sweep`` and ``zip``) runs the first rung; the best ``ceil(n / eta)`` of each group (cases that
do not fit are out) run the next rung with ``eta`` times the tokens, up to the experiment's ``decode_tokens``, which
the last rung always runs. A case's row in the results is its last rung (``search_rung``, ``search_decode_tokens``,
``search_survived``: it ran the last rung). What this buys is the simulated tokens it skips, reported as
``search_tokens`` against the grid's (a case's early tokens rank it when its statistics settle within a few dozen
tokens, as window and predictor statistics do; a policy whose speed changes late -- a cache warming over hundreds
of tokens -- needs a larger ``min_decode_tokens``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from sim.config.experiment import Case
from sim.config.search import SearchConfig
from sim.engine.simulate import CaseResult
from sim.errors import ConfigError


def rungs(search: SearchConfig, full_tokens: int) -> list[int]:
    """Decode tokens of each rung: min, min x eta, ... while below the full run, then the full run."""
    out, tokens = [], search.min_decode_tokens
    while tokens < full_tokens:
        out.append(tokens)
        tokens *= search.eta
    return [*out, full_tokens]


def halving(
    cases: Sequence[Case], search: SearchConfig, simulate: Callable[[list[Case]], list[CaseResult]], source: str
) -> list[CaseResult]:
    """Each case's result at the last rung it ran (see the module docstring); ``simulate`` runs a list of cases."""
    full = _full_tokens(cases, source)
    groups = _groups(cases, search, source)
    alive = list(range(len(cases)))
    last: dict[int, CaseResult] = {}
    steps = rungs(search, full)
    spent = 0
    for rung, tokens in enumerate(steps):
        batch = [_with_tokens(cases[i], tokens) for i in alive]
        for i, result in zip(alive, simulate(batch), strict=True):
            result.summary.update(search_rung=rung, search_decode_tokens=tokens, search_survived=rung == len(steps) - 1)
            last[i] = result
        spent += tokens * len(alive)
        if rung == len(steps) - 1:
            break
        alive = _best(alive, last, groups, search, source)
    for result in last.values():
        result.summary.update(search_tokens=spent, grid_tokens=full * len(cases))
    return [last[i] for i in range(len(cases))]


def _full_tokens(cases: Sequence[Case], source: str) -> int:
    lengths = {c.config.decode_tokens for c in cases}
    if len(lengths) != 1 or not isinstance(next(iter(lengths)), int) or any(c.config.request_list for c in cases):
        raise ConfigError(source, "search", "needs one fixed decode_tokens for every case (the last rung's)", lengths)
    return int(next(iter(lengths)))


def _groups(cases: Sequence[Case], search: SearchConfig, source: str) -> list[object]:
    if search.per is None:
        return [None] * len(cases)
    if any(search.per not in (c.sweep or {}) for c in cases):
        raise ConfigError(source, "search.per", "must be a swept or zipped path", search.per)
    return [repr(c.sweep[search.per]) for c in cases]


def _with_tokens(case: Case, tokens: int) -> Case:
    return dataclasses.replace(case, config=case.config.model_copy(update={"decode_tokens": tokens}))


def _best(alive: list[int], last: dict[int, CaseResult], groups: list, search: SearchConfig, source: str) -> list[int]:
    """The best ceil(n / eta) cases of each group that fit, in case order."""
    kept = []
    for group in dict.fromkeys(groups[i] for i in alive):
        members = [i for i in alive if groups[i] == group and last[i].summary["status"] == "ok"]
        scored = sorted(members, key=lambda i: _score(last[i], search, source), reverse=search.goal == "max")
        kept += scored[: math.ceil(len([i for i in alive if groups[i] == group]) / search.eta)]
    return sorted(kept)


def _score(result: CaseResult, search: SearchConfig, source: str) -> float:
    value = result.summary.get(search.objective)
    if not isinstance(value, int | float) or isinstance(value, bool):
        numeric = sorted(k for k, v in result.summary.items() if isinstance(v, int | float) and not isinstance(v, bool))
        reason = f"not a numeric summary column; e.g. {', '.join(numeric[:8])}"
        raise ConfigError(source, "search.objective", reason, search.objective)
    return float(value)
