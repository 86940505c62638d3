"""Experiment files: closed configs, one-line errors naming file, key and value; the unit parser."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sim.cli import main
from sim.config.experiment import load_experiment
from sim.errors import ConfigError, UnitError
from sim.units import parse

FIXTURES = Path(__file__).parent / "fixtures"

BASE = f"""
name: t
hardware: {FIXTURES / "hw-simple.yaml"}
model: opt-6.7b
decode_tokens: 2
policy: {{name: naive}}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("6.1 GB/s", "bandwidth", 6.1e9),
        ("6 GiB/s", "bandwidth", 6 * 2**30),
        ("32 KiB", "bytes", 32768),
        ("13.4 GB", "bytes", 13.4e9),
        ("15 us", "time", 15e-6),
        ("2 ms", "time", 2e-3),
        ("82.6 TFLOPS", "flops", 82.6e12),
        ("4.5 bit", "bits", 4.5),
        (0, "bytes", 0.0),
    ],
)
def test_units(text, kind, expected):
    assert parse(text, kind) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("6.1", "bandwidth"),
        (6.1, "bandwidth"),
        ("6 GB", "bandwidth"),
        ("5 parsecs", "time"),
        ("fast", "bytes"),
        (True, "bytes"),
    ],
)
def test_bad_units(text, kind):
    with pytest.raises(UnitError):
        parse(text, kind)


def test_valid_file_resolves(tmp_path):
    (case,) = load_experiment(write(tmp_path, BASE))
    assert case.config.policy.name == "naive"
    assert case.hardware.name == "hw-simple"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("colour: blue\n", r"exp\.yaml: colour: unknown key; valid keys: .*\(got 'blue'\)"),
        ("dram_budget: 6.7 gigabytes\n", r"exp\.yaml: dram_budget: .*unknown bytes unit"),
        ("dram_budget: 6.7\n", r"exp\.yaml: dram_budget: 6\.7 has no unit"),
        ("processor: tpu\n", r"exp\.yaml: processor: not in hardware 'hw-simple'.*\(got 'tpu'\)"),
        ("dtype: fp8\n", r"exp\.yaml: dtype: Input should be .*\(got 'fp8'\)"),
        ("decode_tokens: 0\n", r"exp\.yaml: decode_tokens: .*greater than or equal to 1"),
        ("decode_tokens: true\n", r"exp\.yaml: decode_tokens: Input should be a valid integer \(got True\)"),
    ],
)
def test_bad_values_name_file_key_value(tmp_path, extra, match):
    key = extra.split(":")[0] + ":"
    base = "".join(line for line in BASE.splitlines(keepends=True) if not line.startswith(key))  # extra replaces it
    with pytest.raises(ConfigError, match=match):
        load_experiment(write(tmp_path, base + extra))


def test_duplicate_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.yaml: line \d+: duplicate or unhashable mapping key \(got 'name'\)"):
        load_experiment(write(tmp_path, BASE + "name: again\n"))


def test_unknown_profile_lists_known(tmp_path):
    text = BASE.replace(str(FIXTURES / "hw-simple.yaml"), "apple-m9")
    with pytest.raises(
        ConfigError, match=r"exp\.yaml: hardware: unknown hardware profile; known: .*\(got 'apple-m9'\)"
    ):
        load_experiment(write(tmp_path, text))


def test_unknown_policy_and_policy_key(tmp_path):
    with pytest.raises(ConfigError, match=r"policy: .*'magic'"):
        load_experiment(write(tmp_path, BASE.replace("name: naive", "name: magic")))
    with pytest.raises(ConfigError, match=r"policy\.speed: unknown key; valid keys: name, overlap"):
        load_experiment(write(tmp_path, BASE.replace("name: naive", "name: naive, speed: 2")))


def test_case_override_errors_name_the_case(tmp_path):
    text = BASE + "cases:\n  - name: a\n    set: {dram_budget: lots}\n"
    with pytest.raises(ConfigError, match=r"exp\.yaml \(case a\): dram_budget: .*\(got 'lots'\)"):
        load_experiment(write(tmp_path, text))


def test_hardware_override_errors(tmp_path):
    text = BASE + "hardware_overrides: {flash: {latency: soon}}\n"
    with pytest.raises(ConfigError, match=r"exp\.yaml: hardware_overrides\.flash\.latency: .*\(got 'soon'\)"):
        load_experiment(write(tmp_path, text))


def test_yaml_syntax_error(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.yaml: line \d+: invalid YAML"):
        load_experiment(write(tmp_path, "name: t\npolicy: {name: naive\n"))


def test_missing_file():
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file"):
        load_experiment("nope.yaml")


def test_cli_prints_one_line_no_traceback(tmp_path, capsys):
    path = write(tmp_path, BASE + "colour: blue\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "colour: unknown key" in err


def test_cli_bad_set_flag(tmp_path, capsys):
    path = write(tmp_path, BASE)
    assert main(["validate", str(path), "--set", "dram_budget"]) == 2
    assert "--set: dram_budget: expected KEY=VALUE" in capsys.readouterr().err
    assert main(["validate", str(path), "--set", "policy.name=magic"]) == 2
    assert "magic" in capsys.readouterr().err


def test_cli_validate_ok(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, BASE))]) == 0
    assert "ok  t: opt-6.7b fp16 on hw-simple/cpu, policy naive" in capsys.readouterr().out


def test_sweep_expands_cases_as_a_grid(tmp_path):
    text = BASE + "cases: [{name: a}, {name: b, set: {context_tokens: 64}}]\n"
    text += "sweep: {decode_tokens: [1, 2], dram_budget: ['1 GB', '2 GB']}\n"
    cases = load_experiment(write(tmp_path, text))
    assert [c.name for c in cases][:2] == ["a,decode_tokens=1,dram_budget=1GB", "a,decode_tokens=1,dram_budget=2GB"]
    assert len(cases) == 8
    assert {(c.config.decode_tokens, c.config.dram_budget) for c in cases} == {(1, 1e9), (1, 2e9), (2, 1e9), (2, 2e9)}
    assert all(c.config.context_tokens == 64 for c in cases if c.name.startswith("b,"))
    assert cases[-1].sweep == {"decode_tokens": 2, "dram_budget": "2 GB"}


def test_zip_pairs_values_and_multiplies_the_sweep(tmp_path):
    text = (
        BASE
        + "sweep: {decode_tokens: [1, 2]}\nzip: {dram_budget: ['1 GB', '2 GB', '3 GB'], context_tokens: [8, 16, 32]}\n"
    )
    cases = load_experiment(write(tmp_path, text))
    assert len(cases) == 6  # 2 swept x 3 zipped
    pairs = {(c.config.dram_budget, c.config.context_tokens) for c in cases}
    assert pairs == {(1e9, 8), (2e9, 16), (3e9, 32)}  # zipped together, never crossed
    assert cases[0].name == "t,decode_tokens=1,dram_budget=1GB,context_tokens=8"
    assert cases[0].sweep == {"decode_tokens": 1, "dram_budget": "1 GB", "context_tokens": 8}
    unequal = "zip: {dram_budget: ['1 GB'], context_tokens: [8, 16]}"
    both = "sweep: {dram_budget: ['1 GB']}\nzip: {dram_budget: ['2 GB']}"
    for bad, message in ((unequal, "same length"), (both, "swept or zipped")):
        with pytest.raises(ConfigError, match=rf"zip: .*{message}"):
            load_experiment(write(tmp_path, BASE + bad + "\n"))


def test_sweep_bad_value_names_the_case(tmp_path):
    with pytest.raises(ConfigError, match=r"\(case t,window_k=-1\): policy\.window_k"):
        load_experiment(
            write(tmp_path, BASE.replace("name: naive", "name: llm_in_flash") + "sweep: {policy.window_k: [-1]}\n")
        )


def test_profile_paths_resolve_beside_the_experiment(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "hw.yaml").write_text((FIXTURES / "hw-simple.yaml").read_text())
    (tmp_path / "sub" / "child.yaml").write_text("extends: hw.yaml\nname: child\n")  # relative to its own folder
    (tmp_path / "sub" / "m.yaml").write_text((FIXTURES / "model-uniform.yaml").read_text())
    exp = tmp_path / "sub" / "e.yaml"
    exp.write_text("name: e\nhardware: child.yaml\nmodel: m.yaml\npolicy: {name: naive}\n")
    monkeypatch.chdir(tmp_path)  # not the experiment's folder
    (case,) = load_experiment(exp)
    assert case.hardware.name == "child" and case.model.name == "model-uniform"


def test_another_models_run_on_opt_densities_says_it_is_an_assumption(tmp_path):
    trace = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"
    exp = tmp_path / "e.yaml"
    exp.write_text(
        f"name: e\nhardware: apple-m1-max\nmodel: llama-2-7b\npolicy: {{name: naive}}\n"
        f"activations: {{source: projection, path: {trace}, density: opt-6.7b-table6}}\n"
    )
    (case,) = load_experiment(exp)
    assert any("llama-2-7b use opt-6.7b-table6 (published for opt-6.7b)" in n and "assumption" in n for n in case.notes)
    exp.write_text(exp.read_text().replace("llama-2-7b", "opt-6.7b"))
    assert load_experiment(exp)[0].notes == ()
