"""The real side (sim/real): O_DIRECT reads of exactly the planned bytes, calibrate's fits reproduce what they
measured, and a real run of SmolLM2 from a flash image computes exactly what the numpy reference computes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.errors import CapacityError
from sim.real.odirect import ALIGN_BYTES, DirectIOUnavailableError, DirectReader, aligned_requests, open_direct

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def direct_dir(tmp_path_factory) -> Path:
    """A folder on a file system that accepts O_DIRECT (pytest's temporary folder, else one beside the tests)."""
    for folder in (tmp_path_factory.mktemp("odirect"), REPO / ".pytest-odirect"):
        folder.mkdir(exist_ok=True)
        probe = folder / "probe.bin"
        probe.write_bytes(b"\0" * ALIGN_BYTES)
        try:
            os.close(open_direct(probe))
            return folder
        except DirectIOUnavailableError:
            continue
        finally:
            probe.unlink()
    pytest.skip("no file system here accepts O_DIRECT")


def test_aligned_requests_cover_each_extent_once():
    ext = np.array([[5000, 3456], [8456, 100], [20000, 10], [12288, 4096], [700000, 9000]])
    delivered, reqs, lands = aligned_requests(ext)
    assert (reqs.offsets % ALIGN_BYTES == 0).all() and (reqs.lengths % ALIGN_BYTES == 0).all()
    assert (np.diff(reqs.offsets) > 0).all()  # sorted, and no block is read twice
    assert (reqs.offsets[1:] >= reqs.offsets[:-1] + reqs.lengths[:-1]).all()
    for (off, length), at in zip(delivered, lands, strict=True):  # each extent inside one request, at its place
        i = np.searchsorted(reqs.offsets, off, side="right") - 1
        assert reqs.offsets[i] <= off and off + length <= reqs.offsets[i] + reqs.lengths[i]
        assert at == reqs.at[i] + off - reqs.offsets[i]
    assert delivered[:, 1].sum() == 3456 + 100 + 10 + 4096 + 9000  # adjacent extents merged, nothing lost


@pytest.mark.parametrize("merge", [True, False])
def test_an_aligned_flash_device_prices_the_readers_requests(merge):
    """The simulated device with ``aligned: true`` sees the very requests the O_DIRECT reader issues."""
    from sim.config.hardware import FlashSpec
    from sim.devices.flash import Flash

    curve = {"chunk_sizes": ["4 KiB", "1 MiB"], "queue_depths": [1, 8],
             "throughput": [["0.1 GB/s", "2 GB/s"], ["0.5 GB/s", "4 GB/s"]]}  # fmt: skip
    spec = FlashSpec.model_validate({"capacity": "1 GB", "latency": "50 us", "max_queue_depth": 8,
                                     "page_bytes": "4 KiB", "aligned": True, "curve": curve})  # fmt: skip
    flash, rng = Flash(None, spec), np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 60))
        ext = np.stack([rng.integers(0, 10**7, n), rng.integers(0, 20000, n)], axis=1)
        _, reqs, _ = aligned_requests(ext, merge)
        priced = flash.price_one(ext, merge)
        assert (priced.n_requests, priced.nbytes) == (len(reqs.offsets), reqs.moved_bytes)


@pytest.mark.parametrize("merge", [True, False])
def test_direct_reads_deliver_exactly_the_planned_bytes(direct_dir, merge):
    data = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    path = direct_dir / "data.bin"
    path.write_bytes(data)
    rng = np.random.default_rng(1)
    with DirectReader(path, queue_depth=4) as reader:
        for _ in range(50):
            n = int(rng.integers(1, 30))
            ext = np.stack([rng.integers(0, (1 << 20) - 20000, n), rng.integers(1, 20000, n)], axis=1)
            before = reader.bytes_read
            buf = reader.read(ext, merge=merge)
            for off, length in ext:
                assert bytes(buf.bytes_of(int(off), int(length))) == data[off : off + length]
            if not merge:  # every extent its own request: exactly their bytes were asked for
                assert reader.bytes_read - before == ext[:, 1].sum()
    assert reader.bytes_moved >= reader.bytes_read


def test_calibrate_refuses_a_memory_file_system_with_one_line(tmp_path):
    from sim.real.odirect import file_system

    shm = Path("/dev/shm")
    if not shm.is_dir() or file_system(shm) != "tmpfs":
        pytest.skip("no tmpfs at /dev/shm")
    probe = shm / f"sim-test-{os.getpid()}.bin"
    probe.write_bytes(b"\0" * ALIGN_BYTES)
    try:
        with pytest.raises(DirectIOUnavailableError, match="tmpfs"):
            open_direct(probe)
    finally:
        probe.unlink()
    out = subprocess.run([sys.executable, "-m", "sim", "calibrate", "--out", str(tmp_path / "m.yaml"), "--dir",
                          str(shm)], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and "tmpfs" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.yaml").exists() and not list(shm.glob(".sim-calibrate-*"))


def test_calibrate_quick_writes_a_profile_the_simulator_loads(direct_dir):
    """The command as a user runs it (quick mode, under a minute): a profile every number of which is commented
    with its method, loadable, and its raw measurements beside it."""
    from test_profiles import uncommented_numbers

    from sim.config.profiles import load_hardware

    out = direct_dir / "quick.yaml"
    run = subprocess.run([sys.executable, "-m", "sim", "calibrate", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    hw = load_hardware(str(out))
    assert hw.flash.aligned and hw.flash.max_queue_depth == 32 and hw.processors["cpu"].mem_bandwidth > 0
    assert uncommented_numbers(out.read_text()) == [] and out.with_suffix(".calibration.csv").is_file()
    assert not list(direct_dir.glob(".sim-calibrate-*"))  # the scratch file is gone


def test_calibrate_refuses_a_file_it_did_not_write(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\n")
    out = subprocess.run([sys.executable, "-m", "sim", "calibrate", "--out", str(mine)], capture_output=True, text=True)
    assert out.returncode == 2 and "refusing" in out.stderr and mine.read_text() == "name: mine\n"


def test_flash_curve_reproduces_its_own_measurements(direct_dir):
    """The profile calibrate writes, read back by the simulator's flash device, gives every measured point's time."""
    from test_profiles import uncommented_numbers

    from sim.config.profiles import load_hardware
    from sim.devices.flash import Flash
    from sim.real import calibrate as cal

    plan = cal.Plan((4096, 65536, 1 << 20), (1, 4), 16 << 20, 4 << 20, 0.05, 1, 2, 1, ((64, 128),))
    path = cal.scratch_file(direct_dir, plan.file_bytes)
    try:
        flash = cal.measure_flash(path, plan, lambda _: None)
        latency = cal.measure_latency(path, n=20)
    finally:
        path.unlink()
    fit = cal.Fit(10e9, 1e-6, 1e9, 0.5, 0.0)
    text = cal.profile_yaml("t", flash, latency, {"memcpy_Bps": 1e10, "row_copy_4KiB_Bps": 1e9}, fit, 1e11, 1,
                            direct_dir, "t.calibration.csv", False)  # fmt: skip
    (direct_dir / "t.yaml").write_text(text)
    assert uncommented_numbers(text) == []  # every number says how it was measured
    device = Flash(None, load_hardware(str(direct_dir / "t.yaml")).flash)
    medians = flash.pivot_table(index="queue_depth", columns="chunk_bytes", values="throughput_Bps", aggfunc="median")
    envelope = cal.monotone(medians)  # what the profile keeps: the medians, never falling with chunk or depth
    assert (envelope >= medians).all().all() and (envelope.iloc[0, 0] == medians.iloc[0, 0])
    for (qd, chunk), throughput in envelope.stack().items():
        n = 64
        priced = device.price_one(np.stack([np.arange(n) * 2 * chunk, np.full(n, chunk)], 1), queue_depth=qd)
        assert n * chunk / priced.transfer_s == pytest.approx(throughput, rel=0.01)  # 3 significant digits


@pytest.mark.parametrize("row_s", [0.0, 2e-7])
def test_kernel_fit_recovers_a_roofline(row_s):
    from sim.real.calibrate import fit_kernels

    bw, over = 20e9, 30e-6
    rows = []
    for d, f in ((256, 768), (576, 1536), (1024, 2816), (2048, 5632)):
        attn, ffn = 4 * 4 * d * d, 4 * 3 * d * f
        gathered_rows = ffn // 10 // (4 * d)
        rows.append({"d_model": d, "d_ff": f, "dtype": "fp32", "gathered": False, "threads": 2,
                     "seconds": 4 * over + (attn + ffn) / bw, "attention_bytes": attn, "ffn_bytes": ffn,
                     "weights": (attn + ffn) / 4})  # fmt: skip
        gather_s = gathered_rows * 4 * d / (0.25 * bw) + gathered_rows * row_s
        rows.append({**rows[-1], "gathered": True, "ffn_bytes": gathered_rows * 4 * d,
                     "seconds": 4 * over + attn / bw + gather_s})  # fmt: skip
        rows.append({**rows[-2], "dtype": "fp16", "attention_bytes": attn // 2, "ffn_bytes": ffn // 2})
    fit = fit_kernels(pd.DataFrame(rows).assign(round=0), 2)
    assert fit.mem_bandwidth == pytest.approx(bw, rel=1e-6) and fit.overhead_s == pytest.approx(over, rel=1e-6)
    assert fit.gather_row_s == pytest.approx(row_s, abs=1e-12)  # the per-row term is found when it is there
    assert fit.gather_efficiency == pytest.approx(0.25, rel=1e-6)  # and the bytes' factor apart from it
    assert fit.residual_pct < 1e-6 and fit.gather_residual_pct < 1e-6


# ---- a real run of SmolLM2 -------------------------------------------------------------------------------------
EXPERIMENT = """\
name: real-test
hardware: {hardware}
model: smollm2-135m
dtype: fp32
kv_dtype: fp32
context_tokens: 4
decode_tokens: 5
prefill_chunk_tokens: {chunk}
layout: {{name: layer_major}}
activations: {{source: trace, path: {trace}, rule: "threshold:0.9", offset_tokens: 4}}
policy: {{name: llm_in_flash, predictor: oracle, window_k: 3}}
cases:
  - {{name: naive, set: {{policy: {{name: naive}}}}}}
  - {{name: hybrid, set: {{policy: {{name: hybrid}}, dram_budget: 300 MB}}}}
  - {{name: lif}}
  - {{name: lif-lm-head-on-flash, set: {{dram_budget: 200 MB, policy.window_rows: budget, policy.embeddings: flash}}}}
"""


@pytest.fixture(scope="module")
def real_setup(tmp_path_factory, direct_dir):
    """An experiment of three policies and the fp32 layer-major SmolLM2 image (written once)."""
    from sim.config.experiment import load_experiment
    from sim.real.session import image_for

    folder = tmp_path_factory.mktemp("real")
    exp = folder / "exp.yaml"
    trace = REPO / "traces" / "smollm2-135m.trace"
    exp.write_text(EXPERIMENT.format(hardware=REPO / "hardware_profiles" / "this-machine.yaml", trace=trace, chunk=0))
    images = direct_dir / "images"
    image = image_for(load_experiment(exp)[0], images, log=lambda _: None)
    return exp, images, image


@pytest.mark.model
def test_real_run_computes_what_the_reference_computes(model_path, real_setup):
    """Every policy's decode tokens equal the numpy reference computing the same neurons (naive and hybrid: the
    dense model); every byte used was read or resident; the budget holds; the reads are the simulated ones."""
    from sim.config.experiment import load_experiment
    from sim.engine.simulate import simulate_case
    from sim.real.compare import reference_outputs
    from sim.real.executor import execute_case

    exp, _, image = real_setup
    outs = {}
    for case in load_experiment(exp):
        real = execute_case(case, image)
        assert real.outputs == reference_outputs(real, case.model, image), case.name
        outs[case.name] = real.outputs
        sim = simulate_case(case)
        decode = real.steps[real.steps.phase == "decode"]
        moved = "flash_moved_bytes" if case.hardware.flash.aligned else "flash_bytes"  # what the device moves
        assert decode[moved].tolist() == sim.tokens.loc[sim.tokens.phase == "decode", "flash_bytes"].tolist()
        if case.config.dram_budget is not None:
            assert real.held_bytes <= case.config.dram_budget
    assert outs["naive"] == outs["hybrid"]  # both lossless: the dense model's tokens


@pytest.mark.model
def test_a_weight_never_read_is_an_error_not_a_zero(model_path, real_setup):
    from sim.lab.flash_image import FlashImage, MissingExtentError
    from sim.policies.base import Held
    from sim.real.weights import ImageWeights

    _, _, image = real_setup
    img = FlashImage.open(image)
    with DirectReader(image, 2) as reader:
        w = ImageWeights(img, reader, None)
        w.load(Held(False, False, [np.zeros(0, np.int64)] * 30), None)
        buf = reader.read(img.layout.neuron_extents(3, np.array([5, 6])))
        assert w.ffn(3, np.array([5, 6]), buf)[0]["up"].shape == (2, 576)
        with pytest.raises(MissingExtentError, match="neuron 7"):
            w.ffn(3, np.array([5, 7]), buf)
        with pytest.raises(MissingExtentError, match="op q"):
            w.op(3, "q", (576, 576), None)
        with pytest.raises(CapacityError, match="over the budget"):
            ImageWeights(img, reader, 50e6).load(Held(True, True, [np.zeros(0, np.int64)] * 30), None)


@pytest.mark.model
def test_execute_command_writes_the_comparison(model_path, real_setup, tmp_path):
    exp, images, _ = real_setup
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "sim", "execute", str(exp), "--out", str(out), "--images",
                          str(images), "--quiet", "--warmup", "1"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    for name in ("comparison.csv", "summary.csv", "real_steps.csv", "simulated_steps.csv", "about.md",
                 "real_vs_sim.png"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "summary.csv")
    assert summary.outputs_match_reference.all() and len(summary) == 4
    table = pd.read_csv(out / "comparison.csv")
    assert set(table.component) == {"total", "io", "memmgmt", "compute"}
    assert (table.measured_ms >= 0).all() and table.simulated_ms.notna().all()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("batch=2", "one request"),
        ("activations.offset_tokens=1", "at least context_tokens"),
        ("decode_tokens=5000", "the trace has 960 tokens"),
    ],
)
def test_execute_bad_inputs_are_one_line(real_setup, tmp_path, setting, message):
    exp, images, _ = real_setup
    run = subprocess.run([sys.executable, "-m", "sim", "execute", str(exp), "--out", str(tmp_path / "r"), "--images",
                          str(images), "--quiet", "--set", setting], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
