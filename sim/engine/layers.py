"""One way to build a step's graph: a pipeline of layers, each loaded by a loader and computed by a compute chain.

A policy that thinks in layers (LLM in a Flash, the dense baselines) returns one :class:`LayerPlan` per layer and
:func:`pipeline_graph` turns them into jobs with these dependencies:

- **the loader** reads the plans' ``preload`` extents in layer order, one read in flight: the preload of layer l is
  issued when the previous preload is done and the compute chain *reaches* layer ``issue_at`` (``issue_at = l - 1``:
  the read overlaps the previous layer's compute; ``issue_at = l``: no overlap; ``issue_at < 0``: at the start of
  the step). A layer whose weights arrive with another layer's read names it in ``ready_with``.
- **the compute chain**, per layer: wait for its preload, read ``on_demand`` extents, run ``transfers`` over links,
  copy ``memmgmt_bytes`` within the window's memory, run ``ops`` on the plan's processor. ``concurrent`` ops need
  none of that: they start when the chain reaches the layer and ``ops`` wait for them too (a parallel-attention
  model's attention runs while its FFN rows are read).
- A read lands in the memory flash reads into; if the processor computes out of another memory (a GPU's VRAM) the
  same bytes cross the link between them alongside the read (a transfer job issued with it, charged as I/O).

Devices know nothing of models: a plan speaks only in extents, bytes and :class:`~sim.devices.processor.Op`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sim.devices.processor import Op
from sim.engine.graph import NO_EXTENTS, Graph
from sim.engine.placement import Placement


@dataclass(frozen=True, slots=True)
class Transfer:
    """Bytes moved over the link between two memories (e.g. ``dram`` -> ``vram``)."""

    src: str
    dst: str
    nbytes: float
    tag: str = "xfer"


@dataclass(slots=True)
class LayerPlan:
    layer: int
    issue_at: int
    preload: np.ndarray = field(default_factory=lambda: NO_EXTENTS)  # [n, 2] int64 (offset, length)
    ready_with: int | None = None
    on_demand: np.ndarray = field(default_factory=lambda: NO_EXTENTS)  # [n, 2] int64
    transfers: tuple[Transfer, ...] = ()
    memmgmt_bytes: float = 0.0
    coalesce: bool = True  # the reader merges adjacent extents into one request (False: one request each)
    ops: tuple[Op, ...] = ()
    processor: str = "cpu"
    concurrent: tuple[Op, ...] = ()  # run from the chain's arrival at the layer, beside its loads; ops wait for them


Shape = tuple  # what decides a plan's jobs and their dependencies (see _shape)
Source = tuple[int, str, int]  # (plan index, role, transfer index) a job's payload comes from


class Pipeline:
    """Builds step graphs from layer plans. The jobs and their dependencies depend only on the plans' shapes (which
    steps each layer has), their payloads on the plans' contents (extents, bytes, ops): a policy's plans have the
    same shapes step after step, so the dependency structure is worked out once per shape and refilled."""

    MAX_SHAPES = 256  # distinct plan shapes remembered (a few per policy; more means the memo is not helping)

    def __init__(self, placement: Placement):
        self.placement = placement
        self._memo: dict[tuple[Shape, ...], tuple[Graph, list[Source]]] = {}

    def graph(self, plans: Sequence[LayerPlan]) -> Graph:
        """The step's jobs with the dependencies of the module docstring (plans in layer order)."""
        key = tuple(_shape(p) for p in plans)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= self.MAX_SHAPES:
                self._memo.clear()
            found = self._memo[key] = _structure(plans, self.placement)
        template, sources = found
        return template.with_payloads([self._payload(plans[i], role, k) for i, role, k in sources])

    def _payload(self, plan: LayerPlan, role: str, k: int) -> tuple:
        p = self.placement
        if role == "preload" or role == "on-demand":
            return (plan.preload if role == "preload" else plan.on_demand), plan.coalesce
        if role == "preload stage" or role == "on-demand stage":
            extents = plan.preload if role == "preload stage" else plan.on_demand
            return p.stream, p.memory_of(plan.processor), float(extents[:, 1].sum())
        if role == "transfer":
            x = plan.transfers[k]
            return x.src, x.dst, float(x.nbytes)
        if role == "copy":
            return p.window, float(plan.memmgmt_bytes)
        if role == "concurrent":
            return plan.processor, plan.concurrent
        return plan.processor, plan.ops


def _shape(plan: LayerPlan) -> Shape:
    return (
        plan.layer,
        plan.issue_at,
        plan.preload.shape[0] > 0,
        plan.ready_with,
        plan.on_demand.shape[0] > 0,
        tuple((x.src, x.dst, x.tag) for x in plan.transfers),
        plan.memmgmt_bytes > 0,
        len(plan.ops) > 0,
        plan.processor,
        plan.coalesce,
        len(plan.concurrent) > 0,
    )


def _structure(plans: Sequence[LayerPlan], placement: Placement) -> tuple[Graph, list[Source]]:
    """The graph of ``plans`` and, per job, where its payload comes from."""
    g, sources = Graph(), []
    frontier: list[int] = []  # the jobs that end the compute chain so far (empty: the step's start)
    reached: dict[int, list[int]] = {}  # layer -> the frontier when the chain reached it
    loaded: dict[int, list[int]] = {}  # layer -> its preload's jobs (read, staging)
    loader: list[int] = []  # the previous preload's jobs: the next one waits for them
    pending = [(i, p) for i, p in enumerate(plans) if p.preload.shape[0]]
    next_preload = 0

    def read(i: int, plan: LayerPlan, extents: np.ndarray, after: list[int], what: str) -> list[int]:
        """A read (and its staging to the processor's memory, alongside it); returns the jobs to wait for."""
        jobs = [g.read(extents, after, f"L{plan.layer} {what}", plan.coalesce)]
        sources.append((i, what, 0))
        compute = placement.memory_of(plan.processor)
        if compute != placement.stream:
            nbytes = float(extents[:, 1].sum())
            jobs.append(g.transfer(placement.stream, compute, nbytes, after, f"L{plan.layer} stage", stage="io"))
            sources.append((i, f"{what} stage", 0))
        return jobs

    for i, plan in enumerate(plans):
        reached[plan.layer] = frontier
        while next_preload < len(pending) and pending[next_preload][1].issue_at <= plan.layer:
            j, p = pending[next_preload]
            gate = reached[p.issue_at] if p.issue_at >= 0 else []
            loader = loaded[p.layer] = read(j, p, p.preload, loader + gate, "preload")
            next_preload += 1
        if plan.preload.shape[0] and plan.layer not in loaded:
            raise ValueError(f"layer {plan.layer}: preload issue_at={plan.issue_at} is after the layer itself")
        wait = plan.layer if plan.preload.shape[0] else plan.ready_with
        beside = []  # ops that run while the layer's weights arrive
        if plan.concurrent:
            beside = [g.run(plan.processor, plan.concurrent, frontier, f"L{plan.layer} beside")]
            sources.append((i, "concurrent", 0))
        after = frontier + loaded[wait] if wait is not None else frontier
        if plan.on_demand.shape[0]:
            after = read(i, plan, plan.on_demand, after, "on-demand")
        for k, x in enumerate(plan.transfers):
            after = [g.transfer(x.src, x.dst, x.nbytes, after, x.tag)]
            sources.append((i, "transfer", k))
        if plan.memmgmt_bytes > 0:
            after = [g.copy(placement.window, plan.memmgmt_bytes, after, f"L{plan.layer} memmgmt")]
            sources.append((i, "copy", 0))
        after = after + beside
        if plan.ops:
            after = [g.run(plan.processor, plan.ops, after, f"L{plan.layer}")]
            sources.append((i, "run", 0))
        frontier = after
    return g, sources
