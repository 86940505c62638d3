"""A memory (DRAM, HBM, GDDR): capacity accounting per tenant and memcpy bandwidth.

Modelled: how many bytes each tenant (attention weights, an FFN window, a KV cache...) holds, against two limits:

- the device's **capacity**, which everything must fit;
- an optional **budget** (an experiment's ``dram_budget``: the memory the papers give a policy for the model's
  weights and caches) that the *budgeted* tenants must fit. A tenant allocated with ``budgeted=False`` (the KV
  cache) counts only against the capacity, as in LLM in a Flash's and ActiveFlow's DRAM columns.

Going over either is a one-line CapacityError naming the holders. ``occupy`` says how much of a tenant's
allocation holds data right now (a preallocated neuron matrix is allocated at its peak but holds the current
window; a tenant that never calls it is full). Copies within the memory (memory management: compacting a cache,
moving rows) are jobs on a :class:`FairShare` server at ``copy_bandwidth``, so concurrent copies share it: one
verb, :meth:`Memory.copy`.

Not modelled: read/write bandwidth of kernels (processors charge that in their roofline), fragmentation,
allocation latency, channels and banks, the OS page cache.
"""

from __future__ import annotations

import simpy

from sim.config.hardware import MemorySpec
from sim.devices.fairshare import FairShare
from sim.errors import CapacityError

_REL_TOL = 1e-9
_SCALES = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def _unit_for(capacity_bytes: float) -> tuple[str, float]:
    """One decimal unit for every number in a message, chosen from the capacity."""
    for unit, scale in _SCALES:
        if capacity_bytes >= scale:
            return unit, scale
    return "B", 1.0


class Memory:
    """Capacity and budget per tenant plus a fair-shared copy engine; see the module docstring."""

    def __init__(self, env: simpy.Environment, name: str, spec: MemorySpec, budget_bytes: float | None = None):
        if budget_bytes is not None and not budget_bytes >= 0:
            raise ValueError(f"{name}: budget_bytes(={budget_bytes!r}) must be >= 0")
        self.env = env
        self.name = name
        self.spec = spec
        self.capacity_bytes = spec.capacity
        self.budget_bytes = spec.capacity if budget_bytes is None else min(spec.capacity, budget_bytes)
        self.used_bytes = 0.0  # every tenant
        self.budgeted_bytes = 0.0  # budgeted tenants only
        self.peak_bytes = 0.0
        self._held: dict[str, float] = {}
        self._unbudgeted: set[str] = set()
        self._occupied: dict[str, float] = {}  # tenants whose data fill only part of what they hold
        self.copier = FairShare(env, f"{name}:copy")

    def tenants(self, budgeted: bool | None = None) -> dict[str, float]:
        """Bytes held per tenant (a copy), largest first; ``budgeted`` True/False keeps only those tenants."""
        keep = self._held.items() if budgeted is None else (
            (k, v) for k, v in self._held.items() if (k not in self._unbudgeted) == budgeted
        )  # fmt: skip
        return dict(sorted(keep, key=lambda kv: -kv[1]))

    @property
    def budget_free_bytes(self) -> float:
        """What a budgeted tenant may still allocate (within the budget and the capacity)."""
        return max(0.0, min(self.budget_bytes - self.budgeted_bytes, self.capacity_bytes - self.used_bytes))

    def allocate(self, tenant: str, nbytes: float, budgeted: bool = True) -> None:
        """Add ``nbytes`` to what ``tenant`` holds; over the budget or capacity -> CapacityError (nothing changes).
        A tenant is budgeted or not from its first allocation on."""
        if not nbytes >= 0:
            raise ValueError(f"{self.name}: allocate nbytes(={nbytes!r}) for {tenant!r} must be >= 0")
        if tenant in self._held and (tenant not in self._unbudgeted) != budgeted:
            raise ValueError(f"{self.name}: tenant {tenant!r} was allocated with budgeted={not budgeted}")
        if self.used_bytes + nbytes > self.capacity_bytes:
            raise CapacityError(self._over_message(tenant, nbytes, "capacity", self.capacity_bytes, self.used_bytes))
        if budgeted and self.budgeted_bytes + nbytes > self.budget_bytes:
            raise CapacityError(self._over_message(tenant, nbytes, "budget", self.budget_bytes, self.budgeted_bytes))
        self._held[tenant] = self._held.get(tenant, 0.0) + nbytes
        if not budgeted:
            self._unbudgeted.add(tenant)
        self.used_bytes += nbytes
        self.budgeted_bytes += nbytes if budgeted else 0.0
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)

    def free(self, tenant: str, nbytes: float) -> None:
        """Subtract ``nbytes`` from what ``tenant`` holds; freeing more than it holds is a ValueError.

        A remainder within float rounding (relative 1e-9) of zero counts as zero, so freeing in the same pieces
        that were allocated always balances.
        """
        held = self._held.get(tenant, 0.0)
        if not 0 <= nbytes <= held * (1 + _REL_TOL):
            raise ValueError(f"{self.name}: cannot free {nbytes!r} B for {tenant!r}: it holds {held!r} B")
        budgeted = tenant not in self._unbudgeted
        remaining = held - nbytes
        if remaining > held * _REL_TOL:
            self._held[tenant] = remaining
            if tenant in self._occupied:
                self._occupied[tenant] = min(self._occupied[tenant], remaining)
        else:
            self._held.pop(tenant, None)
            self._occupied.pop(tenant, None)
            self._unbudgeted.discard(tenant)
        self.used_bytes = max(0.0, self.used_bytes - nbytes)
        if budgeted:
            self.budgeted_bytes = max(0.0, self.budgeted_bytes - nbytes)

    def occupy(self, tenant: str, nbytes: float) -> None:
        """Say that ``nbytes`` of what ``tenant`` holds contain data now (0 <= nbytes <= held)."""
        held = self._held.get(tenant, 0.0)
        if not 0 <= nbytes <= held * (1 + _REL_TOL):
            raise ValueError(f"{self.name}: {tenant!r} cannot occupy {nbytes!r} B: it holds {held!r} B")
        self._occupied[tenant] = nbytes

    def occupied_bytes(self, budgeted: bool | None = None) -> float:
        """Bytes holding data now: every tenant in full except those that said otherwise with :meth:`occupy`."""
        return sum(self._occupied.get(tenant, held) for tenant, held in self.tenants(budgeted).items())

    def copy_s(self, nbytes: float) -> float:
        """Seconds of an exclusive copy of ``nbytes``."""
        if not nbytes >= 0:
            raise ValueError(f"{self.name}: copy nbytes(={nbytes!r}) must be >= 0")
        return nbytes / self.spec.copy_bandwidth

    def copy(self, nbytes: float) -> simpy.Event:
        """Copy ``nbytes`` within this memory, fair-shared with concurrent copies; succeeds when done."""
        return self.copier.submit(self.copy_s(nbytes))

    def _over_message(self, tenant: str, nbytes: float, word: str, limit: float, used: float) -> str:
        unit, scale = _unit_for(limit)
        held = ", ".join(f"{name} {n / scale:.2f} {unit}" for name, n in self.tenants().items()) or "nothing"
        return (
            f"{self.name}: cannot allocate {nbytes / scale:.2f} {unit} for {tenant!r}: "
            f"{(limit - used) / scale:.2f} {unit} of the {limit / scale:.2f} {unit} {word} free (held: {held})"
        )
