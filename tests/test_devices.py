"""Devices against closed forms: reads, curve interpolation, merging, fair sharing, roofline, capacity,
pipelines, Little's law. Specs are tiny and hand-made here so these tests do not depend on profile files."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config.hardware import FlashSpec, HardwareProfile, LinkSpec, MemorySpec, ProcessorSpec
from sim.devices import FairShare, Flash, Link, Memory, Op, Processor, build_devices
from sim.errors import CapacityError

KiB, MiB = 1024, 1024 * 1024
LATENCY_S = 100e-6
# qd 1 row and qd 8 row at 4 KiB, 64 KiB, 1 MiB (B/s)
CURVE = {
    "chunk_sizes": ["4 KiB", "64 KiB", "1 MiB"],
    "queue_depths": [1, 8],
    "throughput": [["100 MB/s", "500 MB/s", "1 GB/s"], ["400 MB/s", "2 GB/s", "4 GB/s"]],
}


def flash_spec(**over) -> FlashSpec:
    data = {"capacity": "1 TB", "latency": "100 us", "max_queue_depth": 8, "curve": CURVE} | over
    return FlashSpec(**data)


def memory_spec(capacity="16 GB", copy_bandwidth="10 GB/s") -> MemorySpec:
    return MemorySpec(capacity=capacity, bandwidth="100 GB/s", copy_bandwidth=copy_bandwidth)


def link_spec(latency="2 us") -> LinkSpec:
    return LinkSpec(ends=("dram", "vram"), bandwidth_forward="20 GB/s", bandwidth_reverse="10 GB/s", latency=latency)


def cpu_spec(**over) -> ProcessorSpec:
    data = {
        "kind": "cpu",
        "memory": "dram",
        "peak_flops": {"fp16": "2 TFLOPS", "int8": "8 TFLOPS"},
        "mem_bandwidth": "100 GB/s",
        "overhead": "5 us",
    } | over
    return ProcessorSpec(**data)


def extents(*pairs) -> np.ndarray:
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def finish_times(env: simpy.Environment, events: dict[str, simpy.Event]) -> dict[str, float]:
    done: dict[str, float] = {}
    for name, event in events.items():
        event.callbacks.append(lambda _, name=name: done.__setitem__(name, env.now))
    env.run()
    return done


# --- flash: curve ------------------------------------------------------------------------------------


def test_curve_points_return_the_table_values():
    flash = Flash(simpy.Environment(), flash_spec())
    assert flash.throughput_Bps(64 * KiB, 1) == pytest.approx(500e6, rel=1e-9)
    assert flash.throughput_Bps(1 * MiB, 8) == pytest.approx(4e9, rel=1e-9)
    table = flash.throughput_Bps(np.array([4 * KiB, 64 * KiB, 1 * MiB]), 8)
    assert table == pytest.approx([400e6, 2e9, 4e9], rel=1e-9)


def test_curve_interpolates_in_log_log_space():
    flash = Flash(simpy.Environment(), flash_spec())
    # 16 KiB is half-way between 4 KiB and 64 KiB in log space: geometric mean of 100 and 500 MB/s
    assert flash.throughput_Bps(16 * KiB, 1) == pytest.approx(100e6 * math.sqrt(5), rel=1e-9)
    # qd 2 is a third of the way from qd 1 to qd 8 in log space: 500 MB/s * (2000/500)^(1/3)
    assert flash.throughput_Bps(64 * KiB, 2) == pytest.approx(500e6 * 4 ** (1 / 3), rel=1e-9)
    # both axes: sqrt(5) * 100 MB/s at qd 1, sqrt(5) * 400 MB/s at qd 8, a third of the way in log qd
    assert flash.throughput_Bps(16 * KiB, 2) == pytest.approx(math.sqrt(5) * 100e6 * 4 ** (1 / 3), rel=1e-9)


def test_curve_is_clamped_outside_the_table():
    flash = Flash(simpy.Environment(), flash_spec())
    assert flash.throughput_Bps(512, 1) == pytest.approx(100e6, rel=1e-9)
    assert flash.throughput_Bps(64 * MiB, 1) == pytest.approx(1e9, rel=1e-9)
    assert flash.throughput_Bps(64 * KiB, 64) == pytest.approx(2e9, rel=1e-9)
    assert flash.throughput_Bps(64 * KiB, 0.5) == pytest.approx(500e6, rel=1e-9)


def test_curve_rejects_a_zero_chunk():
    with pytest.raises(ValueError, match=r"flash: chunk_bytes and queue_depth\(=1\) must be > 0"):
        Flash(simpy.Environment(), flash_spec()).throughput_Bps(np.array([4096, 0]), 1)


# --- flash: merging and service time --------------------------------------------------------------------


def test_adjacent_extents_merge():
    merged = Flash.merge_extents(extents((8192, 4096), (0, 4096), (4096, 4096), (20000, 100)))
    assert merged.tolist() == [[0, 12288], [20000, 100]]
    three = extents((0, 4096), (4096, 4096), (65536, 4096))  # 3 extents, 2 adjacent -> 2 requests
    assert Flash(simpy.Environment(), flash_spec()).price_one(three)[1:] == (2, 12288.0)


def test_overlapping_and_contained_extents_merge():
    merged = Flash.merge_extents(extents((0, 100), (50, 100), (120, 10), (400, 0), (300, 5)))
    assert merged.tolist() == [[0, 150], [300, 5]]


def test_merge_rejects_negative_lengths():
    with pytest.raises(ValueError, match="offsets and lengths must be >= 0"):
        Flash.merge_extents(extents((0, 100), (200, -1)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(1, 50)), min_size=1, max_size=40), st.randoms())
def test_merge_preserves_bytes_of_disjoint_extents(gaps_lengths, rnd):
    starts, offset = [], 0
    for gap, length in gaps_lengths:  # disjoint (possibly adjacent) extents, then shuffled
        starts.append((offset + gap, length))
        offset += gap + length
    rnd.shuffle(starts)
    merged = Flash.merge_extents(np.array(starts, dtype=np.int64))
    assert merged[:, 1].sum() == sum(length for _, length in gaps_lengths)
    ends = merged[:, 0] + merged[:, 1]
    assert np.all(merged[1:, 0] > ends[:-1])  # sorted, and neither overlapping nor adjacent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=30))
def test_merge_covers_the_union_of_any_extents(pairs):
    covered = np.zeros(256, dtype=bool)
    for start, length in pairs:
        covered[start : start + length] = True
    merged = Flash.merge_extents(np.array(pairs, dtype=np.int64).reshape(-1, 2))
    union = np.zeros(256, dtype=bool)
    for start, length in merged:
        union[start : start + length] = True
    assert np.array_equal(union, covered)


def test_service_time_uses_merged_sizes_and_queue_depth():
    flash = Flash(simpy.Environment(), flash_spec())
    reqs = extents((0, 4 * KiB), (1 * MiB, 64 * KiB))  # 2 requests -> qd 2
    expected = 4 * KiB / flash.throughput_Bps(4 * KiB, 2) + 64 * KiB / flash.throughput_Bps(64 * KiB, 2)
    assert flash.price_one(reqs) == pytest.approx((expected, 2, 68 * KiB), rel=1e-9)
    at_qd8 = 4 * KiB / 400e6 + 64 * KiB / 2e9
    assert flash.price_one(reqs, queue_depth=8).transfer_s == pytest.approx(at_qd8, rel=1e-9)
    assert flash.service_s(flash.price_one(reqs)) == pytest.approx((LATENCY_S, expected), rel=1e-9)


def test_queue_depth_is_capped_by_the_host():
    flash = Flash(simpy.Environment(), flash_spec(max_queue_depth=4))
    reqs = extents(*[(i * 2 * 64 * KiB, 64 * KiB) for i in range(16)])  # 16 separate requests, qd 4
    expected = 16 * 64 * KiB / (500e6 * 4 ** (2 / 3))
    assert flash.price_one(reqs).transfer_s == pytest.approx(expected, rel=1e-9)


def test_unmerged_read_issues_one_request_per_extent():
    flash = Flash(simpy.Environment(), flash_spec())
    adjacent = extents((0, 16 * KiB), (16 * KiB, 16 * KiB), (32 * KiB, 16 * KiB))  # would merge into one 48 KiB
    merged, separate = flash.price_one(adjacent), flash.price_one(adjacent, merge=False)
    assert (merged.n_requests, separate.n_requests) == (1, 3)
    assert separate.transfer_s == pytest.approx(3 * 16 * KiB / flash.throughput_Bps(16 * KiB, 3), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), max_size=20), min_size=1, max_size=6),
    st.booleans(),
)
def test_pricing_many_batches_equals_pricing_each(batches, merge):
    """Flash.price (all layers' preloads at once) gives the very floats of pricing each batch alone."""
    flash = Flash(simpy.Environment(), flash_spec(max_queue_depth=4))
    arrays = [extents(*[(o * 4 * KiB, n * 4 * KiB) for o, n in b]) for b in batches]
    assert flash.price(arrays, merge) == [flash.price_one(a, merge) for a in arrays]


def test_pricing_rejects_negative_lengths():
    with pytest.raises(ValueError, match="must be >= 0"):
        Flash(simpy.Environment(), flash_spec()).price([extents((0, 4096)), extents((8192, -1))])


# --- flash: reads in simulated time ---------------------------------------------------------------------


def test_one_read_takes_latency_plus_size_over_throughput():
    env = simpy.Environment()
    flash = Flash(env, flash_spec())
    priced = flash.price_one(extents((0, 64 * KiB)))
    finish_times(env, {"read": flash.read(priced)})
    assert env.now == pytest.approx(LATENCY_S + 64 * KiB / 500e6, rel=1e-9)
    assert (priced.nbytes, priced.n_requests) == (64 * KiB, 1)
    assert flash.server.busy_time_s == pytest.approx(64 * KiB / 500e6, rel=1e-9)  # the latency is not service


def test_two_concurrent_equal_reads_each_take_twice_the_transfer():
    env = simpy.Environment()
    flash = Flash(env, flash_spec())
    done = finish_times(env, {name: flash.read(flash.price_one(extents((0, 1 * MiB)))) for name in "ab"})
    expected = LATENCY_S + 2 * MiB / 1e9
    assert done == pytest.approx({"a": expected, "b": expected}, rel=1e-9)


def test_naive_io_over_n_layers_is_n_single_reads():
    env = simpy.Environment()
    flash = Flash(env, flash_spec())
    n_layers, layer_bytes, chunk = 12, 3 * MiB, 256 * KiB

    layer = extents(*[(i * 2 * chunk, chunk) for i in range(layer_bytes // chunk)])  # separate chunks

    def naive():
        for _ in range(n_layers):
            yield flash.read(flash.price_one(layer))

    env.process(naive())
    env.run()
    per_layer_s = LATENCY_S + layer_bytes / flash.throughput_Bps(chunk, 8)
    assert env.now == pytest.approx(n_layers * per_layer_s, rel=1e-9)


# --- fair share and links -------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "s", "b"), [(3.0, 1.0, 3.0), (4.0, 1.0, 1.0), (2.0, 0.5, 1.5)])
def test_staggered_arrival_finishes_at_the_processor_sharing_closed_form(a, s, b):
    env = simpy.Environment()
    server = FairShare(env, "x")
    done: dict[str, float] = {}

    def job(name, at_s, work_s):
        yield env.timeout(at_s)
        yield server.submit(work_s)
        done[name] = env.now

    env.process(job("a", 0.0, a))
    env.process(job("b", s, b))
    env.run()
    first = s + 2 * min(a - s, b)  # both progress at 1/2 until the shorter remainder is done
    last = a + b  # work conserving: the server never idles while work remains
    a_first = a - s <= b
    assert done == pytest.approx({"a": first if a_first else last, "b": last if a_first else first}, rel=1e-9)


def test_busy_time_counts_only_time_with_active_jobs():
    env = simpy.Environment()
    server = FairShare(env, "x")
    server.submit(1.0)
    env.timeout(3.0).callbacks.append(lambda _: server.submit(2.0))
    env.run()
    assert (env.now, server.busy_time_s, server.job_seconds) == pytest.approx((5.0, 3.0, 3.0), rel=1e-9)


def test_two_equal_transfers_on_one_direction_each_get_half_the_bandwidth():
    env = simpy.Environment()
    link = Link(env, "pcie", link_spec())
    done = finish_times(env, {n: link.transfer("dram", "vram", 1e9) for n in "ab"})
    assert done == pytest.approx({"a": 2e-6 + 2 * 1e9 / 20e9, "b": 2e-6 + 2 * 1e9 / 20e9}, rel=1e-9)


def test_opposite_directions_do_not_interfere():
    env = simpy.Environment()
    link = Link(env, "pcie", link_spec())
    done = finish_times(env, {"up": link.transfer("dram", "vram", 1e9), "down": link.transfer("vram", "dram", 1e9)})
    assert done == pytest.approx({"up": 2e-6 + 1e9 / 20e9, "down": 2e-6 + 1e9 / 10e9}, rel=1e-9)
    assert [link.channel(*d).name for d in link.directions] == ["pcie:dram->vram", "pcie:vram->dram"]


def test_link_rejects_a_pair_it_does_not_join():
    link = Link(simpy.Environment(), "pcie", link_spec())
    with pytest.raises(ValueError, match=r"link 'pcie' joins 'dram' and 'vram', not 'dram' -> 'npu'"):
        link.transfer("dram", "npu", 1.0)


def test_littles_law_and_mm1_ps_sojourn_on_a_poisson_run():
    # M/M/1-PS, arrival rate 0.5/s, mean work 1 s (rho = 0.5): mean time in system 1 / (1 - rho) = 2 s.
    rng = np.random.default_rng(20240601)
    n_jobs, rate = 20_000, 0.5
    arrivals_s = np.cumsum(rng.exponential(1 / rate, n_jobs))
    work_s = rng.exponential(1.0, n_jobs)
    env = simpy.Environment()
    server = FairShare(env, "x")
    sojourn_s = np.zeros(n_jobs)

    def source():
        for i in range(n_jobs):
            yield env.timeout(arrivals_s[i] - env.now)
            start_s = env.now
            server.submit(work_s[i]).callbacks.append(lambda _, i=i, t=start_s: sojourn_s.__setitem__(i, env.now - t))

    env.process(source())
    env.run()
    horizon_s = env.now  # the run drains, so every job's whole stay lies inside [0, horizon]
    mean_in_system = server.job_seconds / horizon_s
    # Little's law holds exactly on a sample path that starts and ends empty: L = lambda_hat * W_hat.
    assert mean_in_system == pytest.approx(n_jobs / horizon_s * sojourn_s.mean(), rel=1e-9)
    assert server.busy_time_s == pytest.approx(work_s.sum(), rel=1e-9)  # work conserving
    # Theory: at rho = 0.5 the relaxation time is ~1/(1-sqrt(rho))^2 = 12 s, so 20k jobs (~40k s) give about
    # 3000 independent stretches; over seeds 0-19 the sample mean averaged 1.996 with a 2 % spread (1 sigma),
    # so 10 % is 5 sigma; a server that did not slow shared jobs down would give 1.0 s.
    assert sojourn_s.mean() == pytest.approx(2.0, rel=0.10)


# --- processor ------------------------------------------------------------------------------------------


def test_roofline_picks_the_bound_and_adds_overhead():
    cpu = Processor(simpy.Environment(), "cpu", cpu_spec())
    compute_bound = Op("up", flops=4e9, nbytes=1e6)  # 2 ms of fp16 FLOPs vs 10 us of bytes
    memory_bound = Op("down", flops=1e6, nbytes=1e9)  # 0.5 us of FLOPs vs 10 ms of bytes
    assert cpu.op_time_s(compute_bound) == pytest.approx(4e9 / 2e12 + 5e-6, rel=1e-9)
    assert cpu.op_time_s(memory_bound) == pytest.approx(1e9 / 100e9 + 5e-6, rel=1e-9)
    int8 = Op("up", flops=4e9, nbytes=1e6, dtype="int8")
    assert cpu.op_time_s(int8) == pytest.approx(4e9 / 8e12 + 5e-6, rel=1e-9)


def test_roofline_applies_efficiencies_and_gather_penalty():
    cpu = Processor(
        simpy.Environment(), "cpu", cpu_spec(flops_efficiency=0.5, bandwidth_efficiency=0.8, gather_efficiency=0.25)
    )
    assert cpu.op_time_s(Op("q", 4e9, 1e6)) == pytest.approx(4e9 / 1e12 + 5e-6, rel=1e-9)
    assert cpu.op_time_s(Op("down", 1e6, 1e9, gathered=True)) == pytest.approx(1e9 / 80e9 / 0.25 + 5e-6, rel=1e-9)


def test_unknown_dtype_names_processor_dtype_and_known_ones():
    cpu = Processor(simpy.Environment(), "cpu", cpu_spec())
    with pytest.raises(ValueError, match=r"processor 'cpu': op 'up' has dtype 'q4_0', known dtypes: fp16, int8"):
        cpu.op_time_s(Op("up", 1.0, 1.0, dtype="q4_0"))


def test_memoised_op_times_are_the_roofline_of_each_op():
    """Op times are memoised by identity: the same op again, an equal copy and a changed op each get the time a
    fresh processor computes; an unknown dtype still raises after others were memoised."""
    cpu, fresh = (Processor(simpy.Environment(), "cpu", cpu_spec()) for _ in range(2))
    ops = [Op("up", 4e9, 1e6), Op("down", 1e6, 1e9, gathered=True), Op("up", 4e9, 1e6), Op("up", 4e9, 2e9)]
    for op in ops + ops[::-1]:
        assert cpu.op_time_s(op) == Processor(simpy.Environment(), "cpu", cpu_spec()).op_time_s(op)
    assert cpu.service_s(ops) == fresh.service_s(ops) == sum(fresh.op_time_s(op) for op in ops)
    with pytest.raises(ValueError, match="has dtype 'q4_0'"):
        cpu.op_time_s(Op("up", 1.0, 1.0, dtype="q4_0"))


def test_processor_runs_calls_fifo():
    env = simpy.Environment()
    cpu = Processor(env, "cpu", cpu_spec())
    first, second = [Op("up", 4e9, 0.0)], [Op("down", 0.0, 1e9), Op("o", 0.0, 1e8)]
    t1 = 4e9 / 2e12 + 5e-6
    t2 = 1e9 / 100e9 + 1e8 / 100e9 + 2 * 5e-6
    done = finish_times(env, {"first": cpu.run(first), "second": cpu.run(second)})
    assert done == pytest.approx({"first": t1, "second": t1 + t2}, rel=1e-9)
    assert cpu.busy_until == pytest.approx(t1 + t2, rel=1e-9)


# --- memory ---------------------------------------------------------------------------------------------


def test_over_budget_is_a_capacity_error_naming_the_holders():
    dram = Memory(simpy.Environment(), "dram", memory_spec(), budget_bytes=4.8e9)
    dram.allocate("embeddings", 0.43e9)
    dram.allocate("attention", 3.07e9)
    message = (
        "dram: cannot allocate 2.10 GB for 'ffn_cache': 1.30 GB of the 4.80 GB budget free "
        "(held: attention 3.07 GB, embeddings 0.43 GB)"
    )
    with pytest.raises(CapacityError, match=f"^{re.escape(message)}$"):
        dram.allocate("ffn_cache", 2.1e9)
    assert dram.used_bytes == pytest.approx(3.5e9) and "ffn_cache" not in dram.tenants()


def test_tenants_grow_and_shrink_and_never_go_negative():
    dram = Memory(simpy.Environment(), "dram", memory_spec(capacity="8 GB"), budget_bytes=32e9)
    assert dram.budget_bytes == 8e9  # the budget cannot exceed the device
    dram.allocate("kv", 1e9)
    dram.allocate("kv", 2e9)
    dram.free("kv", 2.5e9)
    assert dram.tenants() == {"kv": pytest.approx(0.5e9)}
    assert (dram.used_bytes, dram.peak_bytes) == pytest.approx((0.5e9, 3e9))
    with pytest.raises(ValueError, match=r"dram: cannot free 1000000000.0 B for 'kv': it holds 500000000.0 B"):
        dram.free("kv", 1e9)
    dram.free("kv", 0.5e9)
    assert dram.tenants() == {} and dram.used_bytes == 0.0


def test_occupied_bytes_count_static_tenants_in_full_and_dynamic_ones_as_said():
    dram = Memory(simpy.Environment(), "dram", memory_spec(capacity="8 GB"))
    dram.allocate("attention", 4e9)
    dram.allocate("window", 2e9)  # preallocated at its peak
    assert dram.occupied_bytes() == 6e9
    dram.occupy("window", 1.5e9)
    assert (dram.used_bytes, dram.occupied_bytes()) == (6e9, 5.5e9)
    dram.free("window", 1e9)  # what is left holds at most what remains
    assert dram.occupied_bytes() == 5e9
    dram.free("window", 1e9)
    assert dram.occupied_bytes() == 4e9
    with pytest.raises(ValueError, match=r"dram: 'attention' cannot occupy 5000000000.0 B: it holds 4000000000.0 B"):
        dram.occupy("attention", 5e9)


def test_copy_takes_bytes_over_copy_bandwidth():
    env = simpy.Environment()
    dram = Memory(env, "dram", memory_spec(copy_bandwidth="12.5 GB/s"))
    finish_times(env, {"copy": dram.copy(3e8)})
    assert env.now == pytest.approx(3e8 / 12.5e9, rel=1e-9) == dram.copy_s(3e8)
    assert dram.copier.name == "dram:copy"


def test_unbudgeted_tenants_count_only_against_the_capacity():
    dram = Memory(simpy.Environment(), "dram", memory_spec(capacity="8 GB"), budget_bytes=4e9)
    dram.allocate("weights", 3.5e9)
    dram.allocate("kv_cache", 4e9, budgeted=False)
    assert (dram.used_bytes, dram.budgeted_bytes, dram.budget_free_bytes) == (7.5e9, 3.5e9, 0.5e9)
    with pytest.raises(CapacityError, match=r"cannot allocate 1.00 GB for 'kv_cache': 0.50 GB of the 8.00 GB capacity"):
        dram.allocate("kv_cache", 1e9, budgeted=False)
    dram.free("kv_cache", 2e9)  # room in the device, but not in the budget
    with pytest.raises(CapacityError, match=r"cannot allocate 0.60 GB for 'ffn': 0.50 GB of the 4.00 GB budget"):
        dram.allocate("ffn", 0.6e9)
    dram.allocate("kv_cache", 2e9, budgeted=False)
    assert dram.tenants(budgeted=True) == {"weights": 3.5e9} and dram.occupied_bytes(budgeted=False) == 4e9


# --- composition ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flops", [1e9, 8e9])  # compute 0.5 ms (I/O bound) or 4 ms (compute bound)
def test_pipeline_period_is_the_slower_stage_after_warm_up(flops):
    env = simpy.Environment()
    flash, cpu = Flash(env, flash_spec()), Processor(env, "cpu", cpu_spec(overhead="0 s"))
    n_layers, layer_bytes, chunk = 10, 2 * MiB, 64 * KiB
    ops = [Op("ffn", flops, 0.0)]
    layer = extents(*[(i * 2 * chunk, chunk) for i in range(layer_bytes // chunk)])  # separate chunks
    loaded = [env.event() for _ in range(n_layers)]
    computed = [env.event() for _ in range(n_layers)]
    end_s = []

    def loader():  # double buffering: layer i+1 loads while layer i computes
        for i in range(n_layers):
            if i >= 2:
                yield computed[i - 2]  # its buffer is free again
            yield flash.read(flash.price_one(layer))
            loaded[i].succeed()

    def compute():
        for i in range(n_layers):
            yield loaded[i]
            yield cpu.run(ops)
            end_s.append(env.now)
            computed[i].succeed()

    env.process(loader())
    env.process(compute())
    env.run()
    load_s = LATENCY_S + layer_bytes / flash.throughput_Bps(chunk, 8)
    compute_s = cpu.op_time_s(ops[0])
    assert np.diff(end_s)[2:] == pytest.approx(max(load_s, compute_s), rel=1e-9)
    assert end_s[0] == pytest.approx(load_s + compute_s, rel=1e-9)


def test_build_devices_applies_the_budget_and_finds_links():
    hw = HardwareProfile(
        name="tiny",
        flash=flash_spec(),
        memories={"dram": memory_spec(), "vram": memory_spec(capacity="24 GB")},
        links={"pcie": link_spec()},
        processors={"cpu": cpu_spec(), "gpu": cpu_spec(kind="gpu", memory="vram")},
    )
    devices = build_devices(simpy.Environment(), hw, {"dram": 4e9})
    assert devices.memories["dram"].budget_bytes == 4e9 and devices.memories["vram"].budget_bytes == 24e9
    with pytest.raises(ValueError, match=r"budgets for unknown memories \['hbm'\]; tiny has \['dram', 'vram'\]"):
        build_devices(simpy.Environment(), hw, {"hbm": 1e9})
    assert devices.link_between("vram", "dram") is devices.links["pcie"] is devices.link_between("dram", "vram")
    assert devices.link_between("dram", "dram") is None
    assert set(devices.processors) == {"cpu", "gpu"} and devices.flash.spec == hw.flash
