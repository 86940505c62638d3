"""Every experiment file validates; the CI-flagged ones run and match their committed expected output.

``experiments/expected/<name>.csv`` is the comparison.csv of a reviewed run. Regenerate it deliberately with
``python -m sim run experiments/<name>.yaml --out /tmp/x && cp /tmp/x/comparison.csv experiments/expected/<name>.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sim.config.base import load_yaml
from sim.config.experiment import load_experiment
from sim.errors import ConfigError
from sim.runner import run_experiment, validate_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
ALL_FILES = sorted(EXPERIMENTS.glob("*.yaml"))
FILES = [p for p in ALL_FILES if load_yaml(p).get("kind", "simulation") == "simulation"]
CI_FILES = [p for p in FILES if load_experiment(p)[0].config.ci]


@pytest.mark.parametrize("path", ALL_FILES, ids=[p.stem for p in ALL_FILES])
def test_experiment_file_validates(path):
    lines = validate_experiment(path)  # a sweep's point that does not fit is a result, said as such
    cases = [line for line in lines if not line.startswith("note: ")]  # notes: assumptions the file makes
    assert all(line.startswith(("ok  ", "does not fit  ")) for line in cases) and cases[0].startswith("ok  ")


def test_unknown_kind(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("kind: telepathy\nname: x\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: kind: unknown kind; known: simulation, accuracy.*'telepathy'"):
        validate_experiment(path)


@pytest.mark.parametrize("path", CI_FILES, ids=[p.stem for p in CI_FILES])
def test_ci_experiment_matches_expected(path, tmp_path):
    out = run_experiment(path, tmp_path / "out", plots=False, progress=False)
    got = pd.read_csv(out / "comparison.csv")
    expected = pd.read_csv(EXPERIMENTS / "expected" / f"{path.stem}.csv")
    labels = ["case", "metric", "role", "published"]
    pd.testing.assert_frame_equal(got[labels], expected[labels])
    assert got["simulated"].to_numpy() == pytest.approx(expected["simulated"].to_numpy(), rel=1e-6, abs=1e-9)


def test_parallel_cases_give_identical_results(tmp_path):
    path = EXPERIMENTS / "lif_baselines.yaml"
    serial = run_experiment(path, tmp_path / "serial", {"decode_tokens": 3}, plots=False, progress=False)
    parallel = run_experiment(
        path, tmp_path / "par", {"decode_tokens": 3}, plots=False, progress=False, workers=2, fresh=True
    )  # fresh: computed again, not the serial run's stored points
    pd.testing.assert_frame_equal(
        pd.read_parquet(serial / "tokens.parquet"), pd.read_parquet(parallel / "tokens.parquet")
    )
    assert (serial / "timeline.json").read_text() == (parallel / "timeline.json").read_text()
