"""--out never deletes or overwrites what this tool did not write; partial folders never outlive a run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sim.cli import main
from sim.errors import ConfigError
from sim.outfolder import MARKER, ResultsFolder
from sim.runner import run_experiment

FIXTURES = Path(__file__).parent / "fixtures"
EXPERIMENT = {
    "name": "e",
    "hardware": str(FIXTURES / "hw-simple.yaml"),
    "model": str(FIXTURES / "model-uniform.yaml"),
    "decode_tokens": 2,
    "policy": {"name": "naive"},
}


def _experiment(folder: Path, **changes) -> Path:
    path = folder / "e.yaml"
    path.write_text(yaml.safe_dump({**EXPERIMENT, **changes}))
    return path


def _run(exp: Path, out: str, capsys) -> tuple[int, str]:
    code = main(["run", str(exp), "--out", out, "--quiet", "--no-plots"])
    return code, capsys.readouterr().err


def test_a_new_folder_is_created_and_marked(tmp_path, capsys):
    out = tmp_path / "deep" / "out"
    code, _ = _run(_experiment(tmp_path), str(out), capsys)
    assert code == 0 and (out / MARKER).is_file() and (out / "summary.csv").is_file()


def test_a_previous_result_is_replaced(tmp_path, capsys):
    exp, out = _experiment(tmp_path), tmp_path / "out"
    assert _run(exp, str(out), capsys)[0] == 0
    (out / "summary.csv").write_text("stale")
    assert _run(exp, str(out), capsys)[0] == 0
    assert (out / "summary.csv").read_text() != "stale"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_folder_of_user_files_is_refused_and_untouched(tmp_path, capsys):
    exp = _experiment(tmp_path)
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("chapter 1")
    code, err = _run(exp, str(tmp_path), capsys)
    assert code == 2 and "did not write" in err and err.count("\n") == 1
    assert thesis.read_text() == "chapter 1" and exp.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml", "thesis.tex"]


def test_a_user_file_dropped_into_a_result_is_kept(tmp_path, capsys):
    exp, out = _experiment(tmp_path), tmp_path / "out"
    assert _run(exp, str(out), capsys)[0] == 0
    (out / "notes.md").write_text("mine")
    code, err = _run(exp, str(out), capsys)
    assert code == 2 and "notes.md" in err
    assert (out / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("out", ["", ".", ".."])
def test_the_current_or_parent_folder_is_refused(tmp_path, capsys, out, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = _experiment(tmp_path)
    code, err = _run(exp, out, capsys)
    assert code == 2 and "--out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml"]


def test_a_file_is_refused_not_turned_into_a_folder(tmp_path, capsys):
    target = tmp_path / "result.txt"
    target.write_text("keep")
    code, err = _run(_experiment(tmp_path), str(target), capsys)
    assert code == 2 and "not a folder" in err and target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml", "result.txt"]


@pytest.mark.parametrize("under", ["file", "proc"])
def test_an_impossible_place_is_one_line(tmp_path, capsys, under):
    (tmp_path / "f").write_text("x")
    out = str(tmp_path / "f" / "out") if under == "file" else "/proc/sparse-llm-sim-out"
    code, err = _run(_experiment(tmp_path), out, capsys)
    assert code == 2 and err.startswith("error: --out: cannot create") and err.count("\n") == 1


def test_an_empty_folder_is_used(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert _run(_experiment(tmp_path), str(out), capsys)[0] == 0
    assert (out / "summary.csv").is_file()


def test_a_failed_run_leaves_nothing(tmp_path, capsys):
    exp = _experiment(tmp_path, dram_budget="1 kB", policy={"name": "all_dram"})
    code, err = _run(exp, str(tmp_path / "out"), capsys)
    assert code == 2 and "cannot allocate" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml"]


def test_an_error_while_writing_removes_the_partial_folder(tmp_path):
    with pytest.raises(RuntimeError), ResultsFolder(tmp_path / "out") as tmp:
        (tmp / "half.csv").write_text("x")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_a_partial_folder_left_by_sigkill_is_removed_by_the_next_run(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}.abc"
    stale.mkdir()
    (stale / MARKER).write_text('{"tool": "sparse-llm-sim", "files": []}')
    assert _run(_experiment(tmp_path), str(tmp_path / "out"), capsys)[0] == 0
    assert not stale.exists()


def test_sigterm_removes_the_partial_folder(tmp_path):
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(120)\n")  # a plot script still running
    exp = _experiment(tmp_path, plots=["slow.py"])
    proc = subprocess.Popen([sys.executable, "-m", "sim", "run", str(exp), "--out", str(tmp_path / "out"), "--quiet"])
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".out.partial-") for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml", "slow.py"]


def test_a_refused_out_costs_no_simulation(tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("x")
    monkeypatch.setattr("sim.runner._simulate_all", lambda *a, **k: pytest.fail("simulated before checking --out"))
    with pytest.raises(ConfigError, match="did not write"):
        run_experiment(_experiment(tmp_path), tmp_path, progress=False, plots=False)
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_a_failing_plot_keeps_the_results_and_says_where_they_are(tmp_path, capsys):
    exp = tmp_path / "e.yaml"
    (tmp_path / "broken.py").write_text("raise SystemExit('no such column: x')\n")
    exp.write_text(
        "name: e\nhardware: apple-m1-max\nmodel: smollm2-135m\ndecode_tokens: 2\ncontext_tokens: 4\n"
        "policy: {name: naive}\nplots: [broken.py]\n"
    )
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"results are in {out}" in err and "plot script broken.py failed: no such column: x" in err
    assert (out / "summary.csv").is_file() and (out / "tokens.parquet").is_file()
