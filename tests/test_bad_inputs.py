"""Each kind of bad input found by hand is one line naming the file, the key and the value, exit code 2, and
nothing written -- from ``validate`` and from ``run`` alike (tests/test_fuzz.py generates many more)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
TRACE = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"
BASE = {
    "name": "e",
    "hardware": str(FIXTURES / "hw-simple.yaml"),
    "model": str(FIXTURES / "model-uniform.yaml"),
    "decode_tokens": 2,
    "policy": {"name": "naive"},
}
HW = yaml.safe_load((FIXTURES / "hw-simple.yaml").read_text())


def _cli(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    code = main([*args])
    err = capsys.readouterr().err
    return code, err


def _expect_one_line(tmp_path, capsys, exp: Path, pattern: str, *extra: str) -> None:
    for verb in ("validate", "run"):
        out = ["--out", str(tmp_path / "out"), "--quiet", "--no-plots"] if verb == "run" else []
        code, err = _cli(tmp_path, capsys, verb, str(exp), *out, *extra)
        assert code == 2, f"{verb}: exit {code}, stderr {err!r}"
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert re.search(pattern, err), f"{verb}: {err!r} !~ {pattern!r}"
        assert not (tmp_path / "out").exists()


def _write(tmp_path: Path, data: dict, name: str = "e.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _hardware(tmp_path: Path, dotted: str, value) -> str:
    """hw-simple.yaml with one value changed, written beside the experiment."""
    data = yaml.safe_load((FIXTURES / "hw-simple.yaml").read_text())
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    path = tmp_path / "hw.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        (b"name: e # caf\xe9\n", r"e\.yaml: is not UTF-8 text \(byte 0xe9 at offset 13\)"),
        ("name: e\n".encode("utf-16"), r"e\.yaml: is not UTF-8 text"),
        (b"name: e\nname: f\n", r"e\.yaml: line 2: duplicate or unhashable mapping key \(got 'name'\)"),
        (b"a: " + b"[" * 3000 + b"]" * 3000, r"e\.yaml: invalid YAML: nested too deeply"),
    ],
    ids=["latin-1", "utf-16", "duplicate-key", "deep-nesting"],
)
def test_unreadable_yaml(tmp_path, capsys, raw, pattern):
    exp = tmp_path / "e.yaml"
    exp.write_bytes(raw)
    _expect_one_line(tmp_path, capsys, exp, pattern)


def test_a_zip_passed_as_yaml(tmp_path, capsys):
    exp = tmp_path / "e.yaml"
    with zipfile.ZipFile(exp, "w") as z:
        z.writestr("a.txt", "x" * 100)
    _expect_one_line(tmp_path, capsys, exp, r"e\.yaml: is not (UTF-8 text|a text file)")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"dram_budget": "-4 GB"}, r"dram_budget: must be >= 0 B \(got '-4 GB'\)"),
        ({"seed": -1}, r"seed: Input should be greater than or equal to 0 \(got -1\)"),
        ({"decode_tokens": True}, r"decode_tokens: Input should be a valid integer \(got True\)"),
        ({"decode_tokens": 10**9}, r"decode_tokens: Input should be less than or equal to 1000000"),
        ({"sweep": {"seed": []}}, r"sweep\.seed: List should have at least 1 item"),
        ({"dram_budget": "1000 TB"}, r"dram_budget: exceeds the .* of memory 'dram'"),
        ({"activations": {"source": "synthetic", "path": str(TRACE), "density": float("inf")}},
         r"activations\.density: Input should be a finite number"),
        ({"cases": [{"name": "a", "published": {"io_ms": 1.0}, "calibrated": ["total_ms"]}]},
         r"case a\): calibrated: names a metric the case does not publish \(got 'total_ms'\)"),
    ],
    ids=["negative-budget", "negative-seed", "bool-tokens", "huge-tokens", "empty-sweep", "budget-over-dram", "inf",
         "calibrated-unpublished"],
)  # fmt: skip
def test_bad_experiment_values(tmp_path, capsys, change, pattern):
    _expect_one_line(tmp_path, capsys, _write(tmp_path, {**BASE, **change}), pattern)


@pytest.mark.parametrize(
    ("dotted", "value", "pattern"),
    [
        ("memories.dram.copy_bandwidth", "0 GB/s", r"copy_bandwidth: must be > 0 B/s \(got '0 GB/s'\)"),
        ("memories.dram.bandwidth", "-43.9 GB/s", r"bandwidth: must be > 0 B/s"),
        ("flash.latency", "1e30 s", r"flash\.latency: must be at most 3600 s"),
        ("flash.latency", "1e400 s", r"flash\.latency: .*too large to be finite"),
        ("processors.cpu.overhead", "-1 s", r"overhead: must be >= 0 s"),
        ("flash.curve.chunk_sizes", ["4 KiB", "4 KiB"], r"chunk_sizes must be positive and strictly increasing"),
        ("extends", 5, r"hw\.yaml: extends: must be the name of"),
    ],
    ids=["zero-copy", "negative-bw", "huge-latency", "inf-latency", "negative-overhead", "dup-chunks", "extends-5"],
)
def test_bad_hardware_values(tmp_path, capsys, dotted, value, pattern):
    exp = _write(tmp_path, {**BASE, "hardware": _hardware(tmp_path, dotted, value)})
    _expect_one_line(tmp_path, capsys, exp, pattern)


def test_a_flash_smaller_than_the_model(tmp_path, capsys):
    exp = _write(tmp_path, {**BASE, "hardware": _hardware(tmp_path, "flash.capacity", "1 kB")})
    _expect_one_line(tmp_path, capsys, exp, r"e\.yaml \(case e\): hardware .*do not fit its 1 kB flash")


def test_a_model_too_large_to_be_real(tmp_path, capsys):
    model = yaml.safe_load((FIXTURES / "model-uniform.yaml").read_text()) | {"d_ff": 10**9}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(model))
    exp = _write(tmp_path, {**BASE, "model": str(tmp_path / "m.yaml")})
    _expect_one_line(tmp_path, capsys, exp, r"m\.yaml: d_ff: Input should be less than or equal to 1048576")


def test_a_budget_the_policy_cannot_fit_fails_validate_too(tmp_path, capsys):
    exp = _write(tmp_path, {**BASE, "policy": {"name": "all_dram"}, "dram_budget": "1 kB"})
    _expect_one_line(tmp_path, capsys, exp, r"e\.yaml \(case e\): dram: cannot allocate")


def test_decoding_past_the_trace(tmp_path, capsys):
    acts = {"source": "trace", "path": str(TRACE)}
    exp = _write(
        tmp_path,
        {**BASE, "model": "smollm2-135m", "decode_tokens": 961, "activations": acts,
         "policy": {"name": "llm_in_flash", "capacity_tokens": 4}},
    )  # fmt: skip
    _expect_one_line(tmp_path, capsys, exp, r"decode_tokens: 961 steps need 961 source tokens .*activations\.loop")


@pytest.mark.parametrize(
    ("flag", "pattern"),
    [
        (["--set", "policy=[unclosed"], r"--set policy: .*invalid YAML"),
        (["--set", "nokey"], r"--set: nokey: expected KEY=VALUE"),
        (["--set", "decode_tokens=yes"], r"decode_tokens: Input should be a valid integer \(got True\)"),
    ],
)
def test_bad_flags(tmp_path, capsys, flag, pattern):
    _expect_one_line(tmp_path, capsys, _write(tmp_path, BASE), pattern, *flag)


def test_workers_beyond_reason(tmp_path, capsys):
    code, err = _cli(tmp_path, capsys, "run", str(_write(tmp_path, BASE)), "--workers", "100000", "--quiet")
    assert code == 2 and "--workers: must be from 1 to 1024" in err


def test_a_config_error_inside_a_worker_is_the_same_line(tmp_path, capsys):
    acts = {"source": "trace", "path": str(TRACE)}
    policy = {"name": "llm_in_flash", "capacity_tokens": 4}
    long = {"model": "smollm2-135m", "decode_tokens": 961, "activations": acts, "policy": policy}
    exp = _write(tmp_path, {**BASE, "cases": [{"name": "ok"}, {"name": "long", "set": long}]})
    code, err = _cli(tmp_path, capsys, "run", str(exp), "--workers", "2", "--quiet", "--no-plots",
                     "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "(case long): decode_tokens: 961 steps need" in err
    assert not (tmp_path / "out").exists()


def test_a_case_that_does_not_fit_is_a_row_among_others_and_an_error_alone(tmp_path, capsys):
    tight = {"policy.name": "all_dram", "dram_budget": "1 kB"}
    exp = _write(tmp_path, {**BASE, "cases": [{"name": "ok"}, {"name": "tight", "set": tight}]})
    code, err = _cli(tmp_path, capsys, "run", str(exp), "--workers", "2", "--quiet", "--no-plots",
                     "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 0 and "note: case tight does not fit" in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case")
    assert summary.loc["ok", "status"] == "ok" and summary.loc["tight", "status"] == "does_not_fit"
    assert "(case tight): dram: cannot allocate" in summary.loc["tight", "error"]
    (solo := tmp_path / "solo").mkdir()
    alone = _write(solo, {**BASE, **{"policy": {"name": "all_dram"}, "dram_budget": "1 kB"}}, "alone.yaml")
    _expect_one_line(solo, capsys, alone, r"alone\.yaml \(case e\): dram: cannot allocate")


def test_workers_die_with_their_parent(tmp_path):
    slow = {**BASE, "decode_tokens": 1_000_000, "cases": [{"name": f"c{i}"} for i in range(2)]}
    exp = _write(tmp_path, slow)
    cmd = [sys.executable, "-m", "sim", "run", str(exp), "--workers", "2", "--quiet", "--out", str(tmp_path / "o")]
    parent = subprocess.Popen(cmd)
    children = _wait_for_children(parent.pid, 2)
    parent.kill()
    parent.wait()
    for pid in children:
        _wait_gone(pid)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found += [int(c) for c in text.split()]
    return found


def _wait_for_children(pid: int, n: int) -> list[int]:

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = _children(pid)
        if len(kids) >= n:
            return kids
        time.sleep(0.05)
    pytest.fail(f"no {n} workers started")


def _wait_gone(pid: int) -> None:

    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        status = (Path(f"/proc/{pid}") / "status").read_text() if Path(f"/proc/{pid}/status").exists() else ""
        if "State:\tZ" in status:
            return  # a zombie waiting for init to reap it: it has ended
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its parent"
