"""LLM in a Flash reproduction targets: every published number of experiments/lif_table2.yaml within 10% and of
experiments/lif_table3.yaml within 15% (the issue's targets), simulated at the files' committed settings.

tests/test_experiments.py pins the exact numbers (expected CSVs); this file pins the agreement with the paper,
so a model change that drifts away from the paper fails here even if the expected CSVs are regenerated. The
known disagreements (each explained in the experiment's ``calibration:`` field) are strict xfails: they fail
the suite if they start agreeing, so the list stays true.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from sim.config.experiment import load_experiment
from sim.engine.simulate import simulate_case

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TARGET_PCT = {"lif_table2": 10.0, "lif_table3": 15.0}
KNOWN = {
    ("lif_table3", "all-rtx4090", "io_ms"): "980 PRO curve: ~5.1 GB/s at 16 KiB where 30 ms needs ~7 GB/s",
}


def _rows() -> list:
    rows = []
    for name in TARGET_PCT:
        for case in load_experiment(EXPERIMENTS / f"{name}.yaml"):
            for metric, published in case.published.items():
                reason = KNOWN.get((name, case.name, metric))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                rows.append(
                    pytest.param(name, case.name, metric, published, marks=marks, id=f"{name}-{case.name}-{metric}")
                )
    return rows


@cache
def _summary(name: str, case_name: str) -> dict:
    case = next(c for c in load_experiment(EXPERIMENTS / f"{name}.yaml") if c.name == case_name)
    return simulate_case(case, timeline=False).summary


@pytest.mark.parametrize(("name", "case_name", "metric", "published"), _rows())
def test_published_number_within_target(name, case_name, metric, published):
    simulated = _summary(name, case_name)[metric]
    if published == 0:
        assert simulated == 0
        return
    error_pct = 100 * (simulated - published) / published
    assert abs(error_pct) <= TARGET_PCT[name], f"{metric}: simulated {simulated:.4g} vs published {published:g}"


def test_every_known_disagreement_names_a_published_number():
    published = {(r.values[0], r.values[1], r.values[2]) for r in _rows()}
    assert set(KNOWN) <= published
