"""The atomic path (``engine_mode: auto``) against the event path (``engine_mode: events``): bit-identical.

Every comparison is exact: the tokens table (check_exact), every device counter and fair-share server state,
and the recorded spans in order (what timeline.json is written from). Each serial configuration also checks that
the atomic path really ran (a few events per token instead of one per device job), so these tests fail if the
fast path silently stops applying; configurations it must not take (overlap, a concurrent reader) check that
both modes schedule the same events.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import simpy
import yaml

import sim.engine.simulate as simulate
from sim.config.experiment import load_experiment
from sim.config.hardware import FlashSpec, LinkSpec, MemorySpec, ProcessorSpec
from sim.devices import Devices, FairShare, Flash, Link, Memory, Op, Processor, build_devices
from sim.devices.extents import MAX_MULTIPLE, histogram_in_order, length_histogram, merge_in_order, merge_many
from sim.engine.atomic import _delay_to, timeout_at
from sim.engine.decode import run_token
from sim.engine.plan import LayerPlan, Transfer
from sim.stats.recorder import Recorder

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TOKENS = 4
ATOMIC_EVENTS_PER_TOKEN = 4  # token process start, its one timeout, its end (+ the decode loop's own start)

LIF = {  # benchmarks/bench_lif.py's configuration ("all"), shortened
    "name": "atomic",
    "hardware": "apple-m1-max",
    "model": "opt-6.7b",
    "dram_budget": "10 GB",
    "context_tokens": 128,
    "decode_tokens": TOKENS,
    "timeline_tokens": TOKENS,
    "layout": {"name": "bundled"},
    "activations": {
        "source": "projection",
        "path": "traces/smollm2-135m.trace",
        "density": "opt-6.7b-table6",
        "calib_tokens": 64,
    },
    "policy": {
        "name": "llm_in_flash",
        "predictor": "statistical",
        "window_k": 2,  # rows leave the window (memory management copies) from token 3 on
        "bundling": "row_column",
        "memory_management": True,
        "capacity_tokens": 8,
    },
}
RTX = {"hardware": "pc-high-rtx4090", "processor": "gpu", "dtype": "bf16", "kv_dtype": "bf16"}


def servers(devices: Devices) -> list[FairShare]:
    links = [link.channel(a, b) for link in devices.links.values() for a, b in link.bytes_moved]
    return [devices.flash.server, *links, *(m.copier for m in devices.memories.values())]


def device_state(devices: Devices) -> dict:
    """Every counter a device keeps, and every number of every fair-share server's state."""
    state = {s.name: {k: v for k, v in vars(s).items() if isinstance(v, int | float)} for s in servers(devices)}
    flash = devices.flash
    state["flash"] = (flash.bytes_read, flash.n_reads, flash.n_requests)
    state |= {f"link {n}": dict(link.bytes_moved) for n, link in devices.links.items()}
    state |= {f"memory {n}": (m.bytes_copied, m.used_bytes, m.peak_bytes) for n, m in devices.memories.items()}
    state |= {f"proc {n}": (p.busy_until, p.busy_s, p.n_kernels) for n, p in devices.processors.items()}
    return state | {"now": devices.env.now}


def spans(recorder: Recorder) -> list[tuple]:
    return list(zip(recorder.track, recorder.name, recorder.start_s, recorder.end_s, recorder.nbytes, strict=True))


def simulate_both(case_of):
    """Run the case in both modes -> {mode: (CaseResult, device state)}."""
    out, cache = {}, {}
    for mode in ("auto", "events"):
        captured = []

        def build(*args, captured=captured, **kwargs):
            captured.append(build_devices(*args, **kwargs))
            return captured[-1]

        with mock.patch.object(simulate, "build_devices", build):
            result = simulate.simulate_case(case_of(mode), cache=cache)
        out[mode] = (result, device_state(captured[0]))
    return out


def assert_identical(out) -> None:
    (auto, auto_state), (events, events_state) = out["auto"], out["events"]
    pd.testing.assert_frame_equal(auto.tokens, events.tokens, check_exact=True)
    assert auto_state == events_state
    assert spans(auto.spans) == spans(events.spans) and len(auto.spans) > 0


def experiment_case(path: Path, name: str, overrides: dict):
    def case_of(mode: str):
        over = {"decode_tokens": TOKENS, "timeline_tokens": TOKENS, "engine_mode": mode} | overrides
        (case,) = [c for c in load_experiment(path, over) if c.name == name]
        return case

    return case_of


def dict_case(tmp_path: Path, data: dict):
    path = tmp_path / "atomic.yaml"

    def case_of(mode: str):
        path.write_text(yaml.safe_dump(data | {"engine_mode": mode}))
        (case,) = load_experiment(path)
        return case

    return case_of


@pytest.mark.parametrize("name", ["t2-naive", "t2-hybrid", "t3-naive-rtx4090"])
def test_baselines_atomic_equals_events(name):
    out = simulate_both(experiment_case(EXPERIMENTS / "lif_baselines.yaml", name, {}))
    assert_identical(out)
    assert out["auto"][0].summary["events_per_token"] <= ATOMIC_EVENTS_PER_TOKEN
    assert out["events"][0].summary["events_per_token"] > 20 * ATOMIC_EVENTS_PER_TOKEN


LIF_VARIANTS = {
    "all": {},
    "unmerged-reads": {"policy.coalesce_reads": False},
    "no-window-no-bundling": {"policy.window_k": 0, "policy.bundling": "none", "layout.name": "layer_major"},
    "oracle-appends": {"policy.predictor": "oracle", "policy.memmgmt_appends": True},
    "rtx4090-staged": RTX,
}


@pytest.mark.parametrize("variant", LIF_VARIANTS, ids=list(LIF_VARIANTS))
def test_llm_in_flash_atomic_equals_events(tmp_path, variant):
    data = LIF
    for dotted, value in LIF_VARIANTS[variant].items():
        data = _set(data, dotted, value)
    out = simulate_both(dict_case(tmp_path, data))
    assert_identical(out)
    assert out["auto"][0].summary["events_per_token"] <= ATOMIC_EVENTS_PER_TOKEN
    tokens = out["auto"][0].tokens
    if variant == "rtx4090-staged":
        assert (tokens["pcie_dram_to_vram_bytes"] == tokens["flash_bytes"]).all() and tokens["flash_bytes"].gt(0).all()
    if variant == "all":
        assert tokens["memmgmt_s"].gt(0).any()  # the DRAM copier is exercised too


def test_overlap_falls_back_to_events(tmp_path):
    out = simulate_both(dict_case(tmp_path, _set(LIF, "policy.overlap", True)))
    assert_identical(out)
    assert out["auto"][0].summary["simpy_events"] == out["events"][0].summary["simpy_events"]


def _set(data: dict, dotted: str, value) -> dict:
    head, _, rest = dotted.partition(".")
    return data | {head: _set(data.get(head, {}), rest, value) if rest else value}


# ---- hand-made machine: on-demand reads, transfers, staging with latencies, ties, a concurrent reader --------


def machine(env: simpy.Environment, recorder: Recorder, flash_latency: str, link_latency: str, link_Bps: float):  # noqa: N803
    curve = {"chunk_sizes": ["4 KiB", "1 MiB"], "queue_depths": [1, 8], "throughput": [["0.2 GB/s", "1 GB/s"]] * 2}
    flash_spec = FlashSpec(capacity="1 TB", latency=flash_latency, max_queue_depth=8, curve=curve)
    link_spec = LinkSpec(
        ends=("dram", "vram"), bandwidth_forward="1 GB/s", bandwidth_reverse="3 GB/s", latency=link_latency
    )
    link_spec = link_spec.model_copy(update={"bandwidth_forward": link_Bps})  # any float (ties below)
    mem = {"capacity": "16 GB", "bandwidth": "100 GB/s", "copy_bandwidth": "7 GB/s"}
    proc = {"peak_flops": {"fp16": "3 TFLOPS"}, "mem_bandwidth": "70 GB/s", "overhead": "3 us"}
    return Devices(
        env=env,
        flash=Flash(env, flash_spec, "flash", recorder),
        memories={n: Memory(env, n, MemorySpec(**mem), None, recorder) for n in ("dram", "vram")},
        links={"pcie": Link(env, "pcie", link_spec, recorder)},
        processors={
            "cpu": Processor(env, "cpu", ProcessorSpec(kind="cpu", memory="dram", **proc), recorder),
            "gpu": Processor(env, "gpu", ProcessorSpec(kind="gpu", memory="vram", **proc), recorder),
        },
    )


def hand_plans(rng: np.random.Generator, processor: str, n_layers: int = 3) -> list[LayerPlan]:
    def ext(n: int) -> np.ndarray:
        starts = np.sort(rng.choice(1 << 24, n, replace=False)) * 4096
        return np.stack([starts, rng.integers(1, 9, n) * 4096], axis=1).astype(np.int64)  # some adjacent

    return [
        LayerPlan(
            layer=l,
            issue_at=l,
            preload=ext(int(rng.integers(1, 40))),
            on_demand=ext(int(rng.integers(1, 30))) if l % 2 else np.zeros((0, 2), np.int64),
            transfers=(Transfer("dram", "vram", float(rng.integers(1, 10**6))), Transfer("vram", "dram", 12345.0)),
            memmgmt_bytes=float(rng.integers(0, 10**6)) if l else 0.0,
            coalesce=bool(l % 2),
            ops=(Op("ffn", float(rng.integers(1, 10**9)), float(rng.integers(1, 10**8))),),
            processor=processor,
        )
        for l in range(n_layers)
    ]


def run_hand(atomic: bool, processor: str, latencies=("100 us", "2 us"), link_Bps=25e9, reader=None, tokens=3):
    """Decode ``tokens`` hand-made tokens; ``reader(env, devices)``: a process started alongside."""
    env, recorder = simpy.Environment(), Recorder()
    devices = machine(env, recorder, *latencies, link_Bps)
    rng = np.random.default_rng(7)
    rows = []

    def decode():
        for _ in range(tokens):
            times = yield env.process(run_token(env, devices, hand_plans(rng, processor), atomic))
            rows.append((times.start_s, times.end_s, times.io_stall_s, times.xfer_s, times.memmgmt_s, times.compute_s))

    if reader is not None:
        env.process(reader(env, devices))
    env.process(decode())
    env.run()
    return rows, device_state(devices), spans(recorder), next(env._eid)


@pytest.mark.parametrize("processor", ["cpu", "gpu"])
@pytest.mark.parametrize("latencies", [("100 us", "2 us"), ("0 s", "0 s"), ("0 s", "5 us"), ("30 us", "0 s")])
def test_on_demand_transfers_copies_and_staging_atomic_equals_events(processor, latencies):
    atomic, events = run_hand(True, processor, latencies), run_hand(False, processor, latencies)
    assert atomic[:3] == events[:3]
    assert atomic[3] <= 3 * ATOMIC_EVENTS_PER_TOKEN < events[3]


@pytest.mark.parametrize("latencies", [("100 us", "100 us"), ("0 s", "0 s"), ("0 s", "100 us"), ("100 us", "0 s")])
def test_staged_read_and_transfer_ending_together_keep_the_event_order(latencies):
    """The link's bandwidth is chosen so that the staging transfer ends exactly when the flash read does."""
    plan = hand_plans(np.random.default_rng(7), "gpu", 1)[0]
    link_Bps = tie_bandwidth(latencies, plan.preload)
    results = {}
    for atomic in (True, False):
        env, recorder = simpy.Environment(), Recorder()
        devices = machine(env, recorder, *latencies, link_Bps)
        env.process(run_token(env, devices, [LayerPlan(0, 0, plan.preload, processor="gpu")], atomic))
        env.run()
        results[atomic] = (spans(recorder), device_state(devices))
    assert results[True] == results[False]
    (first, second) = results[False][0]
    assert first[3] == second[3] and {first[0], second[0]} == {"flash", "pcie:dram->vram"}  # a real tie


def tie_bandwidth(latencies: tuple[str, str], preload: np.ndarray) -> float:
    """A link bandwidth whose transfer of the preload's bytes, issued at 0, ends when the flash read does."""
    probe = machine(simpy.Environment(), Recorder(), *latencies, 1e9)
    priced = probe.flash.price_one(preload)
    read_end_s, nbytes = probe.flash.order_alone(priced, 0.0)[0], priced[2]
    enter_s = probe.links["pcie"].order_alone("dram", "vram", 0.0, 0.0)[1]
    guess = nbytes / (read_end_s - enter_s)
    for bandwidth in guess * (1 + np.arange(-64, 64) * 2.0**-52):
        if enter_s + nbytes / bandwidth == read_end_s:
            return float(bandwidth)
    raise AssertionError("no bandwidth ties")


def concurrent_reader(stop_s: float):
    """A process reading 64 KiB from flash every 0.2 ms until ``stop_s``."""

    def reader(env: simpy.Environment, devices: Devices):
        rng = np.random.default_rng(3)
        while env.now < stop_s:
            yield devices.flash.read(np.array([[int(rng.integers(0, 1 << 30)) * 4096, 65536]], dtype=np.int64))
            yield env.timeout(2e-4)

    return reader


@pytest.mark.parametrize("stop_s", [10.0, 1e-3])
def test_a_concurrent_reader_makes_auto_fall_back_to_events(stop_s):
    """A second process reading the flash: tokens that start while it is active run as events (their reads
    share the flash with it); once it has stopped, the atomic path takes over again. Same results either way."""
    reader = concurrent_reader(stop_s)
    atomic, events = run_hand(True, "cpu", reader=reader), run_hand(False, "cpu", reader=reader)
    assert atomic[:3] == events[:3]
    token_starts = [row[0] for row in events[0]]
    assert token_starts[1] > 1e-3 and events[1]["flash"][1] > 9  # the reader overlapped the first token only
    if stop_s > token_starts[-1]:
        assert atomic[3] == events[3]  # every token fell back
    else:
        assert atomic[3] < events[3] - 20  # the tokens after the reader stopped ran atomically


@pytest.mark.parametrize("shape", ["sorted", "with-empty", "unsorted-overlapping"])
@pytest.mark.parametrize("merge", [True, False])
def test_pricing_neuron_batches_at_once_gives_the_floats_of_pricing_each(shape, merge):
    """Flash.price's fast paths (no mask, no sort, no running maximum) on batches shaped like a policy's neuron
    reads: 32 layers of a few hundred bundles, some adjacent (they merge), at every queue-depth regime."""
    rng = np.random.default_rng(5)
    flash = machine(simpy.Environment(), Recorder(), "100 us", "0 s", 1e9).flash
    bundle = 16384
    batches = []
    for layer in range(32):
        n = int(rng.integers(1, 600)) if layer % 8 else int(rng.integers(1, 8))  # some below max queue depth
        neurons = np.sort(rng.choice(16384, n, replace=False))
        ext = np.stack([layer * (1 << 30) + neurons * bundle, np.full(n, bundle)], axis=1).astype(np.int64)
        if shape == "with-empty" and layer % 5 == 0:
            ext[n // 2, 1] = 0
        if shape == "unsorted-overlapping" and layer % 3 == 0:  # shifted copies, and long reads containing others
            extra = np.concatenate([ext[: n // 2] + [bundle // 2, 0], ext[::7] * [1, 0] + [0, 5 * bundle]])
            ext = np.concatenate([ext, extra])[rng.permutation(n + extra.shape[0])]
        batches.append(ext)
    assert flash.price(batches, merge) == [flash._transfer(b, None, merge) for b in batches]


def test_fair_share_run_alone_books_what_submit_and_completion_do_and_refuses_a_busy_server():
    booked, served = (FairShare(simpy.Environment(), "x") for _ in range(2))
    env = served.env
    for start_s, work_s in [(0.0, 0.3), (0.45, 0.0), (1.0, 1 / 3), (2.7, 1e-9)]:
        env.timeout(start_s).callbacks.append(lambda _, w=work_s: served.submit(w))
        assert booked.run_alone(start_s, work_s) == FairShare.end_alone_s(start_s, work_s)
    env.run()
    assert vars(booked) | {"env": None} == vars(served) | {"env": None}
    served.submit(1.0)
    with pytest.raises(RuntimeError, match=r"x: run_alone\(start_s=3.0\) needs an idle server"):
        served.run_alone(3.0, 1.0)


def test_timeout_at_fires_exactly_at_the_end_time():
    """Ends one addition away from now, and ends reached by a chain of additions (no single delay lands on some
    of them, e.g. 0.011765706217569833 -> 0.029288118699235723: the token end of an lif_coactivation run)."""
    rng = np.random.default_rng(11)
    spans_s = rng.uniform(0, 1, 400) * 10.0 ** rng.integers(-12, 3, 400)
    ends = [(float(now), float(now + span)) for now, span in zip(rng.uniform(0, 1e3, 400), spans_s, strict=True)]
    for now in rng.uniform(0, 1, 400):
        chained = float(now)
        for step in rng.uniform(0, 1e-3, 50):
            chained += float(step)
        ends.append((float(now), chained))
    ends.append((0.011765706217569833, 0.029288118699235723))
    unreachable = 0
    for now, end_s in ends:
        env = simpy.Environment(initial_time=now)
        unreachable += _delay_to(now, end_s) is None
        event = timeout_at(env, end_s)
        env.run()
        assert event.processed and env.now == end_s
    assert unreachable > 0  # the queued fallback was exercised


def _neuron_batches(rng: np.random.Generator, n_neurons: int, max_count: int, width: int, perturb):
    """1-5 batches of ascending neuron extents (offset neuron * width, length width), each passed through
    ``perturb(ext) -> ext``: all extents [N, 2] int64 and each batch's size [B]."""
    batches = []
    for _ in range(int(rng.integers(1, 6))):
        neurons = np.sort(rng.choice(n_neurons, int(rng.integers(0, max_count)), replace=False))  # some adjacent
        ext = np.stack([neurons * width, np.full(neurons.size, width)], axis=1).astype(np.int64).reshape(-1, 2)
        batches.append(perturb(ext))
    return np.concatenate(batches), np.array([b.shape[0] for b in batches])


def test_merge_in_order_gives_the_requests_of_merge_many():
    """The in-order kernel (no batch keys) on random small batches, empty ones included; None when it cannot."""
    rng = np.random.default_rng(3)

    def perturb(ext):
        if rng.random() < 0.3:
            ext[:, 1] = rng.integers(1, 4, ext.shape[0])  # 1-3 B: may overlap the next
        if rng.random() < 0.2 and ext.shape[0]:
            ext[rng.integers(ext.shape[0]), 1] = 0
        return ext

    applied = 0
    for _ in range(2000):
        ext, sizes = _neuron_batches(rng, 40, 12, 3, perturb)
        for merge in (True, False):
            found = merge_in_order(ext, sizes, merge)
            if found is not None:
                applied += 1
                lengths, seg = merge_many(ext, np.repeat(np.arange(sizes.size), sizes), merge)
                assert np.array_equal(found[0], lengths)
                assert np.array_equal(found[1], np.bincount(seg, minlength=sizes.size))
    assert 1000 < applied < 4000  # it applies to most, not all


@pytest.mark.parametrize("kind", ["bundle-runs", "any", "few-odd", "long-runs"])
def test_length_histogram_counts_each_batchs_lengths(kind):
    """Every batch's count of every distinct length, against counting each batch alone: multiples of the shortest
    (the bincount path), arbitrary lengths and multiples past MAX_MULTIPLE (the np.unique path), empty batches."""
    rng = np.random.default_rng(len(kind))
    for _ in range(300):
        counts = rng.integers(0, 9, int(rng.integers(1, 6)))
        draw = {
            "bundle-runs": lambda m: rng.integers(1, 4, m) * 16384,
            "any": lambda m: rng.integers(1, 100, m),
            "few-odd": lambda m: rng.choice([5, 7, 5000], m),
            "long-runs": lambda m: rng.choice([1, 2, MAX_MULTIPLE + 1], m) * 3,
        }[kind]
        lengths = draw(int(counts.sum())).astype(np.int64)
        values, hist = length_histogram(lengths, counts)
        assert values.tolist() == np.unique(lengths).tolist()
        batches = np.split(lengths, np.cumsum(counts)[:-1])
        assert hist.tolist() == [[int((b == v).sum()) for v in values] for b in batches]


def test_histogram_in_order_counts_the_requests_merge_many_makes():
    """Equal-length extents in order (a bundled layout's neuron reads), adjacent runs included, against merging
    and counting; None when lengths differ, an extent is empty or a batch is out of order."""
    rng = np.random.default_rng(8)

    def perturb(ext):
        if rng.random() < 0.1 and ext.shape[0] > 1:
            ext[rng.integers(ext.shape[0]), 1] = int(rng.choice([0, 8]))
        if rng.random() < 0.1 and ext.shape[0] > 1:
            ext = ext[::-1].copy()
        return ext

    applied = 0
    for _ in range(1500):
        ext, sizes = _neuron_batches(rng, 60, 30, 4, perturb)
        for merge in (True, False):
            found = histogram_in_order(ext, sizes, merge)
            if found is not None:
                applied += 1
                lengths, seg = merge_many(ext, np.repeat(np.arange(sizes.size), sizes), merge)
                values, hist = length_histogram(lengths, np.bincount(seg, minlength=sizes.size))
                assert np.array_equal(found[0], values) and np.array_equal(found[1], hist)
    assert 1000 < applied < 3000  # it applies to most, not all
