"""The decode engine against closed forms, determinism, and the results folder."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.cli import main
from sim.config.experiment import load_experiment
from sim.devices.processor import Processor
from sim.engine.requests import Step
from sim.engine.simulate import simulate_case
from sim.policies.ops import StepOps

FIXTURES = Path(__file__).parent / "fixtures"
HW = FIXTURES / "hw-simple.yaml"  # flat 1 GB/s flash, 100 us latency, 10 GB/s PCIe, no overheads
MODEL = FIXTURES / "model-uniform.yaml"


def case(**overrides):
    base = {
        "name": "t",
        "hardware": str(HW),
        "model": str(MODEL),
        "decode_tokens": 3,
        "context_tokens": 16,
        "policy": {"name": "naive"},
        "timeline_tokens": 1,
        "prefill_chunk_tokens": 0,  # the prompt is in the KV cache: every row is a decode step
    }
    path = Path(tempfile.mkdtemp()) / "case.yaml"
    (c,) = load_experiment(_write(path, base), overrides)
    return c


def _write(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def layer_times(c, t: int = 0) -> tuple[float, float, float]:
    """(load_s, compute_s, lm_head_s) of one layer from the model bytes, by hand."""
    m = c.model
    load_bytes = m.layer_bytes(c.config.dtype)
    load_s = c.hardware.flash.latency + load_bytes / 1e9
    proc = Processor(None, "p", c.hardware.processors[c.config.processor])
    step = Step(t, "decode", (0,), (c.config.context_tokens + t,), (1,), (t,))
    ops = StepOps(m, c.config.dtype, c.config.kv_dtype)
    compute_s = sum(proc.op_time_s(op) for op in ops.dense_layer(step, last=False))
    last_s = sum(proc.op_time_s(op) for op in ops.dense_layer(step, last=True))
    return load_s, compute_s, last_s - compute_s


def test_naive_io_is_bytes_over_throughput():
    c = case()
    rows = simulate_case(c).tokens
    load_s, compute_s, lm_s = layer_times(c)
    lm_bytes = c.model.vocab_size * c.model.d_model * 2
    expected_io = c.model.n_layers * load_s + lm_bytes / 1e9
    assert rows["io_stall_s"].iloc[0] == pytest.approx(expected_io, rel=1e-9)
    assert rows["flash_bytes"].iloc[0] == pytest.approx(c.model.n_layers * c.model.layer_bytes("fp16") + lm_bytes)
    assert rows["compute_s"].iloc[0] == pytest.approx(c.model.n_layers * compute_s + lm_s, rel=1e-9)
    parts = rows[["io_stall_s", "xfer_s", "memmgmt_s", "compute_s", "idle_s"]].sum(axis=1)
    assert np.allclose(rows["total_s"], parts, rtol=1e-12) and (rows["idle_s"] == 0).all()


@pytest.mark.parametrize("compute_bound", [False, True])
def test_overlap_pipeline_steady_state_is_max_of_stages(compute_bound):
    # compute-bound: slow the CPU 2000x so that compute per layer exceeds the load.
    eff = {"hardware_overrides": {"processors": {"cpu": {"bandwidth_efficiency": 0.0005}}}} if compute_bound else {}
    c = case(**{"policy.overlap": True}, **eff)
    load_s, compute_s, lm_s = layer_times(c)
    assert (compute_s > load_s) == compute_bound
    n = c.model.n_layers
    lm_bytes_s = c.model.vocab_size * c.model.d_model * 2 / 1e9  # the last layer also reads the LM head
    expected = load_s + (n - 1) * max(load_s, compute_s) + compute_s + lm_s
    total = simulate_case(c).tokens["total_s"].iloc[0]
    assert total == pytest.approx(expected, rel=1e-6, abs=2 * lm_bytes_s)


def test_overlap_never_slower_than_serial():
    serial = simulate_case(case()).tokens["total_s"].sum()
    overlapped = simulate_case(case(**{"policy.overlap": True})).tokens["total_s"].sum()
    assert overlapped < serial


def test_gpu_staging_streams_alongside_the_read():
    c = case(processor="gpu")
    rows = simulate_case(c).tokens
    per_layer_bytes = c.model.layer_bytes("fp16")
    # flash 1 GB/s is slower than PCIe 10 GB/s: the link never adds time, but carries every byte
    assert rows["io_stall_s"].iloc[0] == pytest.approx(simulate_case(case()).tokens["io_stall_s"].iloc[0])
    assert rows["pcie_dram_to_vram_bytes"].iloc[0] == pytest.approx(rows["flash_bytes"].iloc[0])
    slow_link = case(processor="gpu", hardware_overrides={"links": {"pcie": {"bandwidth_forward": "0.5 GB/s"}}})
    io = simulate_case(slow_link).tokens["io_stall_s"].iloc[0]
    assert io == pytest.approx(c.model.n_layers * per_layer_bytes / 0.5e9, rel=1e-3)


def test_same_config_identical_results():
    a = simulate_case(case(**{"policy.name": "hybrid", "dram_budget": "0.06 GB"}))
    b = simulate_case(case(**{"policy.name": "hybrid", "dram_budget": "0.06 GB"}))
    cols = [c for c in a.tokens.columns]
    pd.testing.assert_frame_equal(a.tokens[cols], b.tokens[cols])
    assert a.summary["simpy_events"] == b.summary["simpy_events"] > 0


def test_hybrid_streams_what_the_budget_cannot_hold():
    c = case(**{"policy.name": "hybrid", "dram_budget": "0.06 GB"})
    r = simulate_case(c)
    m = c.model
    resident_ffn = 0.06e9 - m.n_layers * m.attention_bytes_per_layer("fp16") - m.embedding_bytes("fp16")
    streamed = m.n_layers * m.ffn_bytes_per_layer("fp16") - resident_ffn
    assert r.tokens["flash_bytes"].iloc[0] == pytest.approx(streamed, rel=1e-3)
    assert r.summary["dram_GB"] == pytest.approx(0.06, rel=1e-3)


def test_run_writes_results_folder(tmp_path, capsys):
    exp = _write(
        tmp_path / "e.yaml",
        {
            "name": "e",
            "hardware": str(HW),
            "model": str(MODEL),
            "decode_tokens": 2,
            "policy": {"name": "naive"},
            "cases": [{"name": "a", "published": {"io_ms": 1.0, "total_ms": 1.0}, "calibrated": ["io_ms"]}],
        },
    )
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out), "--quiet"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "config.resolved.yaml",
        "tokens.parquet",
        "requests.parquet",
        "summary.json",
        "summary.csv",
        "timeline.json",
        "comparison.csv",
        "latency_breakdown.png",
        "timeline.png",
        "comparison.png",
    } <= names
    comparison = pd.read_csv(out / "comparison.csv")
    assert list(comparison.columns) == ["case", "metric", "role", "published", "simulated", "error_pct"]
    assert comparison["role"].tolist() == ["calibrated", "predicted"]
    trace = json.loads((out / "timeline.json").read_text())["traceEvents"]
    assert {e["args"]["name"] for e in trace if e.get("name") == "thread_name"} >= {"flash", "cpu", "step"}


def _failed_run(tmp_path: Path, capsys, **fields) -> tuple[Path, str]:
    """Run an OPT-6.7B experiment with these fields that must fail: (its file, the one-line error)."""
    base = {"name": "e", "hardware": str(HW), "model": "opt-6.7b", "decode_tokens": 2}
    exp = _write(tmp_path / "e.yaml", base | fields)
    assert main(["run", str(exp), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return exp, err


def test_failed_run_leaves_nothing(tmp_path, capsys):
    exp, err = _failed_run(tmp_path, capsys, dram_budget="1 GB", policy={"name": "all_dram"})
    assert "dram: cannot allocate" in err and "budget" in err
    assert f"{exp} (case e): dram:" in err  # the file and the case that did not fit
    assert list(tmp_path.iterdir()) == [exp]  # no results folder, nothing half-written


def test_an_error_while_simulating_names_the_file_the_case_and_the_key(tmp_path, capsys):
    exp, err = _failed_run(
        tmp_path,
        capsys,
        activations={"source": "projection", "path": "traces/smollm2-135m.trace", "calib_tokens": 16},
        policy={"name": "llm_in_flash", "predictor": "trained"},
        cases=[{"name": "trained-on-projection", "set": {"policy.window_k": 2}}],
    )
    assert err.startswith(f"error: {exp} (case trained-on-projection): policy.predictor: projection of [trace")
    assert "has no hidden states to train on" in err and err.rstrip().endswith("(got 'trained')")
