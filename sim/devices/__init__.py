"""SimPy device components (flash, memories, links, processors) and :func:`build_devices` for a profile.

Each device takes ``env`` first, turns one batch of work (a read of many extents, a transfer, a batch of
kernels) into ONE awaited SimPy event, and records one span per batch on its track: ``flash``, ``cpu``,
``pcie:dram->vram``, ``dram:copy``. Contention uses the fluid :class:`FairShare` server (no per-byte events).

Same-time order (what the engine may rely on; pinned by ``tests/test_event_order.py``)
----------------------------------------------------------------------------------------
SimPy processes events in heap order ``(time, priority, insertion id)``; every device event here has NORMAL
priority, so events at the same time are processed in the order they were scheduled, and an event's waiters
(callbacks) run in the order they started waiting.

1. Completion wakes waiters at the same instant. A process waiting on a device event that completes at t
   resumes at t (no extra delay), after any earlier-scheduled event at t; several waiters on one event
   resume in the order they yielded it.
2. Equal jobs submitted together finish together, in submission order. Two reads (transfers, copies) of equal
   size submitted at the same t to the same device complete at the same t, and their events fire in the order
   of the read() calls. More generally a FairShare server completes jobs in order of (finish time, submission).
3. An arrival does not perturb a completion due at the same instant. If job A is due at t and job B is
   submitted at t, A completes at exactly t whether B's submit runs before or after A's timeout, and B then
   runs alone from t.
4. Processors are FIFO in call order. ``run()`` calls execute back to back in the order they were made; two
   calls at t with compute times t1 and t2 finish at t + t1 and t + t1 + t2, even when made at the same t.
5. Latency is a pure delay before the shared transfer. A read (transfer) issued at t enters the fair-share
   server at t + latency and so competes only with transfers in flight then; with zero latency it enters at
   t inside the call itself. An empty read (no extents) succeeds at t without latency.
6. Nothing else is ordered: across devices, same-time events follow scheduling order only; code that needs
   an order between devices must express it with an explicit wait.

Jobs alone, without events (the engine's atomic path, ``sim/engine/atomic.py``)
------------------------------------------------------------------------------
``Flash.read_alone``, ``Link.transfer_alone``, ``Memory.copy_alone`` and ``Processor.run_alone`` take a start time
and return the end time that the event-driven call issued at that instant would reach if nothing else used the
device until then (:meth:`FairShare.run_alone` checks the server is idle), booking the same counters, server state
and span with the same float operations; they schedule no SimPy event. ``order_alone`` gives the key by which
two such jobs on different devices, started together, complete in the event path (rules 1-2 above: end time, then
the order their completions were scheduled).
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

from sim.config.hardware import HardwareProfile
from sim.devices.fairshare import FairShare
from sim.devices.flash import Flash, ReadResult
from sim.devices.link import Link
from sim.devices.memory import Memory
from sim.devices.processor import Op, Processor
from sim.stats.recorder import Recorder

__all__ = [
    "Devices",
    "FairShare",
    "Flash",
    "Link",
    "Memory",
    "Op",
    "Processor",
    "ReadResult",
    "build_devices",
]


@dataclass(slots=True)
class Devices:
    """Every device of one simulated machine, by the names the hardware profile gives them."""

    env: simpy.Environment
    flash: Flash
    memories: dict[str, Memory]
    links: dict[str, Link]
    processors: dict[str, Processor]

    def link_between(self, mem_a: str, mem_b: str) -> Link | None:
        """The link joining two memories (either direction), or None if they share no link."""
        for link in self.links.values():
            if set(link.spec.ends) == {mem_a, mem_b}:
                return link
        return None


def build_devices(
    env: simpy.Environment,
    hw: HardwareProfile,
    dram_budget_bytes: float | None = None,
    recorder: Recorder | None = None,
) -> Devices:
    """Instantiate a profile's devices. The DRAM budget caps the memory flash reads into (``flash.target_memory``)."""
    memories = {
        name: Memory(env, name, spec, dram_budget_bytes if name == hw.flash.target_memory else None, recorder)
        for name, spec in hw.memories.items()
    }
    return Devices(
        env=env,
        flash=Flash(env, hw.flash, "flash", recorder),
        memories=memories,
        links={name: Link(env, name, spec, recorder) for name, spec in hw.links.items()},
        processors={name: Processor(env, name, spec, recorder) for name, spec in hw.processors.items()},
    )
