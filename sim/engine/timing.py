"""Where a step's time went: its span split into stages, from the jobs' [issue, end] intervals.

A job is *active* from the instant it is issued (its dependencies are done) to the instant it ends: its device
latency, any queueing behind other jobs and its service all count. At every instant of the step the time is
charged to the most important stage with an active job, in the order of :data:`PRIORITY`:

    compute > memmgmt > xfer > io

so the breakdown always sums to the step's span, and reads that overlap compute cost nothing (they are hidden),
while a read the step has to wait for is an I/O stall. For a pipeline with one compute chain and a loader (LLM in
a Flash's plans) this is exactly the compute process's view: computing, copying, transferring, or waiting for a
read. Time when no job is active (possible only in a hand-built graph whose jobs wait for nothing but start late,
which the engine never makes) is ``idle``.
"""

from __future__ import annotations

from collections.abc import Sequence

PRIORITY = ("compute", "memmgmt", "xfer", "io")
STAGES = (*PRIORITY, "idle")


def union_s(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def breakdown(
    stages: Sequence[str], issue_s: Sequence[float], end_s: Sequence[float], start_s: float, stop_s: float
) -> dict[str, float]:
    """Seconds per stage of :data:`STAGES` over [start_s, stop_s], summing to ``stop_s - start_s``."""
    by_stage: dict[str, list[tuple[float, float]]] = {}
    for stage, a, b in zip(stages, issue_s, end_s, strict=True):
        if b > a:
            by_stage.setdefault(stage, []).append((a, b))
    out = dict.fromkeys(STAGES, 0.0)
    covered: list[tuple[float, float]] = []  # union of the more important stages' intervals, sorted, disjoint
    covered_s = 0.0
    for stage in PRIORITY:
        mine = by_stage.get(stage)
        if not mine:
            continue
        covered = _merge(covered + mine)
        length_s = _length(covered)
        out[stage], covered_s = length_s - covered_s, length_s
    out["idle"] = max(0.0, (stop_s - start_s) - covered_s)
    return out


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint union of intervals (touching ones joined)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)
