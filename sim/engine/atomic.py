"""The atomic path of a serial token (gem5's atomic mode next to its timing mode): the same times in one event.

A serial token (see :func:`sim.engine.decode.run_token`) that starts with nothing else pending in the SimPy
environment (``env.peek() == inf``: no other process, device job or stale timeout can act before it ends) has the
machine to itself: every device job it issues runs alone on an idle server, one after the other, so each job's
times are a pure function of its size, its start and the device's state. :func:`run_alone` computes them with the
devices' ``*_alone`` methods, which book exactly what the event path's jobs would leave behind (counters, busy
time, job-seconds, spans) using the same float operations in the same order, and returns the token's end; the
caller then advances time with ONE timeout. Bit-identical to the event path (tests/test_engine_atomic.py).

The only overlap inside a serial token is a preload staged over a link (flash read and link transfer start at
the same instant): the token waits for the later one, and the two spans are recorded in the order SimPy would
complete them (``order_alone``: end time, then when each job entered its server).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import simpy

from sim.devices import Devices
from sim.engine.plan import LayerPlan

if TYPE_CHECKING:
    from sim.engine.decode import TokenTimes


def timeout_at(env: simpy.Environment, end_s: float) -> simpy.Event:
    """An event that fires at exactly ``end_s`` (>= now), the token's end as the event path would reach it.

    SimPy schedules a timeout at ``now + delay``; a delay landing on ``end_s`` exists for most ends (found within a
    few ulps of ``end_s - now``), and then this is ``env.timeout(delay)``. Some ends are no single rounding of
    ``now + delay`` (when ``end_s`` is not within a factor 2 of ``now``, the exact sums around it can fall only on
    ties that round to its even neighbours); the event path got there by a chain of additions, so the event is
    queued at ``end_s`` directly, in the entry SimPy's own ``Environment.schedule`` pushes (time, priority,
    event id, event) -- the same queue position and event count a timeout would take."""
    delay = _delay_to(env.now, end_s)
    if delay is not None:
        return env.timeout(delay)
    event = env.event()
    event._ok, event._value = True, None  # as Timeout.__init__ sets them before scheduling
    heapq.heappush(env._queue, (end_s, simpy.core.NORMAL, next(env._eid), event))
    return event


def _delay_to(now: float, end_s: float) -> float | None:
    """A delay d with ``now + d == end_s`` exactly, searched a few ulps around ``end_s - now``; None if none."""
    delay = end_s - now
    for _ in range(8):
        reached = now + delay
        if reached == end_s:
            return delay
        delay = float(np.nextafter(delay, -np.inf if reached > end_s else np.inf))
    return None


def run_alone(devices: Devices, plans: Sequence[LayerPlan], times: TokenTimes, priced: dict, start_s: float) -> float:
    """Book a serial token's jobs from ``start_s`` as the event path's compute process would run them (same
    order, same floats); accumulate ``times`` and return the token's end time."""
    flash = devices.flash
    memory = devices.memories[flash.spec.target_memory]
    io_s, xfer_s, memmgmt_s, compute_s = times.io_stall_s, times.xfer_s, times.memmgmt_s, times.compute_s
    now = start_s
    for plan in plans:
        tags = _tags(plan.layer)
        t0 = now
        if plan.preload.shape[0]:
            now = _preload(devices, plan, priced[plan.layer], now)
        if plan.on_demand.shape[0]:
            now = flash.read_alone(flash.price_one(plan.on_demand, plan.coalesce), now, tags[1])
        t1 = now
        for x in plan.transfers:
            now = devices.link_between(x.src, x.dst).transfer_alone(x.src, x.dst, x.nbytes, now, x.tag)
        t2 = now
        if plan.memmgmt_bytes > 0:
            now = memory.copy_alone(plan.memmgmt_bytes, now, tags[2])
        t3 = now
        if plan.ops:
            now = devices.processors[plan.processor].run_alone(plan.ops, now, tags[3])
        io_s += t1 - t0
        xfer_s += t2 - t1
        memmgmt_s += t3 - t2
        compute_s += now - t3
    times.io_stall_s, times.xfer_s, times.memmgmt_s, times.compute_s = io_s, xfer_s, memmgmt_s, compute_s
    return now


@cache
def _tags(layer: int) -> tuple[str, str, str, str]:
    """The span names of a layer's jobs (as the event path names them): preload, on-demand, memmgmt, compute."""
    return f"L{layer} preload", f"L{layer} on-demand", f"L{layer} memmgmt", f"L{layer}"


def _preload(devices: Devices, plan: LayerPlan, priced: tuple[float, int, float], start_s: float) -> float:
    """The plan's preload read (and its staging over the link) from ``start_s``; returns when both are done."""
    flash, tag = devices.flash, _tags(plan.layer)[0]
    dst = devices.processors[plan.processor].spec.memory
    src = flash.spec.target_memory
    if dst == src:
        return flash.read_alone(priced, start_s, tag)
    link, nbytes = devices.link_between(src, dst), float(plan.preload[:, 1].sum())
    read_first = flash.order_alone(priced, start_s) <= link.order_alone(src, dst, nbytes, start_s)
    if read_first:  # spans in completion order, as the event path records them
        read_end_s = flash.read_alone(priced, start_s, tag)
        xfer_end_s = link.transfer_alone(src, dst, nbytes, start_s, f"L{plan.layer} stage")
    else:
        xfer_end_s = link.transfer_alone(src, dst, nbytes, start_s, f"L{plan.layer} stage")
        read_end_s = flash.read_alone(priced, start_s, tag)
    return max(read_end_s, xfer_end_s)  # all_of([read, xfer]) fires when the later one does
