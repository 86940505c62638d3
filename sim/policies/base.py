"""The policy seam: context a policy is set up with, and the protocol it implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sim.config.hardware import HardwareProfile
from sim.devices import Devices
from sim.engine.plan import LayerPlan
from sim.layout import Layout
from sim.models.profile import ModelProfile


@dataclass(frozen=True)
class RunContext:
    """Everything a policy may read while setting up; built by the engine from the experiment."""

    model: ModelProfile
    hardware: HardwareProfile
    devices: Devices
    dtype: str  # weight dtype, a key of sim.models.profile.DTYPE_BITS
    kv_dtype: str
    processor: str  # name of the processor that runs the model (a key of hardware.processors)
    context_tokens: int  # KV length at the first decoded token (prompt length)
    decode_tokens: int  # decode steps the run will ask for
    layout: Layout  # where every weight lives on flash
    activations: Any | None  # sim.traces.source.ActivationSource, or None for policies that need none
    rng: np.random.Generator


class Policy(Protocol):
    def setup(self, ctx: RunContext) -> None:
        """Allocate resident tenants in memory (may raise CapacityError) and precompute layouts."""

    def plan_token(self, t: int) -> list[LayerPlan]:
        """Plans for all layers of decode step ``t`` (0-based), in layer order."""

    def token_stats(self) -> dict[str, float]:
        """Extra per-token columns for the last planned token (e.g. neurons loaded, cache hit rate)."""
