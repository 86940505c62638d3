"""A case's summary (``summary.json`` / ``summary.csv``) from its step rows and requests.

Per-token figures are over **decode** steps (what the papers' per-token latencies measure); prefill shows up in
time to first token (TTFT) and the prefill totals. For a batch, a decode step's latency is each of its requests'
per-token latency; ``system_tokens_per_s`` counts every request's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sim.config.experiment import Case
from sim.devices import Devices
from sim.engine.steplog import StepLog
from sim.policies.base import RunContext

MS = 1e3
GB = 1e9
BREAKDOWN = ("io_stall_s", "xfer_s", "memmgmt_s", "compute_s", "total_s")


def sweep_columns(case: Case) -> dict[str, Any]:
    """``sweep.<path>`` columns of a case from a sweep, typed as the resolved config holds them (a budget in bytes,
    a latency in seconds), not as the YAML spelt them; a value the config does not hold as a scalar stays raw."""
    out = {}
    for dotted, raw in (case.sweep or {}).items():
        node: Any = case.config.model_dump()
        parts = dotted.split(".")
        if parts[0] == "hardware_overrides":  # overrides are merged into the profile: read the parsed profile
            node, parts = case.hardware.model_dump(), parts[1:]
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        out[f"sweep.{dotted}"] = node if isinstance(node, int | float | str | bool) else raw
    return out


@dataclass
class Tally:
    """What the summary needs of a case's steps, gathered part by part: sums over decode steps, every decode
    step's latency (for percentiles: 8 bytes a step), prefill counts."""

    decode_sums: pd.Series
    decode_total_s: pd.Series
    n_steps: int
    n_prefill: int
    prefill_s: float

    @property
    def n_decode(self) -> int:
        return len(self.decode_total_s)

    def mean(self, column: str) -> float:
        return float(self.decode_sums[column]) / self.n_decode


def tally(steps: StepLog, memories: Sequence[str]) -> Tally:
    used = [f"{m}_used_bytes" for m in memories]
    summed = ["new_tokens", "batch", "emitted_tokens", *BREAKDOWN, "bound_s", "flash_busy_s", "flash_bytes", *used]
    sums, totals, n_prefill, prefill_s = pd.Series(0.0, index=summed), [], 0, 0.0
    for part in steps.frames(["phase", *summed]):
        decode = part[part["phase"] == "decode"]
        sums = sums + decode[summed].sum()
        totals.append(decode["total_s"])
        prefill = part.loc[part["phase"] == "prefill", "total_s"]
        n_prefill, prefill_s = n_prefill + len(prefill), prefill_s + float(prefill.sum())
    total_s = pd.concat(totals, ignore_index=True) if totals else pd.Series(dtype=float)
    return Tally(sums, total_s, len(steps), n_prefill, prefill_s)


def summarise(
    case: Case,
    steps: StepLog,
    requests: pd.DataFrame,
    resident: dict[str, dict[str, float]],
    devices: Devices,
    ctx: RunContext,
    facts: dict[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    t = tally(steps, list(devices.memories))
    n_tokens = int(t.decode_sums["emitted_tokens"])  # = decode steps x batch unless the policy speculates
    per_step = float(t.decode_sums["emitted_tokens"] / t.decode_sums["batch"])  # tokens a request gets a step
    mean_ms = {f"{c.removesuffix('_s').replace('io_stall', 'io')}_ms": MS * t.mean(c) for c in BREAKDOWN}
    ttft = requests["first_token_s"] - requests["arrival_s"]
    e2e = requests["finished_s"] - requests["arrival_s"]
    flash_busy = float(t.decode_sums["flash_busy_s"])
    flash_bytes = float(t.decode_sums["flash_bytes"])
    total_s = float(t.decode_sums["total_s"])
    return {
        "case": case.name,
        "status": "ok",
        "error": "",
        **sweep_columns(case),
        "hardware": case.hardware.name,
        "model": case.model.name,
        "policy": case.config.policy.name,
        "processor": ctx.processor,
        "activations": _driven_by(ctx, facts),
        "requests": len(requests),
        "batch": case.config.batch,
        "tokens": n_tokens,
        "decode_steps": t.n_decode,
        **mean_ms,
        "bound_ms": MS * t.mean("bound_s"),  # analytic lower bound (sim/engine/executor.py)
        "bound_gap_pct": round(100.0 * (total_s / float(t.decode_sums["bound_s"]) - 1.0), 6),
        "p50_total_ms": MS * float(t.decode_total_s.quantile(0.5)),
        "p99_total_ms": MS * float(t.decode_total_s.quantile(0.99)),
        "tokens_per_step": per_step,
        "tokens_per_s": per_step / t.mean("total_s"),
        "system_tokens_per_s": n_tokens / total_s,
        "ttft_ms": MS * float(ttft.mean()),
        "p50_ttft_ms": MS * float(ttft.quantile(0.5)),
        "p99_ttft_ms": MS * float(ttft.quantile(0.99)),
        "request_latency_ms": MS * float(e2e.mean()),
        "prefill_steps": t.n_prefill,
        "prefill_ms": MS * t.prefill_s,
        "makespan_s": float(requests["finished_s"].max()),
        "flash_GB_per_token": flash_bytes / n_tokens / GB,
        "flash_throughput_GBps": flash_bytes / flash_busy / GB if flash_busy > 0 else 0.0,
        **_memories(resident, devices, t),
        "kv_peak_GB": facts["kv_peak_bytes"] / GB,
        "kv_max_batch": facts["kv_max_batch"],
        "simpy_events": facts["events"],
        "events_per_token": facts["events"] / n_tokens,
        "closed_form_steps": facts["closed_form_steps"] / t.n_steps,
        "wall_s": wall_s,
        "sim_tokens_per_wall_s": n_tokens / wall_s,
    }


def _driven_by(ctx: RunContext, facts: dict[str, Any]) -> str:
    if ctx.activations is not None:
        return ctx.activations.describe()
    return facts.get("driven_by") or "none (policy needs no trace)"


def _memories(resident: dict[str, dict[str, float]], devices: Devices, t: Tally) -> dict[str, Any]:
    """Per memory: what the policy allocated (the budget must admit it: preallocated matrices at their peak), what
    held data on average over decode steps, its tenants and its budget."""
    out: dict[str, Any] = {}
    for name, memory in devices.memories.items():
        tenants = resident[name]
        out[f"{name}_GB"] = sum(tenants.values()) / GB
        out[f"{name}_used_GB"] = t.mean(f"{name}_used_bytes") / GB
        out[f"{name}_tenants_GB"] = {k: v / GB for k, v in tenants.items()}
        out[f"{name}_budget_GB"] = memory.budget_bytes / GB
    return out
