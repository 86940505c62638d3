"""Run one resolved case: build devices, layout and policy, decode N tokens, collect per-token rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.config.experiment import Case
from sim.devices import Devices, build_devices
from sim.engine.activations import build_activations
from sim.engine.decode import TokenTimes, run_token
from sim.errors import CapacityError, SimError, located
from sim.layout import build_layout
from sim.policies.base import Policy, RunContext
from sim.policies.registry import make_policy
from sim.stats.recorder import NullRecorder, Recorder
from sim.units import format_bytes


@dataclass
class CaseResult:
    name: str
    tokens: pd.DataFrame  # one row per decoded token
    summary: dict[str, Any]
    spans: Recorder


def simulate_case(
    case: Case, progress: Callable[[int], None] | None = None, timeline: bool = True, cache: dict | None = None
) -> CaseResult:
    """Simulate one case. ``cache``: a dict shared by the cases of one run (see build_activations). A user error
    raised while simulating (a budget too small, a trace that does not fit) names the experiment file and case."""
    with _located(case):
        return _simulate(prepare_case(case, timeline, cache), progress)


def check_case(case: Case, cache: dict | None = None) -> None:
    """Everything a run does before its first simulated token (devices, layout, activations, the policy's set-up
    and allocations), so that ``validate`` reports the errors ``run`` would."""
    with _located(case):
        prepare_case(case, False, cache)


@contextmanager
def _located(case: Case):
    try:
        yield
    except SimError as err:
        raise located(err, str(case.path) if case.path else None, case.name) from None


@dataclass
class Prepared:
    """A case set up and ready to decode its first token."""

    case: Case
    env: simpy.Environment
    recorder: Recorder
    devices: Devices
    ctx: RunContext
    policy: Policy
    resident: dict[str, float]
    wall0: float


def prepare_case(case: Case, timeline: bool, cache: dict | None) -> Prepared:
    cfg = case.config
    wall0 = time.perf_counter()
    env = simpy.Environment()
    recorder = Recorder() if timeline and cfg.timeline_tokens > 0 else NullRecorder()
    budget = cfg.dram_budget if cfg.dram_budget is not None else case.hardware.memories["dram"].capacity
    devices = build_devices(env, case.hardware, budget, recorder)
    rng = np.random.default_rng(cfg.seed)
    layout = build_layout(cfg.layout.name, case.model, cfg.dtype)
    _check_flash_holds(case, layout.total_bytes)
    ctx = RunContext(
        model=case.model,
        hardware=case.hardware,
        devices=devices,
        dtype=cfg.dtype,
        kv_dtype=cfg.kv_dtype,
        processor=cfg.processor,
        context_tokens=cfg.context_tokens,
        decode_tokens=cfg.decode_tokens,
        layout=layout,
        activations=_activations(case, rng, cache),
        rng=rng,
    )
    policy = make_policy(cfg.policy)
    policy.setup(ctx)
    resident = devices.memories["dram"].tenants()
    return Prepared(case, env, recorder, devices, ctx, policy, resident, wall0)


def _check_flash_holds(case: Case, model_bytes: float) -> None:
    capacity = case.hardware.flash.capacity
    if model_bytes > capacity:
        reason = f"the model's {format_bytes(model_bytes)} do not fit its {format_bytes(capacity)} flash"
        raise CapacityError(f"hardware {case.hardware.name!r}: {reason}")


def _simulate(prep: Prepared, progress: Callable[[int], None] | None) -> CaseResult:
    case, env, devices, recorder = prep.case, prep.env, prep.devices, prep.recorder
    rows: list[dict[str, float]] = []
    env.process(_decode(env, devices, prep.policy, case.config, recorder, rows, progress))
    env.run()
    n_events = next(env._eid)  # SimPy's event counter: events scheduled so far (private, stable since 3.0)
    tokens = pd.DataFrame(rows)
    wall_s = time.perf_counter() - prep.wall0
    summary = _summarise(case, tokens, prep.resident, devices, n_events, wall_s, prep.ctx)
    return CaseResult(case.name, tokens, summary, recorder)


def _activations(case: Case, rng: np.random.Generator, cache: dict | None):
    cfg = case.config.activations
    if cfg is None:
        return None
    folder = case.path.parent if case.path else None
    return build_activations(cfg, case.model, rng, folder, str(case.path or "experiment"), cache)


def _decode(env, devices: Devices, policy, cfg, recorder: Recorder, rows: list, progress):
    for t in range(cfg.decode_tokens):
        recorder.enabled = recorder.enabled and t < cfg.timeline_tokens
        plans = policy.plan_token(t)
        before = _byte_counters(devices)
        times: TokenTimes = yield env.process(run_token(env, devices, plans, cfg.engine_mode == "auto"))
        recorder.span("token", f"token {t}", times.start_s, times.end_s)
        moved = {k: v - before[k] for k, v in _byte_counters(devices).items()}
        used = {"dram_used_bytes": devices.memories["dram"].occupied_bytes}  # after the token's plan and run
        rows.append(_row(t, times, moved, used | policy.token_stats()))
        if progress:
            progress(1)


def _byte_counters(devices: Devices) -> dict[str, float]:
    """Cumulative bytes per device: flash reads, each link direction, each memory's copies."""
    counters = {"flash_bytes": devices.flash.bytes_read}
    for link in devices.links.values():
        counters |= {f"{link.name}_{a}_to_{b}_bytes": n for (a, b), n in link.bytes_moved.items()}
    counters |= {f"{m.name}_copy_bytes": m.bytes_copied for m in devices.memories.values()}
    return counters


def _row(t: int, times: TokenTimes, moved: dict[str, float], extra: dict) -> dict[str, float]:
    return {
        "token": t,
        "start_s": times.start_s,
        "io_stall_s": times.io_stall_s,
        "xfer_s": times.xfer_s,
        "memmgmt_s": times.memmgmt_s,
        "compute_s": times.compute_s,
        "total_s": times.total_s,
        **moved,
        **extra,
    }


def _summarise(
    case: Case, tokens: pd.DataFrame, resident: dict, devices: Devices, n_events: int, wall_s: float, ctx: RunContext
) -> dict[str, Any]:
    n = len(tokens)
    mean_ms = {
        f"{c.removesuffix('_s')}_ms": 1e3 * float(tokens[c].mean())
        for c in ("io_stall_s", "xfer_s", "memmgmt_s", "compute_s", "total_s")
    }
    flash = devices.flash
    return {
        "case": case.name,
        **{f"sweep.{k}": v for k, v in (case.sweep or {}).items()},
        "hardware": case.hardware.name,
        "model": case.model.name,
        "policy": case.config.policy.name,
        "activations": ctx.activations.describe() if ctx.activations is not None else "none (policy needs no trace)",
        "tokens": n,
        "io_ms": mean_ms["io_stall_ms"],
        "xfer_ms": mean_ms["xfer_ms"],
        "memmgmt_ms": mean_ms["memmgmt_ms"],
        "compute_ms": mean_ms["compute_ms"],
        "total_ms": mean_ms["total_ms"],
        "p50_total_ms": 1e3 * float(tokens["total_s"].quantile(0.5)),
        "p99_total_ms": 1e3 * float(tokens["total_s"].quantile(0.99)),
        "tokens_per_s": 1.0 / float(tokens["total_s"].mean()),
        "flash_GB_per_token": float(tokens["flash_bytes"].mean()) / 1e9,
        "flash_throughput_GBps": flash.bytes_read / flash.server.busy_time_s / 1e9 if flash.bytes_read else 0.0,
        "dram_GB": sum(resident.values()) / 1e9,
        "dram_used_GB": float(tokens["dram_used_bytes"].mean()) / 1e9,  # mean over tokens of the bytes holding data
        "dram_tenants_GB": {k: v / 1e9 for k, v in resident.items()},
        "dram_budget_GB": devices.memories["dram"].capacity_bytes / 1e9,
        "simpy_events": n_events,
        "events_per_token": n_events / n,
        "wall_s": wall_s,
        "sim_tokens_per_wall_s": n / wall_s,
    }
