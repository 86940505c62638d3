"""Processor-sharing (fluid fair-share) server: the contention model under flash, links and memcpy.

Modelled: work measured in seconds of exclusive service; with n jobs active each progresses at 1/n speed
(egalitarian processor sharing, work conserving). Not modelled: per-byte or per-request events, weights or
priorities between jobs, switching overhead.

Implementation: a virtual clock ``V`` counts the service each active job has received since the last time
the server was empty; it advances at rate 1/n. A job arriving at virtual time V with work w finishes when V
reaches its tag V + w, so the active set is a heap of (tag, submission seq). Every arrival or completion
schedules ONE SimPy timeout for the earliest tag; an older timeout that fires later is recognised as stale by
a generation counter and ignored. Jobs whose tags are equal (equal work submitted at the same instant)
complete at the same instant in submission order. When the scheduled completion instant is reached (by its
timeout, or by an arrival at that very instant) V is set to exactly the due tag rather than advanced by
arithmetic, so float rounding can neither move a completion nor spin on zero-length timeouts.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

import simpy


class FairShare:
    """Processor-sharing server over work measured in seconds of exclusive service: n concurrent jobs each
    progress at 1/n speed (fluid model). One SimPy timeout per (re)schedule; stale timeouts ignored via a
    generation counter. No per-byte or per-neuron events."""

    def __init__(self, env: simpy.Environment, name: str):
        self.env = env
        self.name = name
        self._jobs: list[tuple[float, int, simpy.Event, Callable[[], Any] | None]] = []  # (tag, seq, event, result)
        self._seq = 0
        self._vclock = 0.0  # service received per active job since the server was last empty, s
        self._last_s = 0.0  # sim time at which _vclock was last brought up to date
        self._next_s = math.inf  # sim time of the scheduled next completion
        self._gen = 0  # generation of the scheduled timeout; older timeouts are stale
        self._busy_s = 0.0  # closed busy periods, s
        self._busy_since = 0.0
        self._job_s = 0.0  # integral of n_active over time (job-seconds), for Little's law
        self.n_submitted = 0
        self.n_completed = 0

    @property
    def n_active(self) -> int:
        return len(self._jobs)

    @property
    def busy_time_s(self) -> float:
        """Integral of the time with >= 1 active job, up to now."""
        open_s = self.env.now - self._busy_since if self._jobs else 0.0
        return self._busy_s + open_s

    @property
    def job_seconds(self) -> float:
        """Integral of n_active over time up to now; divided by elapsed time it is the mean number in system."""
        return self._job_s + len(self._jobs) * (self.env.now - self._last_s)

    def submit(
        self, work_s: float, done: simpy.Event | None = None, result: Callable[[], Any] | None = None
    ) -> simpy.Event:
        """Start a job needing ``work_s`` seconds of exclusive service; the event succeeds when it is done.

        Devices may pass the (untriggered) event to succeed and a ``result()`` called at completion time for
        its value, so that a read or transfer costs no extra SimPy event on top of the job's own.
        """
        if not work_s >= 0.0:
            raise ValueError(f"{self.name}: work_s(={work_s!r}) must be >= 0")
        done = self.env.event() if done is None else done
        self.n_submitted += 1
        if work_s == 0.0:
            self.n_completed += 1
            return done.succeed(result() if result else None)
        self._advance()
        if not self._jobs:
            self._busy_since = self.env.now
        heapq.heappush(self._jobs, (self._vclock + work_s, self._seq, done, result))
        self._seq += 1
        self._reschedule()
        return done

    def _advance(self) -> None:
        """Bring the virtual clock to now and complete every job whose tag it has reached."""
        now = self.env.now
        n = len(self._jobs)
        if n:
            self._job_s += n * (now - self._last_s)
            if now >= self._next_s:
                self._vclock = self._jobs[0][0]  # exactly the tag the pending completion was scheduled for
            else:
                self._vclock += (now - self._last_s) / n
        self._last_s = now
        while self._jobs and self._jobs[0][0] <= self._vclock:
            _, _, done, result = heapq.heappop(self._jobs)
            self.n_completed += 1
            done.succeed(result() if result else None)
        if not self._jobs and n:
            self._busy_s += now - self._busy_since
            self._vclock = 0.0  # restart the virtual clock so tags stay small (precision)

    def _reschedule(self) -> None:
        self._gen += 1
        if not self._jobs:
            self._next_s = math.inf
            return
        delay = (self._jobs[0][0] - self._vclock) * len(self._jobs)
        timeout = self.env.timeout(delay, value=self._gen)
        self._next_s = self.env.now + delay  # the same float SimPy computes for the timeout's time
        timeout.callbacks.append(self._on_timeout)

    def _on_timeout(self, event: simpy.Event) -> None:
        if event.value != self._gen:
            return  # stale: an arrival or completion rescheduled since
        self._advance()
        self._reschedule()
