"""Token-by-token decode as two SimPy processes per token: a loader and a compute process.

Order of events within a token (same-time ties resolve in SimPy's FIFO order of scheduling):
- compute *reaches* layer l (``reached[l]`` fires) after finishing layer l-1;
- the loader walks the plans in layer order; for each plan with a preload it waits for
  ``reached[plan.issue_at]`` (immediately if ``issue_at < 0``), issues the read, waits for it, and fires
  ``loaded[l]``. The loader keeps one read batch in flight (a batch is internally parallel: queue depth).
  If the plan's processor computes out of another memory than flash reads into (a GPU's VRAM), the same
  bytes also cross the link between them, streamed in chunks alongside the read: fluidly, the link job
  starts with the read and ``loaded[l]`` fires when both are done (time = max(read, transfer));
- compute, per layer: wait ``loaded`` -> on-demand read -> link transfers -> DRAM copy -> processor ops.
Tokens are a barrier: token t+1 starts when both processes of token t are done, because its inputs
depend on token t's output.

Before its first event a token prices every layer's preload in one vectorised pass (:meth:`Flash.price`: a
read's service time is a pure function of its extents, so this moves no time and adds no event); each read
event then only schedules the latency and the fair-share job.

Serial tokens (no plan issues its preload before its own layer starts, and none waits for a later layer's read)
run as ONE process: the compute process issues each preload itself when it reaches the layer. That is the same
instant the loader would issue it, with the flash as idle as the loader would find it (the previous layer's read
has completed), so every time is identical; it only saves the reached/loaded hand-over (two events and two process
switches per layer).

Atomic path (``engine_mode: auto``, the default; ``events`` turns it off). A serial token that starts with nothing
else pending in the environment (``env.peek() == inf``: no other process, device job or timeout exists, so nothing
can act until the token's own jobs end) is computed in closed form by :func:`sim.engine.atomic.run_alone` and
advances time with ONE timeout to its end. Why it is exact: each job of a serial token then runs alone on an idle
server, one after the other, so the event path's fair-share arithmetic degenerates to fixed floats (a read ends at
``(start + latency) + transfer_s``, a copy at ``start + work``, a kernel batch at ``start + (end - start)``, a
staged preload at the max of its read and its transfer); the devices' ``*_alone`` methods compute exactly these
and book the same counters, server state and spans, in the order the event path records them, and TokenTimes
accumulates the same differences in the same order. Any other token (overlapped plans, a concurrent process, a
token starting while some device still has work) runs as events. tests/test_engine_atomic.py compares both paths
bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import simpy

from sim.devices import Devices
from sim.engine.atomic import run_alone, timeout_at
from sim.engine.plan import LayerPlan


@dataclass(slots=True)
class TokenTimes:
    """Seconds on the critical path (compute process) of one token, by kind."""

    io_stall_s: float = 0.0
    xfer_s: float = 0.0
    memmgmt_s: float = 0.0
    compute_s: float = 0.0
    start_s: float = 0.0
    end_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.end_s - self.start_s


def _price_preloads(devices: Devices, plans: Sequence[LayerPlan]) -> dict[int, tuple[float, int, float]]:
    """Layer -> (transfer seconds, requests, bytes) of its preload, priced for all layers in one pass per merge
    mode (:meth:`Flash.price`); the read events then only schedule (same times as pricing each read alone)."""
    priced: dict[int, tuple[float, int, float]] = {}
    for merge in (True, False):
        group = [p for p in plans if p.preload.shape[0] and p.coalesce == merge]
        if group:
            layers = [p.layer for p in group]
            priced.update(zip(layers, devices.flash.price([p.preload for p in group], merge), strict=True))
    return priced


def _preload(env: simpy.Environment, devices: Devices, plan: LayerPlan, priced: tuple[float, int, float]):
    """Read the plan's preload from flash (and stage it over the link if the processor computes elsewhere)."""
    read = devices.flash.read_priced(priced, tag=f"L{plan.layer} preload")
    dst = devices.processors[plan.processor].spec.memory
    src = devices.flash.spec.target_memory
    if dst != src:
        nbytes = float(plan.preload[:, 1].sum())
        xfer = devices.link_between(src, dst).transfer(src, dst, nbytes, f"L{plan.layer} stage")
        read = env.all_of([read, xfer])
    return read


def _loader(env: simpy.Environment, devices: Devices, plans: Sequence[LayerPlan], reached, loaded, priced):
    for plan in plans:
        if plan.preload.shape[0] == 0:
            continue
        if plan.issue_at >= 0:
            yield reached[plan.issue_at]
        yield _preload(env, devices, plan, priced[plan.layer])
        loaded[plan.layer].succeed()


def _compute(env: simpy.Environment, devices: Devices, plans: Sequence[LayerPlan], reached, loaded, times, priced):
    """reached/loaded None: serial token, the preloads (priced: layer -> price) are issued here (see above)."""
    inline = loaded is None
    for plan in plans:
        t0 = env.now
        if inline:
            if plan.preload.shape[0]:
                yield _preload(env, devices, plan, priced[plan.layer])
        else:
            if plan.layer in reached:
                reached[plan.layer].succeed()
            wait_for = plan.layer if plan.preload.shape[0] else plan.ready_with
            if wait_for is not None:
                yield loaded[wait_for]
        if plan.on_demand.shape[0]:
            yield devices.flash.read(plan.on_demand, tag=f"L{plan.layer} on-demand", merge=plan.coalesce)
        t1 = env.now
        for xfer in plan.transfers:
            yield devices.link_between(xfer.src, xfer.dst).transfer(xfer.src, xfer.dst, xfer.nbytes, xfer.tag)
        t2 = env.now
        if plan.memmgmt_bytes > 0:
            yield devices.memories[devices.flash.spec.target_memory].copy(plan.memmgmt_bytes, f"L{plan.layer} memmgmt")
        t3 = env.now
        if plan.ops:
            yield devices.processors[plan.processor].run(plan.ops, tag=f"L{plan.layer}")
        times.io_stall_s += t1 - t0
        times.xfer_s += t2 - t1
        times.memmgmt_s += t3 - t2
        times.compute_s += env.now - t3


def run_token(env: simpy.Environment, devices: Devices, plans: Sequence[LayerPlan], atomic: bool = True):
    """SimPy process: one decode step; returns its :class:`TokenTimes`.

    ``atomic``: a serial token with nothing else pending runs on the atomic path (module docstring); False
    forces the event path. Only the ``reached`` events some preload waits for, and the ``loaded`` events of
    layers with a preload, exist (an event nobody waits for would cost a scheduling step per layer).
    """
    times = TokenTimes(start_s=env.now)
    priced = _price_preloads(devices, plans)
    if _serial(plans):
        if atomic and env.peek() == math.inf:  # nothing else can act before this token ends
            yield timeout_at(env, run_alone(devices, plans, times, priced, env.now))
        else:
            yield from _compute(env, devices, plans, None, None, times, priced)  # no hand-over at all
        times.end_s = env.now
        return times
    reached = {p.issue_at: env.event() for p in plans if p.preload.shape[0] and p.issue_at >= 0}
    loaded = {p.layer: env.event() for p in plans if p.preload.shape[0]}
    loader = env.process(_loader(env, devices, plans, reached, loaded, priced))
    yield env.process(_compute(env, devices, plans, reached, loaded, times, priced))
    yield loader
    times.end_s = env.now
    return times


def _serial(plans: Sequence[LayerPlan]) -> bool:
    """Every preload is issued when its own layer starts and no layer waits for a later layer's read."""
    return all(
        p.issue_at == p.layer if p.preload.shape[0] else p.ready_with is None or p.ready_with < p.layer for p in plans
    )
