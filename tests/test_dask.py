"""The Dask executor: a LocalCluster gives the serial run's results, and a user error inside a Dask worker is the
same one line."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.cli import main
from sim.runner import run_experiment

pytest.importorskip("distributed")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
FIXTURES = Path(__file__).parent / "fixtures"
TRACE = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"


def test_a_local_cluster_gives_the_serial_results(tmp_path):
    path, sets = EXPERIMENTS / "lif_baselines.yaml", {"decode_tokens": 3}
    dask = run_experiment(path, tmp_path / "dask", sets, plots=False, progress=False, executor="dask", workers=2,
                          fresh=True)  # fmt: skip
    serial = run_experiment(path, tmp_path / "serial", sets, plots=False, progress=False)
    for name in ("tokens.parquet", "requests.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(dask / name), pd.read_parquet(serial / name))
    assert (dask / "timeline.json").read_text() == (serial / "timeline.json").read_text()


def test_errors_from_dask_workers_and_flags_are_one_line(tmp_path, capsys):
    base = {"name": "e", "hardware": str(FIXTURES / "hw-simple.yaml"), "model": str(FIXTURES / "model-uniform.yaml"),
            "decode_tokens": 2, "policy": {"name": "naive"}}  # fmt: skip
    long = {"model": "smollm2-135m", "decode_tokens": 961, "activations": {"source": "trace", "path": str(TRACE)},
            "policy": {"name": "llm_in_flash", "capacity_tokens": 4}}  # fmt: skip
    exp = tmp_path / "e.yaml"
    exp.write_text(yaml.safe_dump(base | {"cases": [{"name": "ok"}, {"name": "long", "set": long}]}))
    out = ["--out", str(tmp_path / "out"), "--quiet", "--no-plots"]
    assert main(["run", str(exp), "--executor", "dask", "--workers", "2", *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(case long): decode_tokens: 961 steps need" in err
    assert not (tmp_path / "out").exists()
    assert main(["run", str(exp), "--scheduler", "tcp://127.0.0.1:1", *out]) == 2
    assert "--scheduler: needs --executor dask" in capsys.readouterr().err
