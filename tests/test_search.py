"""Successive halving (sim/search.py): rungs, survivors equal to the grid's best, what it skipped, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sim.config.experiment import load_experiment
from sim.config.search import SearchConfig
from sim.errors import ConfigError
from sim.runner import run_experiment
from sim.search import rungs

EXPERIMENT = """\
name: halving-test
hardware: oneplus-12
model: smollm2-135m
dtype: fp16
decode_tokens: 12
prefill_chunk_tokens: 0
timeline_tokens: 0
activations: {source: trace, path: traces/smollm2-135m.trace, rule: "threshold:0.9"}
layout: {name: bundled}
policy: {name: llm_in_flash, predictor: oracle, window_k: 5, capacity_tokens: 16}
plots: []
cases:
  - {name: naive, set: {policy: {name: naive}}}
  - {name: hybrid, set: {policy: {name: hybrid}}}
  - {name: lif1, set: {policy.window_k: 1}}
  - {name: lif4, set: {policy.window_k: 4}}
sweep:
  dram_budget: ["100 MB", "200 MB"]
"""
SEARCH = "search: {method: halving, objective: total_ms, goal: min, min_decode_tokens: 2, eta: 2, per: dram_budget}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text.replace("traces/", f"{Path(__file__).resolve().parents[1]}/traces/"))
    return path


def test_rungs_grow_by_eta_and_end_at_the_full_run():
    search = SearchConfig(method="halving", min_decode_tokens=4, eta=3)
    assert rungs(search, 48) == [4, 12, 36, 48]
    assert rungs(search, 4) == [4] and rungs(search, 3) == [3]


def test_halving_finds_the_grids_best_per_group_with_fewer_tokens(tmp_path):
    grid = run_experiment(write(tmp_path, EXPERIMENT), tmp_path / "grid", plots=False, progress=False)
    halved = run_experiment(write(tmp_path, EXPERIMENT + SEARCH), tmp_path / "halved", plots=False, progress=False)
    full, search = pd.read_csv(grid / "summary.csv"), pd.read_csv(halved / "summary.csv")
    assert len(search) == len(full) == 8  # every case has a row: its last rung
    for budget, part in full[full.status == "ok"].groupby("sweep.dram_budget"):
        best = part.sort_values("total_ms").case.iloc[0]
        finalists = search[(search["sweep.dram_budget"] == budget) & search.search_survived]
        assert best in set(finalists.case)  # the grid's fastest ran the last rung
        winner = finalists.sort_values("total_ms").iloc[0]
        assert winner.total_ms == pytest.approx(part.total_ms.min())  # and its full run is the grid's
    assert search.search_tokens.iloc[0] < search.grid_tokens.iloc[0] == 12 * 8
    assert set(search.search_decode_tokens) <= {2, 4, 8, 12}


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ("search: {method: halving, objective: colour}\n", "search.objective: not a numeric summary column"),
        ("search: {method: halving, per: policy.window_k}\n", "search.per: must be a swept or zipped path"),
        ("search: {method: halving, eta: 1}\n", "search.eta"),
        ("search: {method: bayes}\n", "search.method"),
    ],
)
def test_bad_search_is_one_line(tmp_path, search, message):
    path = write(tmp_path, EXPERIMENT + search)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_experiment(path)
        run_experiment(path, tmp_path / "out", plots=False, progress=False)
    assert not (tmp_path / "out").exists()
