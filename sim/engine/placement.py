"""Which memory holds what, by the names the hardware profile gives its memories.

Policies allocate tenants and plan copies and transfers through a :class:`Placement`, never through a memory
name of their own: the same policy runs on a laptop whose one DRAM holds everything and on a GPU box where resident
weights sit in VRAM, the neuron window in host DRAM and the KV cache in either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.config.hardware import HardwareProfile


@dataclass(frozen=True, slots=True)
class Placement:
    stream: str  # where flash reads land (the profile's flash.target_memory); the budgeted memory by default
    weights: str  # resident weights (default: the memory the run's processor computes out of)
    window: str  # caches of streamed weights: neuron windows, hot-weight caches (default: ``stream``)
    kv: str  # the KV cache (default: the processor's memory)
    processor: str  # the processor that runs the model
    compute_memory: dict[str, str] = field(default_factory=dict)  # processor name -> the memory it computes out of

    def memory_of(self, processor: str) -> str:
        """The memory ``processor`` computes out of."""
        return self.compute_memory[processor]

    @property
    def compute(self) -> str:
        """The memory the run's processor computes out of."""
        return self.compute_memory[self.processor]

    @classmethod
    def of(cls, hardware: HardwareProfile, processor: str, overrides: dict[str, str | None] | None = None) -> Placement:
        """The default placement for ``processor`` on ``hardware``, with ``overrides`` (role -> memory name)."""
        compute = {name: spec.memory for name, spec in hardware.processors.items()}
        stream = hardware.flash.target_memory
        roles = {"stream": stream, "weights": compute[processor], "window": stream, "kv": compute[processor]}
        roles |= {role: memory for role, memory in (overrides or {}).items() if memory is not None}
        return cls(**roles, processor=processor, compute_memory=compute)
