"""Run one resolved case: build devices, layout, policy and requests, serve them, collect one row per step."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim import points
from sim.config.experiment import Case, ExperimentConfig
from sim.config.workload import Uniform
from sim.devices import Devices, build_devices
from sim.engine.activations import build_activations
from sim.engine.executor import Executor, StepTimes
from sim.engine.placement import Placement
from sim.engine.requests import Request, Scheduler, Step
from sim.engine.serve import KVCache, serve
from sim.engine.steplog import StepLog
from sim.engine.summary import summarise, sweep_columns
from sim.engine.timing import PRIORITY
from sim.errors import CapacityError, ConfigError, SimError, located
from sim.layout import BaseLayout, build_layout
from sim.policies.base import Policy, RunContext, driven_by, run_notes
from sim.policies.registry import make_policy
from sim.stats.recorder import NullRecorder, Recorder
from sim.units import format_bytes

PER_REQUEST_TENANTS = ("hash_tables",)  # set-up tenants sized for the batch (sim/policies/kv_offload.py)
NOTE_SEPARATOR = " | "  # between the notes of the summary's one ``notes`` cell
STAGE_COLUMNS = {"io": "io_stall_s", "xfer": "xfer_s", "memmgmt": "memmgmt_s", "compute": "compute_s"}


@dataclass
class CaseResult:
    name: str
    steps: StepLog  # one row per step (prefill chunk or decode step of the batch), streamed to parts
    requests: pd.DataFrame  # one row per request: arrival, first token, finish, lengths
    summary: dict[str, Any]
    spans: Recorder

    @property
    def tokens(self) -> pd.DataFrame:
        """Every step row at once (a long run's results file is written from ``steps`` part by part)."""
        return self.steps.frame()

    @property
    def notes(self) -> list[str]:
        """What the policy said of the run (the summary's ``notes``, one per line)."""
        return [note for note in self.summary.get("notes", "").split(NOTE_SEPARATOR) if note]


class CountingEnvironment(simpy.Environment):
    """A SimPy environment that counts the events it schedules (through the public ``schedule`` hook)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_events = 0

    def schedule(self, event, priority=simpy.core.NORMAL, delay=0) -> None:
        self.n_events += 1
        super().schedule(event, priority, delay)


def simulate_case(
    case: Case,
    progress: Callable[[int], None] | None = None,
    timeline: bool = True,
    cache: dict | None = None,
    spool: Path | None = None,
) -> CaseResult:
    """Simulate one case. ``cache``: a dict shared by the cases of one run (see build_activations). A user error
    raised while simulating (a budget too small, a trace that does not fit) names the experiment file and case.
    ``progress(n)`` is called with the tokens each decode step emits. Step rows go to parquet parts in ``spool``
    (a folder; None: compressed in memory) as the run goes."""
    with _located(case):
        return _simulate(prepare_case(case, timeline, cache), progress, spool)


def does_not_fit(case: Case, err: SimError) -> CaseResult:
    """The result of a case whose set-up or run did not fit its memory: a summary row saying so (status
    ``does_not_fit`` and the one-line error), no steps -- a budget sweep's boundary is a result, not a crash."""
    summary = {"case": case.name, "status": "does_not_fit", "error": str(err), **sweep_columns(case),
               "hardware": case.hardware.name, "model": case.model.name, "policy": case.config.policy.name}  # fmt: skip
    return CaseResult(case.name, StepLog(), pd.DataFrame(), summary, NullRecorder())


def check_case(case: Case, cache: dict | None = None) -> None:
    """Everything a run does before its first simulated step (devices, layout, activations, the policy's set-up
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
    """A case set up and ready to run its first step."""

    case: Case
    env: CountingEnvironment
    recorder: Recorder
    devices: Devices
    ctx: RunContext
    policy: Policy
    requests: list[Request]
    resident: dict[str, dict[str, float]]  # memory -> budgeted tenant -> bytes, after the policy's set-up
    wall0: float
    kv: KVCache
    kv_max_batch: int  # requests of the longest context whose KV cache fits where it is placed


def prepare_case(case: Case, timeline: bool, cache: dict | None) -> Prepared:
    cfg = case.config
    wall0 = time.perf_counter()
    env = CountingEnvironment()
    recorder = Recorder() if timeline and cfg.timeline_tokens > 0 else NullRecorder()
    placement = Placement.of(case.hardware, cfg.processor, cfg.placement.model_dump())
    budgets = {placement.stream: cfg.dram_budget} if cfg.dram_budget is not None else {}
    devices = build_devices(env, case.hardware, budgets)
    rng = np.random.default_rng(cfg.seed)
    activations = _activations(case, rng, cache)
    layout = _layout(case, activations)
    _check_flash_holds(case, layout.total_bytes)
    ctx = RunContext(
        model=case.model,
        hardware=case.hardware,
        devices=devices,
        placement=placement,
        dtype=cfg.dtype,
        kv_dtype=cfg.kv_dtype,
        max_batch=cfg.batch,
        decode_tokens=cfg.max_decode_tokens,
        max_context_tokens=cfg.max_context_tokens,
        layout=layout,
        activations=activations,
        rng=rng,
        statistics=case.statistics,
    )
    policy = make_policy(cfg.policy)
    policy.setup(ctx)
    resident = {name: memory.tenants(budgeted=True) for name, memory in devices.memories.items()}
    kv = KVCache(devices.memories[placement.kv], case.model.kv_bytes_per_token(cfg.kv_dtype), policy.kv_tokens_held)
    fits = _largest_batch(ctx, kv)
    _check_kv_fits(cfg, ctx, kv, fits)
    return Prepared(case, env, recorder, devices, ctx, policy, make_requests(cfg), resident, wall0, kv, fits)


def make_requests(cfg: ExperimentConfig) -> list[Request]:
    """The case's requests: listed ones, or ``requests`` (default: ``batch``) of the configured lengths, arriving
    at t = 0 or as a Poisson process. Lengths and arrivals are drawn from their own stream of the seed, so they
    never move a policy's draws."""
    rng = np.random.default_rng([cfg.seed, 1])
    n = cfg.n_requests

    def draw(length) -> np.ndarray:
        if isinstance(length, Uniform):
            return rng.integers(length.low, length.high + 1, n)
        return np.full(n, length)

    prompt, decode = draw(cfg.context_tokens), draw(cfg.decode_tokens)
    arrival = np.zeros(n)
    if cfg.arrival_rate_per_s is not None:
        arrival = np.cumsum(rng.exponential(1.0 / cfg.arrival_rate_per_s, n))
    for i, r in enumerate(cfg.request_list):
        prompt[i] = r.context_tokens if r.context_tokens is not None else prompt[i]
        decode[i] = r.decode_tokens if r.decode_tokens is not None else decode[i]
        arrival[i] = r.arrival
    return [Request(i, float(arrival[i]), int(prompt[i]), int(decode[i])) for i in range(n)]


def _activations(case: Case, rng: np.random.Generator, cache: dict | None):
    cfg = case.config.activations
    if cfg is None:
        return None
    folder = case.path.parent if case.path else None
    return build_activations(cfg, case.model, rng, folder, str(case.path or "experiment"), cache)


def _layout(case: Case, activations) -> BaseLayout:
    """The experiment's flash layout; co-activation friends come from the run's activations."""
    cfg = case.config
    name, dtype = cfg.layout.name, cfg.layout.dtype or cfg.dtype
    if name != "coactivation":
        return build_layout(name, case.model, dtype)
    if activations is None:
        raise ConfigError(case.path or "experiment", "layout.name", "needs activations to pick friends from", name)
    n_masks = min(cfg.layout.coactivation_tokens, activations.n_tokens)
    masks = np.asarray(activations.masks(0, n_masks), bool)  # [T, L, n]
    packed = np.packbits(masks, axis=-1)  # the friends' key: the masks' content, 8x smaller to hash
    shape = np.array(masks.shape)  # with the packed bits: the masks' exact content
    friends = points.derived(
        "friends", [shape, packed], lambda: build_layout(name, case.model, dtype, masks=masks).friends
    )
    return build_layout(name, case.model, dtype, friends=friends)


def _check_flash_holds(case: Case, model_bytes: float) -> None:
    capacity = case.hardware.flash.capacity
    if model_bytes > capacity:
        reason = f"the model's {format_bytes(model_bytes)} do not fit its {format_bytes(capacity)} flash"
        raise CapacityError(f"hardware {case.hardware.name!r}: {reason}")


def _simulate(prep: Prepared, progress: Callable[[int], None] | None, spool: Path | None) -> CaseResult:
    case, env, devices, recorder, cfg = prep.case, prep.env, prep.devices, prep.recorder, prep.case.config
    executor = Executor(env, devices, recorder, closed_form=cfg.engine_mode == "auto")
    scheduler = Scheduler(prep.requests, cfg.batch, cfg.prefill_chunk_tokens)
    kv = prep.kv
    steps = StepLog(spool)
    zeros = dict.fromkeys(executor.counters(), 0.0)
    recording = {"decode_steps": 0}

    def on_step(step: Step, times: StepTimes, emitted: tuple[int, ...]) -> None:
        if step.phase == "decode":
            recording["decode_steps"] += 1
            if progress:
                progress(sum(emitted))
        recorder.span("step", f"{step.phase} {step.index}", times.start_s, times.end_s)
        recorder.enabled = recorder.enabled and recording["decode_steps"] < cfg.timeline_tokens
        used = {f"{name}_used_bytes": m.occupied_bytes(budgeted=True) for name, m in devices.memories.items()}
        state = used | {"kv_bytes": kv.held_bytes, "flash_busy_s": times.busy_s.get(devices.flash.name, 0.0),
                    "bound_s": times.bound_s}  # fmt: skip
        state["emitted_tokens"] = sum(emitted)
        steps.append(_row(step, times, zeros | times.bytes, state | prep.policy.step_stats()))

    env.process(serve(env, executor, prep.policy, scheduler, kv, on_step))
    env.run()
    steps.flush()
    requests = pd.DataFrame(
        {
            "request": [r.id for r in prep.requests],
            "arrival_s": [r.arrival_s for r in prep.requests],
            "prompt_tokens": [r.prompt_tokens for r in prep.requests],
            "decode_tokens": [r.decode_tokens for r in prep.requests],
            "first_token_s": [r.first_token_s for r in prep.requests],
            "finished_s": [r.finished_s for r in prep.requests],
        }
    )
    wall_s = time.perf_counter() - prep.wall0
    facts = {"events": env.n_events, "closed_form_steps": executor.n_closed_form, "kv_peak_bytes": kv.peak_bytes,
             "kv_max_batch": prep.kv_max_batch, "driven_by": driven_by(prep.policy)}  # fmt: skip
    summary = summarise(case, steps, requests, prep.resident, devices, prep.ctx, facts, wall_s)
    summary["notes"] = NOTE_SEPARATOR.join(run_notes(prep.policy, summary))  # e.g. a window cut to fit its rows
    return CaseResult(case.name, steps, requests, summary, recorder)


def _kv_room(ctx: RunContext, kv: KVCache) -> tuple[float, float]:
    """(bytes the KV cache's memory holds whatever the batch, bytes per request of the longest context): its KV
    cache plus its share of tenants sized for the batch (MagicPIG's hash tables)."""
    held = kv.memory.tenants()
    per_batch = sum(b for t, b in held.items() if t in PER_REQUEST_TENANTS)
    per_request = kv.bytes_per_token * kv.held_tokens(ctx.max_context_tokens) + per_batch / ctx.max_batch
    return sum(held.values()) - per_batch, per_request


def _largest_batch(ctx: RunContext, kv: KVCache) -> int:
    """Requests of the longest context whose KV cache (and per-request tenants) fit in the KV cache's memory."""
    fixed, per_request = _kv_room(ctx, kv)
    return int(max(kv.memory.capacity_bytes - fixed, 0.0) // per_request)


def _check_kv_fits(cfg: ExperimentConfig, ctx: RunContext, kv: KVCache, fits: int) -> None:
    together = min(cfg.batch, cfg.n_requests)
    if fits >= together:
        return
    fixed, per_request = _kv_room(ctx, kv)
    reason = (
        f"{together} request(s) x {ctx.max_context_tokens} tokens need {format_bytes(together * per_request)} for "
        f"their KV cache{' and hash tables' if per_request > kv.bytes_per_token * ctx.max_context_tokens else ''} "
        f"beside the {format_bytes(fixed)} it holds: at most {fits} request(s) fit (lower batch or context_tokens, "
        "or place the KV cache in another memory with placement.kv)"
    )
    raise CapacityError(f"{kv.memory.name}: {reason}")


def _row(step: Step, times: StepTimes, moved: dict[str, float], extra: dict) -> dict[str, Any]:
    stages = {STAGE_COLUMNS[s]: times.stage_s[s] for s in PRIORITY}
    return {
        "step": step.index,
        "phase": step.phase,
        "batch": step.batch,
        "new_tokens": step.n_tokens,
        "token": step.positions[0] if step.phase == "decode" else -1,
        "start_s": times.start_s,
        **stages,
        "idle_s": times.stage_s["idle"],
        "total_s": times.total_s,
        **moved,
        **extra,
    }
