"""Requests, the steps that advance them, and the scheduler that picks each step.

A request arrives at ``arrival_s`` with ``prompt_tokens`` to prefill and ``decode_tokens`` to generate. The model
runs one forward pass at a time (a *step*) over a batch of running requests:

- a **prefill** step processes a chunk of prompt tokens (at most ``chunk_tokens`` over all its requests; a long
  prompt is split over several steps);
- a **decode** step appends one token to every running request that has prompt done and tokens left (a policy
  that speculates says how many each request got: :func:`sim.policies.base.emitted_tokens`).

The scheduler (continuous batching, iteration-level, prefill first): up to ``max_batch`` requests run at once and
are admitted in arrival order as slots free up; a step is a prefill chunk while any running request has prompt
left, else a decode step over all of them. A request's first token comes out of its first decode step (so a
request's decode steps see KV lengths prompt, prompt + 1, ...; TTFT = that step's end - arrival). With
``chunk_tokens = 0`` prefill is not simulated: a prompt is in the KV cache when its request arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Phase = Literal["prefill", "decode"]


@dataclass(slots=True)
class Request:
    id: int
    arrival_s: float
    prompt_tokens: int
    decode_tokens: int
    prefilled: int = 0  # prompt tokens in the KV cache
    decoded: int = 0  # tokens generated
    first_token_s: float | None = None
    finished_s: float | None = None

    @property
    def kv_tokens(self) -> int:
        return self.prefilled + self.decoded


@dataclass(frozen=True, slots=True)
class Step:
    """One forward pass: which requests it advances, from which KV length, by how many tokens."""

    index: int  # steps run before this one
    phase: Phase
    requests: tuple[int, ...]  # request ids
    kv_tokens: tuple[int, ...]  # per request: tokens in its KV cache before the step
    new_tokens: tuple[int, ...]  # per request: tokens the step computes (decode: 1)
    positions: tuple[int, ...]  # per request: tokens it generated before the step (decode: its decode step index)

    @property
    def batch(self) -> int:
        return len(self.requests)

    @property
    def n_tokens(self) -> int:
        return sum(self.new_tokens)


class Scheduler:
    """Continuous batching over ``requests`` (see the module docstring)."""

    def __init__(self, requests: Sequence[Request], max_batch: int, chunk_tokens: int):
        if max_batch < 1 or chunk_tokens < 0:
            raise ValueError(f"max_batch(={max_batch}) must be >= 1 and chunk_tokens(={chunk_tokens}) >= 0")
        self.requests = list(requests)
        self.max_batch, self.chunk_tokens = max_batch, chunk_tokens
        self._arrivals = deque(sorted(self.requests, key=lambda r: (r.arrival_s, r.id)))
        self._waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.n_steps = 0
        if chunk_tokens == 0:
            for r in self.requests:
                r.prefilled = r.prompt_tokens

    @property
    def done(self) -> bool:
        return not (self._arrivals or self._waiting or self.running)

    def next_arrival_s(self) -> float | None:
        return self._arrivals[0].arrival_s if self._arrivals else None

    def next_step(self, now_s: float) -> Step | None:
        """The step to run at ``now_s``, or None if no request is ready (wait for :meth:`next_arrival_s`)."""
        while self._arrivals and self._arrivals[0].arrival_s <= now_s:
            self._waiting.append(self._arrivals.popleft())
        while self._waiting and len(self.running) < self.max_batch:
            self.running.append(self._waiting.popleft())
        prefill = [r for r in self.running if r.prefilled < r.prompt_tokens]
        if prefill:
            return self._prefill(prefill)
        if not self.running:
            return None
        rs = self.running
        return self._step("decode", rs, [1] * len(rs))

    def _prefill(self, pending: list[Request]) -> Step:
        chosen, chunk, budget = [], [], self.chunk_tokens
        for r in pending:
            n = min(r.prompt_tokens - r.prefilled, budget)
            if n == 0:
                break
            chosen.append(r)
            chunk.append(n)
            budget -= n
        return self._step("prefill", chosen, chunk)

    def _step(self, phase: Phase, rs: list[Request], new: list[int]) -> Step:
        ids, kv, pos = (tuple(getattr(r, a) for r in rs) for a in ("id", "kv_tokens", "decoded"))
        return Step(self.n_steps, phase, ids, kv, tuple(new), pos)

    def capped(self, step: Step, emitted: Sequence[int]) -> tuple[int, ...]:
        """``emitted`` per request of a decode step, none past a request's ``decode_tokens``."""
        left = {r.id: r.decode_tokens - r.decoded for r in self.running}
        return tuple(min(e, left[rid]) for rid, e in zip(step.requests, emitted, strict=True))

    def complete(self, step: Step, end_s: float, emitted: Sequence[int] | None = None) -> list[Request]:
        """Advance the step's requests (it ended at ``end_s``); returns the requests it finished. ``emitted``: the
        tokens each request of a decode step got (default 1 each; a speculative round may emit several)."""
        self.n_steps += 1
        by_id = {r.id: r for r in self.running}
        finished = []
        emitted = emitted if emitted is not None else [1] * step.batch
        for rid, n, e in zip(step.requests, step.new_tokens, emitted, strict=True):
            r = by_id[rid]
            if step.phase == "prefill":
                r.prefilled += n
                continue
            r.decoded += min(e, r.decode_tokens - r.decoded)
            if r.first_token_s is None:
                r.first_token_s = end_s
            if r.decoded >= r.decode_tokens:
                r.finished_s = end_s
                finished.append(r)
        if finished:
            self.running = [r for r in self.running if r.finished_s is None]
        return finished
