"""Device hot-path speed: SimPy events per second through FairShare, flash.read() calls per second.

``run()`` returns ``(name, value, unit)`` rows; ``python benchmarks/bench_devices.py`` prints them as
``name value unit`` lines. Wall-clock figures, so they belong here and never in a test.
"""

from __future__ import annotations

import time

import numpy as np
import simpy

from sim.config.hardware import FlashSpec
from sim.devices import FairShare, Flash

N_SUBMITS = 50_000
N_READS = 5_000
EXTENTS_PER_READ = 400


def _step_all(env: simpy.Environment) -> int:
    """Run to the end, counting the SimPy events processed."""
    n = 0
    try:
        while True:
            env.step()
            n += 1
    except simpy.core.EmptySchedule:
        return n


def bench_fairshare(n_jobs: int = N_SUBMITS, seed: int = 0) -> list[tuple[str, float, str]]:
    """Poisson arrivals at 90 % load (so several jobs share the server): every event that SimPy processes."""
    rng = np.random.default_rng(seed)
    gaps_s, work_s = rng.exponential(1 / 0.9, n_jobs), rng.exponential(1.0, n_jobs)
    env = simpy.Environment()
    server = FairShare(env, "bench")

    def source():
        for gap, work in zip(gaps_s, work_s, strict=True):
            yield env.timeout(gap)
            server.submit(float(work))

    env.process(source())
    wall0 = time.perf_counter()
    n_events = _step_all(env)
    wall_s = time.perf_counter() - wall0
    return [
        ("fairshare_events_per_s", n_events / wall_s, "events/s"),
        ("fairshare_submits_per_s", n_jobs / wall_s, "submits/s"),
        ("fairshare_events_per_submit", n_events / n_jobs, "events"),
    ]


def _flash() -> Flash:
    curve = {
        "chunk_sizes": ["4 KiB", "32 KiB", "256 KiB", "2 MiB"],
        "queue_depths": [1, 4, 16, 64],
        "throughput": [[f"{(q + 1) * c} MB/s" for c in (100, 400, 900, 1500)] for q in range(4)],
    }
    spec = FlashSpec(capacity="1 TB", latency="100 us", max_queue_depth=32, curve=curve)
    return Flash(simpy.Environment(), spec)


def bench_flash_reads(n_reads: int = N_READS, seed: int = 0) -> list[tuple[str, float, str]]:
    """flash.read() of 400 random 8 KiB-row extents each (some adjacent), one after another."""
    rng = np.random.default_rng(seed)
    flash = _flash()
    batches = []
    for _ in range(n_reads):
        rows = np.sort(rng.choice(20_000, EXTENTS_PER_READ, replace=False))  # [400] neuron rows
        batches.append(np.stack([rows * 8192, np.full(rows.size, 8192)], axis=1).astype(np.int64))  # [400, 2]

    def reader():
        for extents in batches:
            yield flash.read(extents)

    wall0 = time.perf_counter()
    flash.env.process(reader())
    n_events = _step_all(flash.env)
    wall_s = time.perf_counter() - wall0
    return [
        ("flash_read_400_extents_per_s", n_reads / wall_s, "reads/s"),
        ("flash_read_events_per_read", n_events / n_reads, "events"),
    ]


def run() -> list[tuple[str, float, str]]:
    return bench_fairshare() + bench_flash_reads()


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
