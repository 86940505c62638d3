"""A memory (DRAM, HBM, GDDR): capacity accounting per tenant and memcpy bandwidth.

Modelled: how many bytes each tenant (attention weights, FFN cache, KV cache...) holds; going over the
capacity (the smaller of the device's capacity and the experiment's budget) is a one-line CapacityError;
how much of a tenant's allocation holds data right now (``occupy``: a preallocated neuron matrix is allocated at
its peak but holds the current window; a tenant that never calls it is full);
copies within the memory (memory management: compacting a cache, moving rows) as jobs on a
:class:`FairShare` server at ``copy_bandwidth``, so concurrent copies share it.

Not modelled: read/write bandwidth of kernels (processors charge that in their roofline), fragmentation,
allocation latency, channels and banks, the OS page cache.
"""

from __future__ import annotations

import simpy

from sim.config.hardware import MemorySpec
from sim.devices.fairshare import FairShare
from sim.errors import CapacityError
from sim.stats.recorder import Recorder

_REL_TOL = 1e-9
_SCALES = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def _unit_for(capacity_bytes: float) -> tuple[str, float]:
    """One decimal unit for every number in a message, chosen from the capacity."""
    for unit, scale in _SCALES:
        if capacity_bytes >= scale:
            return unit, scale
    return "B", 1.0


class Memory:
    """Capacity per tenant plus a fair-shared copy engine; see the module docstring."""

    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        spec: MemorySpec,
        budget_bytes: float | None = None,
        recorder: Recorder | None = None,
    ):
        if budget_bytes is not None and not budget_bytes >= 0:
            raise ValueError(f"{name}: budget_bytes(={budget_bytes!r}) must be >= 0")
        self.env = env
        self.name = name
        self.spec = spec
        self.recorder = recorder
        self.capacity_bytes = spec.capacity if budget_bytes is None else min(spec.capacity, budget_bytes)
        self._limit_word = "capacity" if budget_bytes is None or budget_bytes >= spec.capacity else "budget"
        self.used_bytes = 0.0
        self.peak_bytes = 0.0
        self._held: dict[str, float] = {}
        self._occupied: dict[str, float] = {}  # tenants whose data fill only part of what they hold
        self.copier = FairShare(env, f"{name}:copy")
        self.bytes_copied = 0.0

    def tenants(self) -> dict[str, float]:
        """Bytes held per tenant (a copy), largest first."""
        return dict(sorted(self._held.items(), key=lambda kv: -kv[1]))

    def allocate(self, tenant: str, nbytes: float) -> None:
        """Add ``nbytes`` to what ``tenant`` holds; over capacity -> CapacityError (nothing changes)."""
        if not nbytes >= 0:
            raise ValueError(f"{self.name}: allocate nbytes(={nbytes!r}) for {tenant!r} must be >= 0")
        if self.used_bytes + nbytes > self.capacity_bytes:
            raise CapacityError(self._over_message(tenant, nbytes))
        self._held[tenant] = self._held.get(tenant, 0.0) + nbytes
        self.used_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def free(self, tenant: str, nbytes: float) -> None:
        """Subtract ``nbytes`` from what ``tenant`` holds; freeing more than it holds is a ValueError.

        A remainder within float rounding (relative 1e-9) of zero counts as zero, so freeing in the same pieces
        that were allocated always balances.
        """
        held = self._held.get(tenant, 0.0)
        if not 0 <= nbytes <= held * (1 + _REL_TOL):
            raise ValueError(f"{self.name}: cannot free {nbytes!r} B for {tenant!r}: it holds {held!r} B")
        remaining = held - nbytes
        if remaining > held * _REL_TOL:
            self._held[tenant] = remaining
            if tenant in self._occupied:
                self._occupied[tenant] = min(self._occupied[tenant], remaining)
        else:
            self._held.pop(tenant, None)
            self._occupied.pop(tenant, None)
        self.used_bytes = max(0.0, self.used_bytes - nbytes)

    def occupy(self, tenant: str, nbytes: float) -> None:
        """Say that ``nbytes`` of what ``tenant`` holds contain data now (0 <= nbytes <= held)."""
        held = self._held.get(tenant, 0.0)
        if not 0 <= nbytes <= held * (1 + _REL_TOL):
            raise ValueError(f"{self.name}: {tenant!r} cannot occupy {nbytes!r} B: it holds {held!r} B")
        self._occupied[tenant] = nbytes

    @property
    def occupied_bytes(self) -> float:
        """Bytes holding data now: every tenant in full except those that said otherwise with :meth:`occupy`."""
        return sum(self._occupied.get(tenant, held) for tenant, held in self._held.items())

    def copy(self, nbytes: float, tag: str = "memcpy") -> simpy.Event:
        """Copy ``nbytes`` within this memory; succeeds (value: seconds taken) when done. One span."""
        work_s = self._copy_s(nbytes)
        env, start_s = self.env, float(self.env.now)
        done = env.event()

        def result() -> float:
            self._copied(nbytes, tag, start_s, env.now)
            return env.now - start_s

        self.copier.submit(work_s, done, result)
        return done

    def copy_alone(self, nbytes: float, start_s: float, tag: str = "memcpy") -> float:
        """:meth:`copy` started at ``start_s`` with the copier to itself until it ends: the same bytes, span and
        copier accounting (:meth:`FairShare.run_alone`); returns the end time, without SimPy events."""
        end_s = self.copier.run_alone(start_s, self._copy_s(nbytes))
        self._copied(nbytes, tag, float(start_s), end_s)
        return end_s

    def _copy_s(self, nbytes: float) -> float:
        if not nbytes >= 0:
            raise ValueError(f"{self.name}: copy nbytes(={nbytes!r}) must be >= 0")
        return nbytes / self.spec.copy_bandwidth

    def _copied(self, nbytes: float, tag: str, start_s: float, end_s: float) -> None:
        self.bytes_copied += nbytes
        if self.recorder is not None:
            self.recorder.span(self.copier.name, tag, start_s, end_s, nbytes)

    def _over_message(self, tenant: str, nbytes: float) -> str:
        unit, scale = _unit_for(self.capacity_bytes)
        free = self.capacity_bytes - self.used_bytes
        held = ", ".join(f"{name} {n / scale:.2f} {unit}" for name, n in self.tenants().items()) or "nothing"
        return (
            f"{self.name}: cannot allocate {nbytes / scale:.2f} {unit} for {tenant!r}: "
            f"{free / scale:.2f} {unit} of the {self.capacity_bytes / scale:.2f} {unit} {self._limit_word} free "
            f"(held: {held})"
        )
