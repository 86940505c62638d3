"""The files of a run's results folder (written into the partial folder of :class:`sim.outfolder.ResultsFolder`).

Files:
- ``config.resolved.yaml`` — every case's fully resolved config (defaults filled in, units as SI numbers);
- ``tokens.parquet`` — one row per (case, step): its phase (prefill chunk or decode step of the batch), requests
  and tokens, io_stall_s, xfer_s, memmgmt_s, compute_s, total_s, bytes per device, memory in use, policy statistics;
- ``requests.parquet`` — one row per (case, request): arrival, prompt and output lengths, first token, finish;
- ``summary.json`` / ``summary.csv`` — per case: ``status`` (``ok``, or ``does_not_fit`` with the one-line
  ``error``: among several cases one that does not fit its memory is a row, not a crash), the swept values typed
  (``sweep.<path>``: bytes, seconds), mean latency breakdown (ms), p50/p99, tokens/s, flash bytes and throughput,
  DRAM tenants, SimPy events per token, which activation trace drove it;
- ``timeline.json`` — Chrome / Perfetto trace of device activity for the first ``timeline_tokens`` tokens;
- ``comparison.csv`` — when cases state published numbers: case,metric,role,published,simulated,error_pct;
- ``about.md`` — what was run: description, the paper figure it reproduces, what was calibrated, and per case
  the hardware, model, policy and which activation trace drove it;
- ``*.png`` — plots made by the experiment's plot scripts from these files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml

from sim.config.experiment import Case
from sim.engine.simulate import CaseResult
from sim.engine.steplog import write_parquet

SPOOL = ".steps"  # inside the results folder being written: step rows streamed by the run, merged and removed


def write_results(tmp: Path, experiment_path: Path, cases: Sequence[Case], results: Sequence[CaseResult]) -> None:
    """Write every results file into the (temporary) folder ``tmp``."""
    resolved = {
        "experiment_file": str(experiment_path),
        "cases": {c.name: c.config.model_dump(mode="json") for c in cases},
        "published": {c.name: c.published for c in cases if c.published},
    }
    (tmp / "config.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    ran = [r for r in results if r.summary["status"] == "ok"]  # cases that do not fit have a summary row only
    write_parquet(tmp / "tokens.parquet", [(r.name, r.steps) for r in ran])  # part by part, not all at once
    shutil.rmtree(tmp / SPOOL, ignore_errors=True)
    requests = pd.concat([r.requests.assign(case=r.name) for r in ran], ignore_index=True)
    requests.to_parquet(tmp / "requests.parquet", index=False)
    summaries = [r.summary for r in results]
    (tmp / "summary.json").write_text(json.dumps(summaries, indent=2))
    flat = [{k: v for k, v in s.items() if not isinstance(v, dict)} for s in summaries]
    pd.DataFrame(flat).to_csv(tmp / "summary.csv", index=False)
    (tmp / "timeline.json").write_text(json.dumps(chrome_trace(results)))
    (tmp / "about.md").write_text(about(experiment_path, cases, results))
    comparison = comparison_table(cases, results)
    if len(comparison):
        comparison.to_csv(tmp / "comparison.csv", index=False)


def about(experiment_path: Path, cases: Sequence[Case], results: Sequence[CaseResult]) -> str:
    """A short human-readable account of the run (no numbers: those are in the tables)."""
    first = cases[0].config
    lines = [f"# {first.name}", "", f"Experiment file: `{experiment_path}`", ""]
    lines += [first.description, ""] if first.description else []
    lines += [f"Reproduces: {first.reproduces}", ""] if first.reproduces else []
    lines += [f"Calibration: {first.calibration}", ""] if first.calibration else []
    notes = list(dict.fromkeys(note for case in cases for note in case.notes))
    notes += [f"case {r.name}: {note}" for r in results for note in r.notes]
    lines += [*(f"Note: {note}" for note in notes), ""] if notes else []
    stats = list(dict.fromkeys(case.statistics.describe() for case in cases if case.statistics is not None))
    lines += [*(f"Activation statistics: {s}" for s in stats), ""] if stats else []
    caveats = list(dict.fromkeys((case.hardware.name, c) for case in cases for c in case.hardware.caveats))
    lines += [*(f"Caveat ({name}): {caveat}" for name, caveat in caveats), ""] if caveats else []
    lines += [
        "| case | hardware | model | dtype | processor | policy | activations (which trace drove it) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, result in zip(cases, results, strict=True):
        c = case.config
        lines.append(
            f"| {case.name} | {case.hardware.name} | {case.model.name} | {c.dtype} | {c.processor} | "
            f"{c.policy.name} | {result.summary.get('activations', 'did not fit: ' + result.summary['error'])} |"
        )
    return "\n".join(lines) + "\n"


def comparison_table(cases: Sequence[Case], results: Sequence[CaseResult]) -> pd.DataFrame:
    """case,metric,role,published,simulated,error_pct for every published number of every case; role says whether
    a parameter was tuned to that number (calibrated) or the simulator produced it unaided (predicted)."""
    rows = []
    for case, result in zip(cases, results, strict=True):
        for metric, published in case.published.items():
            simulated = float(result.summary.get(metric, float("nan")))  # nan: the case did not fit
            error = 100.0 * (simulated - published) / published if published else float("nan")
            rows.append(
                {
                    "case": case.name,
                    "metric": metric,
                    "role": "calibrated" if metric in case.calibrated else "predicted",
                    "published": published,
                    "simulated": round(simulated, 4),
                    "error_pct": round(error, 2),
                }
            )
    return pd.DataFrame(rows, columns=["case", "metric", "role", "published", "simulated", "error_pct"])


def chrome_trace(results: Sequence[CaseResult]) -> dict:
    """Chrome trace-event JSON: one process per case, one thread per device track, times in us."""
    events = []
    for pid, result in enumerate(r for r in results if r.summary["status"] == "ok"):
        spans = result.spans
        tracks = sorted(set(spans.track))
        tid = {t: i for i, t in enumerate(tracks)}
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": result.name}})
        events += [
            {"ph": "M", "pid": pid, "tid": i, "name": "thread_name", "args": {"name": t}} for t, i in tid.items()
        ]
        for track, name, t0, t1, nbytes in zip(
            spans.track, spans.name, spans.start_s, spans.end_s, spans.nbytes, strict=True
        ):
            events.append(
                {
                    "ph": "X",
                    "pid": pid,
                    "tid": tid[track],
                    "name": name,
                    "ts": t0 * 1e6,
                    "dur": (t1 - t0) * 1e6,
                    "args": {"bytes": nbytes},
                }
            )
    return {"traceEvents": events, "displayTimeUnit": "ms"}
