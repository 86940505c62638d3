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

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import simpy

from sim.devices import Devices
from sim.engine.plan import LayerPlan

if TYPE_CHECKING:
    from sim.engine.decode import TokenTimes


def delay_to(env: simpy.Environment, end_s: float) -> float:
    """A delay d with ``env.now + d == end_s`` exactly (SimPy schedules a timeout at now + delay; ``end_s - now``
    alone can miss ``end_s`` by a rounding). At most a few steps of one ulp from ``end_s - now``."""
    now = env.now
    delay = end_s - now
    for _ in range(8):
        reached = now + delay
        if reached == end_s:
            return delay
        delay = float(np.nextafter(delay, -np.inf if reached > end_s else np.inf))
    raise AssertionError(f"no delay from {now!r} reaches {end_s!r}")


def run_alone(devices: Devices, plans: Sequence[LayerPlan], times: TokenTimes, priced: dict, start_s: float) -> float:
    """Book a serial token's jobs from ``start_s`` as the event path's compute process would run them (same
    order, same floats); accumulate ``times`` and return the token's end time."""
    flash = devices.flash
    now = start_s
    for plan in plans:
        t0 = now
        if plan.preload.shape[0]:
            now = _preload(devices, plan, priced[plan.layer], now)
        if plan.on_demand.shape[0]:
            now = flash.read_alone(flash.price_one(plan.on_demand, plan.coalesce), now, f"L{plan.layer} on-demand")
        t1 = now
        for x in plan.transfers:
            now = devices.link_between(x.src, x.dst).transfer_alone(x.src, x.dst, x.nbytes, now, x.tag)
        t2 = now
        if plan.memmgmt_bytes > 0:
            memory = devices.memories[flash.spec.target_memory]
            now = memory.copy_alone(plan.memmgmt_bytes, now, f"L{plan.layer} memmgmt")
        t3 = now
        if plan.ops:
            now = devices.processors[plan.processor].run_alone(plan.ops, now, f"L{plan.layer}")
        times.io_stall_s += t1 - t0
        times.xfer_s += t2 - t1
        times.memmgmt_s += t3 - t2
        times.compute_s += now - t3
    return now


def _preload(devices: Devices, plan: LayerPlan, priced: tuple[float, int, float], start_s: float) -> float:
    """The plan's preload read (and its staging over the link) from ``start_s``; returns when both are done."""
    flash, tag = devices.flash, f"L{plan.layer} preload"
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
