"""Runs one step's job graph (:mod:`sim.engine.graph`) on the devices and books what each job did.

**The event path** (every graph can take it). Each job is issued to its device the moment the last job it waits
for completes -- a callback on the device's event, no SimPy process per job. Jobs freed by the same completion are
issued in job order; otherwise same-time issues follow the order in which SimPy processes the completions (the
device rules in ``sim/devices/__init__.py``). The step ends when its last job ends.

**The closed-form path** (a shortcut inside the engine, chosen per step). Before issuing anything the executor
computes the schedule each job would have alone on its device -- a job is issued when its last dependency ends, a
read or transfer enters its server after its latency, a processor runs one batch at a time -- and checks that no
two jobs of the step use one device at once and that nothing else in the environment is due before the step would
end (``env.peek()``). Then nothing can contend, the event path would reach these very times (the same float
operations), and the executor books them and advances time with one timeout. Otherwise it takes the event path.
``closed_form=False`` turns the shortcut off; tests run both and compare them, ``benchmarks/bench_engine.py``
measures what it buys. It uses only SimPy's public API (``peek``, ``timeout``).

Booking (both paths): per job its issue, server-entry and end times; per step the bytes of each device counter,
the busy time of each device track (the union of its jobs' service intervals), the time breakdown of
:func:`sim.engine.timing.breakdown`, and one span per job on its device track when a recorder is on.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import simpy

from sim.devices import Devices, Priced
from sim.engine.graph import Graph
from sim.engine.timing import breakdown, union_s
from sim.stats.recorder import NullRecorder, Recorder


@dataclass(slots=True)
class StepTimes:
    """What one step took: its span, seconds per stage of the breakdown, bytes per counter, busy time per track."""

    start_s: float
    end_s: float
    stage_s: dict[str, float]  # compute, memmgmt, xfer, io, idle: sums to end_s - start_s
    bytes: dict[str, float]  # flash_bytes, <link>_<src>_to_<dst>_bytes, <memory>_copy_bytes
    busy_s: dict[str, float]  # device track -> seconds with at least one job in service
    closed_form: bool  # took the closed-form path
    bound_s: float  # analytic lower bound: max(critical path of latency + work, the busiest device's work)

    @property
    def total_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(slots=True)
class _Job:
    """A graph job resolved against the devices."""

    device: object  # what two jobs must not share on the closed-form path: a FairShare server or a Processor
    track: str  # timeline track and busy-time key
    latency_s: float  # pure delay before the job enters its device
    work_s: float  # seconds of exclusive service
    counter: str  # byte counter it adds to ("" for kernels)
    nbytes: float
    priced: Priced | None = None  # reads only


def lower_bound_s(graph: Graph, jobs: list[_Job]) -> float:
    """The step's analytic lower bound: no schedule beats its critical path (each job's latency + exclusive work,
    along the dependencies) nor its busiest device (the work of all jobs sharing it, bytes / bandwidth and
    FLOPs or bytes / peak). The gap between it and the simulated time is contention, queueing and what the
    pipeline could not overlap."""
    finish = [0.0] * len(jobs)
    work: dict[int, float] = {}
    for i, job in enumerate(jobs):
        ready = max((finish[d] for d in graph.after[i]), default=0.0)
        finish[i] = ready + job.latency_s + job.work_s
        work[id(job.device)] = work.get(id(job.device), 0.0) + job.work_s
    return max(max(finish, default=0.0), max(work.values(), default=0.0))


class Executor:
    """Runs step graphs on ``devices``; ``closed_form``: allow the shortcut of the module docstring."""

    def __init__(
        self, env: simpy.Environment, devices: Devices, recorder: Recorder | None = None, closed_form: bool = True
    ):
        self.env, self.devices, self.closed_form = env, devices, closed_form
        self.recorder = recorder if recorder is not None else NullRecorder()
        self.n_steps = 0
        self.n_closed_form = 0

    def counters(self) -> list[str]:
        """Every byte counter a step can report (so each step's row has them all)."""
        devices = self.devices
        names = ["flash_bytes"]
        names += [f"{link.name}_{a}_to_{b}_bytes" for link in devices.links.values() for a, b in link.directions]
        return names + [f"{memory}_copy_bytes" for memory in devices.memories]

    def run(self, graph: Graph) -> Generator[simpy.Event, None, StepTimes]:
        """SimPy process body: run ``graph`` from now; returns its :class:`StepTimes`."""
        env, n = self.env, len(graph)
        jobs = self._resolve(graph)
        start_s = env.now
        times = self._closed_form(graph, jobs, start_s) if self.closed_form else None
        if times is not None:
            issue, enter, end = times
            step_end = max(end, default=start_s)
            if step_end > start_s:
                yield env.timeout(step_end - start_s)
            self.n_closed_form += 1
        else:
            issue, enter, end = [start_s] * n, [start_s] * n, [start_s] * n
            if n:
                yield self._events(graph, jobs, issue, enter, end)
        self.n_steps += 1
        return self._book(graph, jobs, start_s, max(end, default=start_s), issue, enter, end, times is not None)

    # -- resolving jobs against devices ---------------------------------------------------------------------------

    def _resolve(self, graph: Graph) -> list[_Job]:
        devices = self.devices
        flash = devices.flash
        priced: dict[int, Priced] = {}
        reads: dict[bool, list[int]] = {True: [], False: []}  # merge mode -> its reads
        for i, kind in enumerate(graph.kind):
            if kind == "read":
                reads[graph.payload[i][1]].append(i)
        for merge, idx in reads.items():  # all reads of the step priced in one vectorised pass per merge mode
            if idx:
                priced.update(zip(idx, flash.price([graph.payload[i][0] for i in idx], merge), strict=True))
        jobs = []
        run_s: dict[tuple[int, int], float] = {}  # (processor, ops) identity -> seconds: layers share op tuples
        for i, kind in enumerate(graph.kind):
            payload = graph.payload[i]
            if kind == "read":
                latency_s, work_s = flash.service_s(priced[i])
                jobs.append(
                    _Job(flash.server, flash.name, latency_s, work_s, "flash_bytes", priced[i].nbytes, priced[i])
                )
            elif kind == "transfer":
                src, dst, nbytes = payload
                link = devices.link_between(src, dst)
                if link is None:
                    raise ValueError(f"job {graph.tag[i]!r}: no link joins memories {src!r} and {dst!r}")
                server = link.channel(src, dst)
                latency_s, work_s = link.service_s(src, dst, nbytes)
                jobs.append(_Job(server, server.name, latency_s, work_s, f"{link.name}_{src}_to_{dst}_bytes", nbytes))
            elif kind == "copy":
                memory = devices.memories[payload[0]]
                copier = memory.copier
                jobs.append(_Job(copier, copier.name, 0.0, memory.copy_s(payload[1]), f"{memory.name}_copy_bytes",
                                 payload[1]))  # fmt: skip
            else:
                proc = devices.processors[payload[0]]
                key = (id(proc), id(payload[1]))
                work_s = run_s.get(key)
                if work_s is None:
                    work_s = run_s[key] = proc.service_s(payload[1])
                jobs.append(_Job(proc, proc.name, 0.0, work_s, "", 0.0))
        return jobs

    # -- the closed-form path -------------------------------------------------------------------------------------

    def _closed_form(self, graph: Graph, jobs: list[_Job], start_s: float):
        """(issue, enter, end) per job if the step runs without contention (module docstring), else None."""
        n = len(graph)
        free_at: dict[int, float] = {}  # id(device) -> end of its last job in this step
        issue, enter, end = [0.0] * n, [0.0] * n, [0.0] * n
        for i, job in enumerate(jobs):
            t = start_s
            for dep in graph.after[i]:
                if end[dep] > t:
                    t = end[dep]
            if graph.kind[i] == "run":  # Processor.run: a timeout of (start + work) - now, added to now
                e0, e1 = t, t + ((t + job.work_s) - t)
            else:  # a latency timeout, then a FairShare job alone on its server: done at entry + work
                e0 = t + job.latency_s if job.latency_s > 0 else t
                e1 = e0 + job.work_s if job.work_s > 0 else e0
            key = id(job.device)
            if e0 < free_at.get(key, -1.0):
                return None  # two jobs would share a device: contention, take the event path
            if e1 > e0 or graph.kind[i] == "run":
                free_at[key] = e1
            issue[i], enter[i], end[i] = t, e0, e1
        if n and max(end) >= self.env.peek():
            return None  # something else is due before this step would end
        return issue, enter, end

    # -- the event path -------------------------------------------------------------------------------------------

    def _events(self, graph: Graph, jobs: list[_Job], issue: list, enter: list, end: list) -> simpy.Event:
        """Issue every job when its dependencies are done; the returned event fires when all have ended."""
        env, n = self.env, len(graph)
        waiting = [len(a) for a in graph.after]
        children: list[list[int]] = [[] for _ in range(n)]
        for i, after in enumerate(graph.after):
            for dep in after:
                children[dep].append(i)
        done = env.event()
        left = [n]

        def finish(i: int) -> None:
            end[i] = env.now
            left[0] -= 1
            for child in children[i]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    start(child)
            if left[0] == 0:
                done.succeed()

        def start(i: int) -> None:
            job = jobs[i]
            issue[i] = env.now
            enter[i] = env.now + job.latency_s if job.latency_s > 0 else env.now
            self._issue(graph, job, i).callbacks.append(lambda _event, i=i: finish(i))

        for i in range(n):
            if waiting[i] == 0:
                start(i)
        return done

    def _issue(self, graph: Graph, job: _Job, i: int) -> simpy.Event:
        """The device verb of job ``i``."""
        kind, payload = graph.kind[i], graph.payload[i]
        if kind == "read":
            return self.devices.flash.read(job.priced)
        if kind == "transfer":
            src, dst, nbytes = payload
            return self.devices.link_between(src, dst).transfer(src, dst, nbytes)
        if kind == "copy":
            return self.devices.memories[payload[0]].copy(payload[1])
        return job.device.run(payload[1], job.work_s)

    # -- booking --------------------------------------------------------------------------------------------------

    def _book(self, graph: Graph, jobs: list[_Job], start_s: float, end_s: float, issue: list, enter: list,
              end: list, closed_form: bool) -> StepTimes:  # fmt: skip
        nbytes: dict[str, float] = {}
        service: dict[str, list[tuple[float, float]]] = {}
        for i, job in enumerate(jobs):
            if job.counter:
                nbytes[job.counter] = nbytes.get(job.counter, 0.0) + job.nbytes
            if end[i] > enter[i]:
                service.setdefault(job.track, []).append((enter[i], end[i]))
        busy = {track: union_s(intervals) for track, intervals in service.items()}
        stage_s = breakdown(graph.stage, issue, end, start_s, end_s)
        recorder = self.recorder
        if recorder.enabled:
            for i, job in enumerate(jobs):
                if end[i] > issue[i] or graph.kind[i] == "run":
                    recorder.span(job.track, graph.tag[i], issue[i], end[i], job.nbytes)
        return StepTimes(start_s, end_s, stage_s, nbytes, busy, closed_form, lower_bound_s(graph, jobs))
