"""SimPy device components (flash, memories, links, processors) and :func:`build_devices` for a profile.

Each device takes ``env`` first and has one verb (``Flash.read``, ``Link.transfer``, ``Memory.copy``,
``Processor.run``) that turns one batch of work (a read of many extents, a transfer, a batch of kernels) into ONE
awaited SimPy event. Contention uses the fluid :class:`FairShare` server (no per-byte events). The engine records
one span per job on the device's track: ``flash``, ``cpu``, ``pcie:dram->vram``, ``dram:copy``.

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

Pricing without events
----------------------
Each device also answers, as a pure function, what one job would cost alone: ``Flash.price`` (and
``service_s``), ``Link.service_s``, ``Memory.copy_s``, ``Processor.service_s``. The engine uses them to price a
step's jobs before it runs them, and to schedule a step in closed form when nothing can contend with it
(``sim/engine/executor.py``); the devices themselves keep no counters: the engine books bytes and spans per job.
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

from sim.config.hardware import HardwareProfile
from sim.devices.fairshare import FairShare
from sim.devices.flash import Flash, Priced
from sim.devices.link import Link
from sim.devices.memory import Memory
from sim.devices.processor import Op, Processor

__all__ = [
    "Devices",
    "FairShare",
    "Flash",
    "Link",
    "Memory",
    "Op",
    "Processor",
    "Priced",
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


def build_devices(env: simpy.Environment, hw: HardwareProfile, budgets: dict[str, float] | None = None) -> Devices:
    """Instantiate a profile's devices; ``budgets`` (memory name -> bytes) cap what budgeted tenants may hold."""
    budgets = budgets or {}
    unknown = sorted(set(budgets) - set(hw.memories))
    if unknown:
        raise ValueError(f"budgets for unknown memories {unknown}; {hw.name} has {sorted(hw.memories)}")
    return Devices(
        env=env,
        flash=Flash(env, hw.flash, "flash"),
        memories={name: Memory(env, name, spec, budgets.get(name)) for name, spec in hw.memories.items()},
        links={name: Link(env, name, spec) for name, spec in hw.links.items()},
        processors={name: Processor(env, name, spec) for name, spec in hw.processors.items()},
    )
