"""The serving loop: pick a step, let the policy plan it, run its graph, advance the requests. One SimPy process.

    while requests remain:
        step = scheduler.next_step(now)          # None: nobody is ready, wait for the next arrival
        kv.hold(step)                             # the KV cache grows by the step's new tokens
        times = run(policy.plan(step))            # the step's job graph on the devices
        finished = scheduler.complete(step, end)  # tokens emitted, requests done
        kv.release(finished)

Steps never overlap (the model runs one forward pass at a time); what overlaps happens inside a step's graph.
Requests that arrive during a step wait for its end (iteration-level scheduling).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import simpy

from sim.devices.memory import Memory
from sim.engine.executor import Executor, StepTimes
from sim.engine.requests import Request, Scheduler, Step
from sim.policies.base import emitted_tokens

if TYPE_CHECKING:
    from sim.policies.base import Policy

KV_TENANT = "kv_cache"


class KVCache:
    """The KV cache as a tenant of its memory: each request holds ``bytes_per_token`` per cached token, for the
    tokens ``held_tokens`` says it keeps of those it has seen (the policy's eviction). It counts against the
    memory's capacity, not against the weights' budget (as the papers' DRAM columns count it)."""

    def __init__(self, memory: Memory, bytes_per_token: float, held_tokens: Callable[[int], float] = float):
        self.memory, self.bytes_per_token, self.held_tokens = memory, bytes_per_token, held_tokens
        self._held: dict[int, float] = {}  # request id -> bytes
        self.peak_bytes = 0.0

    @property
    def held_bytes(self) -> float:
        return sum(self._held.values())

    def hold(self, step: Step) -> None:
        """Make room for every request of ``step`` to hold its tokens once the step is done."""
        for rid, kv, new in zip(step.requests, step.kv_tokens, step.new_tokens, strict=True):
            need = self.held_tokens(kv + new) * self.bytes_per_token - self._held.get(rid, 0.0)
            if need > 0:
                self.memory.allocate(KV_TENANT, need, budgeted=False)
                self._held[rid] = self._held.get(rid, 0.0) + need
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)

    def release(self, requests: list[Request]) -> None:
        for r in requests:
            nbytes = self._held.pop(r.id, 0.0)
            if nbytes:
                self.memory.free(KV_TENANT, nbytes)


def serve(
    env: simpy.Environment,
    executor: Executor,
    policy: Policy,
    scheduler: Scheduler,
    kv: KVCache,
    on_step: Callable[[Step, StepTimes, tuple[int, ...]], None],
) -> Generator[simpy.Event, None, None]:
    """SimPy process body: run every request of ``scheduler`` to completion (see the module docstring)."""
    while not scheduler.done:
        step = scheduler.next_step(env.now)
        if step is None:
            yield env.timeout(scheduler.next_arrival_s() - env.now)
            continue
        kv.hold(step)
        graph = policy.plan(step)
        times = yield from executor.run(graph)
        emitted = scheduler.capped(step, emitted_tokens(policy, step))  # decode: 1 each unless the policy speculates
        finished = scheduler.complete(step, times.end_s, emitted)
        on_step(step, times, emitted)
        kv.release(finished)
