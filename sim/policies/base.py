"""The policy seam: the context a policy is set up with, and the protocol it implements.

A policy is pure planning. Once, in :meth:`Policy.setup`, it allocates what it keeps resident (tenants of the
memories its :class:`~sim.engine.placement.Placement` names). Then, per step, :meth:`Policy.plan` returns the
step's work as a :class:`~sim.engine.graph.Graph` of device jobs -- reads, transfers, copies, kernels and what each
waits for -- and never touches SimPy. :meth:`Policy.step_stats` adds policy columns (neurons loaded, hit rates) to
the step's row.

A policy that a real run can execute (:mod:`sim.real.executor`) also says what its bytes ARE, not only how many:
:class:`Executable` -- which weights it holds from set-up on, which FFN neurons each layer of the last planned step
computes, and which neurons its window's matrices hold row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sim.config.hardware import HardwareProfile
from sim.devices import Devices
from sim.engine.graph import Graph
from sim.engine.placement import Placement
from sim.engine.requests import Step
from sim.layout import Layout
from sim.models.profile import ModelProfile


@dataclass(frozen=True)
class RunContext:
    """Everything a policy may read while setting up; built by the engine from the experiment."""

    model: ModelProfile
    hardware: HardwareProfile
    devices: Devices
    placement: Placement  # which memory holds weights, windows, the KV cache; which processor runs the model
    dtype: str  # weight dtype, a key of sim.models.profile.DTYPE_BITS
    kv_dtype: str
    max_batch: int  # requests decoded together at most
    decode_tokens: int  # the most decode steps any request will ask for
    max_context_tokens: int  # the most tokens any request's KV cache will hold
    layout: Layout  # where every weight lives on flash
    activations: Any | None  # sim.traces.source.ActivationSource, or None for policies that need none
    rng: np.random.Generator
    statistics: Any | None = None  # sim.traces.statistics.ActivationStatistics a projection's density names

    @property
    def processor(self) -> str:
        return self.placement.processor


class Policy(Protocol):
    def setup(self, ctx: RunContext) -> None:
        """Allocate resident tenants in memory (may raise CapacityError) and precompute layouts."""

    def plan(self, step: Step) -> Graph:
        """The jobs of one step (a prefill chunk or a decode step of the batch)."""

    def kv_tokens_held(self, tokens: int) -> float:
        """Cached tokens a request's KV cache holds when it has seen ``tokens`` (all of them unless the policy
        evicts: StreamingLLM keeps sinks + window, H2O its budget)."""

    def step_stats(self) -> dict[str, float]:
        """Extra columns for the step last planned (e.g. neurons loaded, cache hit rate)."""


class Noting(Protocol):
    """A policy that may have something to say about a finished run (optional: the engine asks with getattr)."""

    def run_notes(self, summary: dict[str, Any]) -> list[str]:
        """One line each, for the summary's ``notes`` column, about.md and the terminal (e.g. a window that had
        to forget neurons to fit its rows, or how far the policy's own analytic model is from the simulated
        ``summary``); empty when there is nothing to say."""


def run_notes(policy: Policy, summary: dict[str, Any]) -> list[str]:
    notes = getattr(policy, "run_notes", None)
    return list(notes(summary)) if notes is not None else []


def emitted_tokens(policy: Policy, step: Step) -> tuple[int, ...]:
    """Tokens each request of ``step`` got: a decode step emits one per request unless the policy speculates (an
    optional ``emitted(step)`` method: a draft-and-verify round emits the accepted tokens and one more); a prefill
    step emits none."""
    if step.phase != "decode":
        return (0,) * step.batch
    emitted = getattr(policy, "emitted", None)
    return tuple(emitted(step)) if emitted is not None else (1,) * step.batch


def driven_by(policy: Policy) -> str | None:
    """What drives a policy that draws its own statistics instead of reading an activation trace (an optional
    ``driven_by`` attribute: e.g. moe_offload's routing source), for the summary's ``activations`` column."""
    return getattr(policy, "driven_by", None)


@dataclass(frozen=True)
class Held:
    """The weights a policy keeps in its weights memory from set-up on, by content."""

    embeddings: bool  # the embedding table (and an untied LM head)
    attention: bool  # every layer's q, k, v, o
    ffn: list[np.ndarray]  # per layer: sorted FFN neurons resident from set-up (empty: none)


class Executable(Protocol):
    def held(self) -> Held:
        """What :meth:`Policy.setup` allocated, by content."""

    def ffn_neurons(self) -> list[np.ndarray] | None:
        """Per layer, the sorted FFN neurons the last planned step computes; None: every neuron, densely."""

    def window_matrix(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(capacity [L] rows preallocated per layer, neuron_at [L, width] neuron in each row of each layer's window
        matrix after the last planned step, -1: free); None: the policy keeps no window."""
