"""Finished points are stored and a rerun skips them; a sweep killed in the middle completes on the same command
with no lost or duplicated rows; a change of input or code is a new point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sim import points
from sim.config.experiment import load_experiment
from sim.runner import run_experiment

FIXTURES = Path(__file__).parent / "fixtures"
SWEEP = {
    "name": "s",
    "hardware": str(FIXTURES / "hw-simple.yaml"),
    "model": str(FIXTURES / "model-uniform.yaml"),
    "decode_tokens": 2,
    "policy": {"name": "naive"},
    "sweep": {"hardware_overrides.flash.latency": ["10 us", "20 us", "30 us", "40 us"]},
}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_rerun_loads_the_finished_points(tmp_path, monkeypatch):
    exp = _write(tmp_path / "s.yaml", SWEEP)
    first = run_experiment(exp, tmp_path / "a", plots=False, progress=False)
    monkeypatch.setattr("sim.runner.simulate_case", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    again = run_experiment(exp, tmp_path / "b", plots=False, progress=False)  # nothing simulated
    pd.testing.assert_frame_equal(pd.read_csv(first / "summary.csv"), pd.read_csv(again / "summary.csv"))


def test_the_key_follows_inputs_and_code(tmp_path):
    exp = _write(tmp_path / "s.yaml", SWEEP)
    a, b = load_experiment(exp)[:2]
    assert points.point_key(a, True) != points.point_key(b, True)  # another swept value
    assert points.point_key(a, True) != points.point_key(a, False)
    hw = tmp_path / "hw.yaml"
    hw.write_text((FIXTURES / "hw-simple.yaml").read_text())
    one = points.point_key(load_experiment(_write(tmp_path / "h.yaml", SWEEP | {"hardware": str(hw)}))[0], True)
    hw.write_text(hw.read_text().replace('"1 TB"', '"2 TB"'))
    two = points.point_key(load_experiment(tmp_path / "h.yaml")[0], True)
    assert one != two  # a profile's content, not its name


def test_a_killed_sweep_completes_on_the_same_command(tmp_path):
    slow = SWEEP | {"decode_tokens": 20000, "timeline_tokens": 0}
    exp = _write(tmp_path / "slow.yaml", slow)
    store = Path(os.environ["SIM_POINTS_DIR"])
    before = set(store.glob("*.pkl"))
    cmd = [sys.executable, "-m", "sim", "run", str(exp), "--out", str(tmp_path / "out"), "--quiet", "--no-plots"]
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while len(set(store.glob("*.pkl")) - before) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(set(store.glob("*.pkl")) - before)
    assert 2 <= done_before < 4 and not (tmp_path / "out").exists()
    assert subprocess.run(cmd, env=os.environ.copy()).returncode == 0
    resumed = pd.read_csv(tmp_path / "out" / "summary.csv")
    fresh = pd.read_csv(
        run_experiment(exp, tmp_path / "fresh", plots=False, progress=False, fresh=True) / "summary.csv"
    )
    assert list(resumed["case"]) == list(fresh["case"])  # every point once, in order
    assert (resumed["total_ms"].to_numpy() == fresh["total_ms"].to_numpy()).all()


def test_derived_arrays_are_computed_once_per_content():
    calls = []

    def compute():
        calls.append(1)
        return np.arange(5)

    a = np.ones((3, 4), bool)
    first = points.derived("t", [a], compute)
    again = points.derived("t", [a], compute)
    other = points.derived("t", [~a], compute)
    assert (first == again).all() and (other == np.arange(5)).all() and len(calls) == 2


def test_a_runs_predicted_masks_are_stored_once_and_replayed_identically(tmp_path, monkeypatch):
    from sim.config.experiment import load_experiment
    from sim.engine.simulate import simulate_case
    from sim.policies.llm_in_flash import LlmInFlash

    monkeypatch.setenv("SIM_POINTS_DIR", str(tmp_path / "points"))
    overrides = {"decode_tokens": 24, "policy.capacity_tokens": 24, "dram_budget": "10 GB"}
    (case,) = [c for c in load_experiment("experiments/lif_table3.yaml", overrides) if c.name == "all-cpu"]
    first = simulate_case(case, timeline=False)
    stored = list((tmp_path / "points" / "derived").glob("masks-*.npz"))
    assert len(stored) == 1

    def no_compute(*args, **kwargs):
        raise AssertionError("the masks were computed again")

    monkeypatch.setattr(LlmInFlash, "_computed_stream", no_compute)
    second = simulate_case(case, timeline=False)
    columns = ["total_ms", "io_ms", "memmgmt_ms", "compute_ms", "flash_GB_per_token"]
    assert [second.summary[c] for c in columns] == [first.summary[c] for c in columns]
    decode = lambda r: r.tokens[r.tokens.phase == "decode"].reset_index(drop=True)  # noqa: E731
    assert decode(second)[["neurons_predicted", "neurons_read", "flash_bytes"]].equals(
        decode(first)[["neurons_predicted", "neurons_read", "flash_bytes"]]
    )
    monkeypatch.undo()
    monkeypatch.setenv("SIM_POINTS_DIR", str(tmp_path / "points"))
    (reseeded,) = [c for c in load_experiment("experiments/lif_table3.yaml", overrides | {"seed": 7})
                   if c.name == "all-cpu"]  # fmt: skip
    simulate_case(reseeded, timeline=False)  # other draws: stored apart, not confused with the first
    assert len(list((tmp_path / "points" / "derived").glob("masks-*.npz"))) == 2


def test_a_changed_statistics_file_changes_the_point_key(tmp_path, monkeypatch):
    import sim.traces.statistics
    from sim.config.experiment import load_experiment
    from sim.points import point_key

    monkeypatch.setattr(sim.traces.statistics, "STATISTICS_DIR", tmp_path)  # named, not a path in the config
    stats = yaml.safe_load(Path("traces/statistics/opt-6.7b-table6.yaml").read_text())
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(stats))
    exp = tmp_path / "e.yaml"
    exp.write_text(
        "name: e\nhardware: apple-m1-max\nmodel: opt-6.7b\ndecode_tokens: 4\npolicy: {name: naive}\n"
        f"activations: {{source: projection, path: {Path('traces/smollm2-135m.trace').resolve()}, density: mine}}\n"
    )
    before = point_key(load_experiment(exp)[0], False)
    stats["density"]["mean"] = 0.04
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(stats))
    assert point_key(load_experiment(exp)[0], False) != before
