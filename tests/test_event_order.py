"""Pins the same-time order guarantees written in sim/devices/__init__.py (numbered as there)."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from sim.config.hardware import FlashSpec, LinkSpec, MemorySpec, ProcessorSpec
from sim.devices import FairShare, Flash, Link, Memory, Op, Processor

LATENCY_S, THROUGHPUT_BPS = 1e-3, 1e9  # flat curve: every chunk and queue depth reads at 1 GB/s


def flash(env: simpy.Environment, latency: str = "1 ms") -> Flash:
    curve = {"chunk_sizes": ["4 KiB"], "queue_depths": [1], "throughput": [["1 GB/s"]]}
    spec = FlashSpec(capacity="1 TB", latency=latency, max_queue_depth=4, curve=curve)
    return Flash(env, spec)


def cpu(env: simpy.Environment) -> Processor:
    spec = ProcessorSpec(
        kind="cpu", memory="dram", peak_flops={"fp16": "1 TFLOPS"}, mem_bandwidth="1 TB/s", overhead="0 s"
    )
    return Processor(env, "cpu", spec)


def one_extent(nbytes: int) -> np.ndarray:
    return np.array([[0, nbytes]], dtype=np.int64)


def read(disk: Flash, nbytes: int) -> simpy.Event:
    return disk.read(disk.price_one(one_extent(nbytes)))


def ends_at(env: simpy.Environment, event: simpy.Event) -> list[float]:
    """A list that gets the instant ``event`` is processed."""
    out: list[float] = []
    event.callbacks.append(lambda _: out.append(env.now))
    return out


def test_1_waiter_resumes_at_the_completion_instant_in_yield_order():
    env = simpy.Environment()
    disk, proc = flash(env), cpu(env)
    done = read(disk, 10**6)
    read_end = ends_at(env, done)
    log: list[tuple[str, float]] = []

    def waiter(name):
        yield done
        log.append((name, env.now))
        yield proc.run([Op("ffn", 1e9, 0.0)])  # computes from the read's end, with no gap
        log.append((f"{name} computed", env.now))

    env.process(waiter("first"))
    env.process(waiter("second"))
    env.run()
    end_s = LATENCY_S + 1e6 / THROUGHPUT_BPS
    assert [name for name, _ in log] == ["first", "second", "first computed", "second computed"]
    assert log[0][1] == log[1][1] == read_end[0] == pytest.approx(end_s, rel=1e-9)
    assert log[2][1] == pytest.approx(end_s + 1e-3, rel=1e-9) and log[3][1] == pytest.approx(end_s + 2e-3, rel=1e-9)


def test_1_an_earlier_scheduled_event_at_the_same_time_goes_first():
    env = simpy.Environment()
    disk = flash(env)
    log: list[str] = []
    end_s = LATENCY_S + 1e6 / THROUGHPUT_BPS
    env.timeout(end_s).callbacks.append(lambda _: log.append("timer"))  # scheduled at 0 for the same instant
    read(disk, 10**6).callbacks.append(lambda _: log.append("read"))
    env.run()
    assert log == ["timer", "read"]


@pytest.mark.parametrize("device", ["flash", "link", "copy"])
def test_2_equal_jobs_submitted_together_finish_together_in_submission_order(device):
    env = simpy.Environment()
    disk = flash(env)
    link_spec = LinkSpec(ends=("dram", "vram"), bandwidth_forward="1 GB/s", bandwidth_reverse="1 GB/s", latency="1 us")
    pcie = Link(env, "pcie", link_spec)
    dram = Memory(env, "dram", MemorySpec(capacity="8 GB", bandwidth="50 GB/s", copy_bandwidth="1 GB/s"))
    start = {
        "flash": lambda: read(disk, 10**6),
        "link": lambda: pcie.transfer("dram", "vram", 1e6),
        "copy": lambda: dram.copy(1e6),
    }[device]
    log: list[tuple[str, float]] = []

    def job(name):
        yield start()
        log.append((name, env.now))

    for name in ("a", "b", "c"):
        env.process(job(name))
    env.run()
    assert [name for name, _ in log] == ["a", "b", "c"]
    assert log[0][1] == log[1][1] == log[2][1]


def test_2_fair_share_completes_in_order_of_finish_time_then_submission():
    env = simpy.Environment()
    server = FairShare(env, "x")
    log: list[str] = []
    for name, work_s in [("long", 3.0), ("short", 1.0), ("short again", 1.0), ("mid", 2.0)]:
        server.submit(work_s).callbacks.append(lambda _, name=name: log.append(name))
    env.run()
    assert log == ["short", "short again", "mid", "long"]


@pytest.mark.parametrize("arrival_first", [True, False])
def test_3_an_arrival_does_not_move_a_completion_due_at_the_same_instant(arrival_first):
    env = simpy.Environment()
    server = FairShare(env, "x")
    done: dict[str, float] = {}

    def submit(name, work_s):
        server.submit(work_s).callbacks.append(lambda _: done.__setitem__(name, env.now))

    def arrive_at_1():
        env.timeout(1.0).callbacks.append(lambda _: submit("b", 0.5))

    if arrival_first:  # B's timer is scheduled before A's completion timeout, so B's submit runs first at t=1
        arrive_at_1()
    submit("a", 1.0)
    if not arrival_first:
        arrive_at_1()
    env.run()
    assert done["a"] == 1.0
    assert done["b"] == pytest.approx(1.5, rel=1e-12)
    assert server.busy_time_s == pytest.approx(1.5, rel=1e-12)


def test_3_arrival_at_a_completion_instant_with_inexact_times():
    def run(with_arrival_at_s: float | None) -> dict[str, float]:
        env = simpy.Environment()
        server = FairShare(env, "x")
        done: dict[str, float] = {}

        def submit(name, work_s):
            server.submit(work_s).callbacks.append(lambda _: done.__setitem__(name, env.now))

        if with_arrival_at_s is not None:  # timer scheduled first, so B's submit runs before A2's completion
            env.timeout(with_arrival_at_s).callbacks.append(lambda _: submit("b", 0.3))
        submit("a1", 0.1)
        submit("a2", 0.7)
        env.timeout(0.05).callbacks.append(lambda _: submit("a3", 1 / 3))
        env.run()
        return done

    alone = run(None)  # the exact float instant at which A2 completes when nothing else arrives
    shared = run(alone["a2"])
    assert shared["a2"] == alone["a2"]
    assert shared["b"] == pytest.approx(alone["a2"] + 0.3, rel=1e-12)


def test_3_a_read_meeting_another_read_s_end_runs_alone():
    env = simpy.Environment()
    disk = flash(env)
    transfer_s = 1e6 / THROUGHPUT_BPS
    first = ends_at(env, read(disk, 10**6))
    # issued at transfer_s, so its transfer enters at transfer_s + latency: the instant the first one ends
    env.timeout(transfer_s).callbacks.append(lambda _: read(disk, 10**6))
    env.run()
    assert first[0] == pytest.approx(LATENCY_S + transfer_s, rel=1e-12)
    assert env.now == pytest.approx(LATENCY_S + 2 * transfer_s, rel=1e-12)


def test_4_processor_runs_same_time_calls_in_call_order():
    env = simpy.Environment()
    proc = cpu(env)
    log: list[tuple[str, float]] = []

    def caller(name, flops):
        yield proc.run([Op(name, flops, 0.0)])
        log.append((name, env.now))

    for name, flops in [("slow", 3e9), ("fast", 1e9), ("mid", 2e9)]:
        env.process(caller(name, flops))
    env.run()
    assert [name for name, _ in log] == ["slow", "fast", "mid"]
    assert [t for _, t in log] == pytest.approx([3e-3, 4e-3, 6e-3], rel=1e-12)


def test_5_latency_is_a_delay_before_the_transfer_enters_the_shared_server():
    env = simpy.Environment()
    slow, instant = flash(env), flash(env, latency="0 s")
    read(slow, 4096)
    read(instant, 4096)
    assert (slow.server.n_active, instant.server.n_active) == (0, 1)  # zero latency: inside the call
    env.run(until=LATENCY_S / 2)
    assert slow.server.n_active == 0
    env.run(until=LATENCY_S * 1.001)
    assert slow.server.n_active == 1


def test_5_an_empty_read_succeeds_at_once_without_latency():
    env = simpy.Environment()
    disk = flash(env)
    priced = disk.price_one(np.empty((0, 2), dtype=np.int64))
    done = ends_at(env, disk.read(priced))
    env.run()
    assert env.now == 0 == done[0] and priced == (0.0, 0, 0.0) and disk.service_s(priced) == (0.0, 0.0)
