"""DRAM in use vs allocated: a preallocated neuron matrix is allocated at its peak, but holds the window's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _run(case_name: str):
    cases = load_experiment(
        EXPERIMENTS / "lif_table2.yaml", {"decode_tokens": 6, "policy.capacity_tokens": 6, "prefill_chunk_tokens": 0}
    )
    return simulate_case(next(c for c in cases if c.name == case_name), timeline=False)


def test_window_matrices_occupy_their_resident_rows_each_token():
    result = _run("windowing")
    tokens, tenants = result.tokens, result.summary["dram_tenants_GB"]  # (no prefill: every row decodes)
    static_bytes = 1e9 * (sum(tenants.values()) - tenants["ffn_window"])
    neuron_bytes = load_experiment(EXPERIMENTS / "lif_table2.yaml")[0].model.neuron_bytes("fp16")
    expected = static_bytes + tokens["neurons_resident"] * neuron_bytes
    assert tokens["dram_used_bytes"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-12)
    assert result.summary["dram_used_GB"] == pytest.approx(tokens["dram_used_bytes"].mean() / 1e9)
    assert result.summary["dram_used_GB"] < result.summary["dram_GB"]  # the peak is above the mean


def test_static_tenants_are_in_use_in_full():
    summary = _run("predictor").summary  # window_k 0: no matrix, only static tenants
    assert summary["dram_used_GB"] == pytest.approx(summary["dram_GB"], rel=1e-12)
