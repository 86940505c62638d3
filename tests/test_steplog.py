"""Step rows streamed in parts: the parts read back as the rows, the results file is their union, and a run split
into many parts writes the same results as one held whole."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.cli import main
from sim.engine import steplog
from sim.engine.steplog import StepLog, write_parquet


def _rows(n: int) -> list[dict]:
    # a policy statistic that appears late and an int column that turns float: parts differ in schema
    return [{"step": i, "phase": "decode", "total_s": 0.5 * i} | ({"hits": i} if i >= 5 else {"misses": 1.5})
            for i in range(n)]  # fmt: skip


@pytest.mark.parametrize("spool", [False, True])
def test_parts_read_back_as_the_rows(tmp_path: Path, spool: bool) -> None:
    log = StepLog(tmp_path / "spool" if spool else None, flush_rows=3)
    for row in _rows(10):
        log.append(row)
    assert len(log) == 10 and len(log._parts) == 3  # the tenth row is still held
    expected = pd.DataFrame(_rows(10))
    got = log.frame()
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)
    assert len(list((tmp_path / "spool").glob("*.parquet"))) == (3 if spool else 0)


def test_embedded_outlives_the_spool(tmp_path: Path) -> None:
    log = StepLog(tmp_path / "spool", flush_rows=4)
    for row in _rows(9):
        log.append(row)
    kept = pickle.loads(pickle.dumps(log.embedded()))
    for part in (tmp_path / "spool").iterdir():
        part.unlink()
    assert kept.frame()["total_s"].tolist() == [0.5 * i for i in range(9)]


def test_results_file_is_the_union_of_parts(tmp_path: Path) -> None:
    a, b = StepLog(flush_rows=4), StepLog(flush_rows=100)
    for row in _rows(10):
        a.append(row)
    b.append({"step": 0, "phase": "prefill", "total_s": 2.0, "kv_bytes": 7})
    write_parquet(tmp_path / "tokens.parquet", [("a", a), ("b", b)])
    got = pd.read_parquet(tmp_path / "tokens.parquet")
    assert got["case"].tolist() == ["a"] * 10 + ["b"]
    assert got["hits"].isna().sum() == 6 and got["hits"].iloc[9] == 9
    assert got["misses"].iloc[:5].tolist() == [1.5] * 5 and got["kv_bytes"].iloc[-1] == 7


def test_a_run_in_many_parts_writes_what_one_part_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fix = Path(__file__).parent / "fixtures"
    experiment = {"name": "parts", "hardware": str(fix / "hw-simple.yaml"), "model": str(fix / "model-uniform.yaml"),
                  "decode_tokens": 23, "context_tokens": 8, "batch": 2, "prefill_chunk_tokens": 4, "plots": [],
                  "policy": {"name": "naive"}}  # fmt: skip
    path = tmp_path / "parts.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path), "--out", str(tmp_path / "whole"), "--quiet", "--fresh"]) == 0
    monkeypatch.setattr(steplog, "FLUSH_ROWS", 5)
    assert main(["run", str(path), "--out", str(tmp_path / "parts"), "--quiet", "--fresh"]) == 0
    whole, parts = (pd.read_parquet(tmp_path / d / "tokens.parquet") for d in ("whole", "parts"))
    assert len(whole) == 23 + 4  # decode steps of the batch, and prefill chunks
    pd.testing.assert_frame_equal(whole, parts)
    s_whole, s_parts = (pd.read_csv(tmp_path / d / "summary.csv") for d in ("whole", "parts"))
    numeric = [c for c in s_whole.columns if s_whole[c].dtype.kind == "f" and "wall" not in c]
    assert np.allclose(s_whole[numeric], s_parts[numeric], rtol=1e-12, equal_nan=True)
    assert not (tmp_path / "parts" / ".steps").exists()
