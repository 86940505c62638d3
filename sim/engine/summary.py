"""A case's summary (``summary.json`` / ``summary.csv``) from its step rows and requests.

Per-token figures are over **decode** steps (what the papers' per-token latencies measure); prefill shows up in
time to first token (TTFT) and the prefill totals. For a batch, a decode step's latency is each of its requests'
per-token latency; ``system_tokens_per_s`` counts every request's tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.config.experiment import Case
from sim.devices import Devices
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


def summarise(
    case: Case,
    steps: pd.DataFrame,
    requests: pd.DataFrame,
    resident: dict[str, dict[str, float]],
    devices: Devices,
    ctx: RunContext,
    facts: dict[str, float],
    wall_s: float,
) -> dict[str, Any]:
    decode = steps[steps["phase"] == "decode"]
    prefill = steps[steps["phase"] == "prefill"]
    n_tokens = int(decode["new_tokens"].sum())
    mean_ms = {f"{c.removesuffix('_s').replace('io_stall', 'io')}_ms": MS * float(decode[c].mean()) for c in BREAKDOWN}
    ttft = requests["first_token_s"] - requests["arrival_s"]
    e2e = requests["finished_s"] - requests["arrival_s"]
    flash_busy = float(decode["flash_busy_s"].sum())
    flash_bytes = float(decode["flash_bytes"].sum())
    return {
        "case": case.name,
        "status": "ok",
        "error": "",
        **sweep_columns(case),
        "hardware": case.hardware.name,
        "model": case.model.name,
        "policy": case.config.policy.name,
        "processor": ctx.processor,
        "activations": ctx.activations.describe() if ctx.activations is not None else "none (policy needs no trace)",
        "requests": len(requests),
        "batch": case.config.batch,
        "tokens": n_tokens,
        "decode_steps": len(decode),
        **mean_ms,
        "bound_ms": MS * float(decode["bound_s"].mean()),  # analytic lower bound (sim/engine/executor.py)
        "bound_gap_pct": round(100.0 * float(decode["total_s"].sum() / decode["bound_s"].sum() - 1.0), 6),
        "p50_total_ms": MS * float(decode["total_s"].quantile(0.5)),
        "p99_total_ms": MS * float(decode["total_s"].quantile(0.99)),
        "tokens_per_s": 1.0 / float(decode["total_s"].mean()),
        "system_tokens_per_s": n_tokens / float(decode["total_s"].sum()),
        "ttft_ms": MS * float(ttft.mean()),
        "p50_ttft_ms": MS * float(ttft.quantile(0.5)),
        "p99_ttft_ms": MS * float(ttft.quantile(0.99)),
        "request_latency_ms": MS * float(e2e.mean()),
        "prefill_steps": len(prefill),
        "prefill_ms": MS * float(prefill["total_s"].sum()),
        "makespan_s": float(requests["finished_s"].max()),
        "flash_GB_per_token": flash_bytes / n_tokens / GB,
        "flash_throughput_GBps": flash_bytes / flash_busy / GB if flash_busy > 0 else 0.0,
        **_memories(resident, devices, decode),
        "kv_peak_GB": facts["kv_peak_bytes"] / GB,
        "kv_max_batch": facts["kv_max_batch"],
        "simpy_events": facts["events"],
        "events_per_token": facts["events"] / n_tokens,
        "closed_form_steps": facts["closed_form_steps"] / len(steps),
        "wall_s": wall_s,
        "sim_tokens_per_wall_s": n_tokens / wall_s,
    }


def _memories(resident: dict[str, dict[str, float]], devices: Devices, decode: pd.DataFrame) -> dict[str, Any]:
    """Per memory: what the policy allocated (the budget must admit it: preallocated matrices at their peak), what
    held data on average over decode steps, its tenants and its budget."""
    out: dict[str, Any] = {}
    for name, memory in devices.memories.items():
        tenants = resident[name]
        out[f"{name}_GB"] = sum(tenants.values()) / GB
        out[f"{name}_used_GB"] = float(np.mean(decode[f"{name}_used_bytes"])) / GB
        out[f"{name}_tenants_GB"] = {k: v / GB for k, v in tenants.items()}
        out[f"{name}_budget_GB"] = memory.budget_bytes / GB
    return out
