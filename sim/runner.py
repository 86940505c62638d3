"""Run an experiment file end to end: resolve cases, simulate each, write the results folder, plot.

Plot scripts (``experiments/plots/*.py`` by default) run as separate processes on the written files, so
nothing in ``sim/`` plots. Everything is written into a temporary folder that replaces ``out`` only when
all of it, plots included, succeeded.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sim.config.base import load_yaml
from sim.config.experiment import Case, load_experiment
from sim.config.profiles import REPO_ROOT
from sim.engine.simulate import CaseResult, simulate_case
from sim.errors import ConfigError, SimError
from sim.results import AtomicFolder, write_results

PLOTS_DIR = REPO_ROOT / "experiments" / "plots"
DEFAULT_PLOTS = ("breakdown.py", "timeline.py")
COMPARISON_PLOT = "comparison.py"


class PlotError(SimError):
    """A plot script failed; its last line of stderr is the message."""


def default_out(experiment_path: Path) -> Path:
    return Path("results") / experiment_path.stem


def plot_scripts(experiment_path: Path, cases: Sequence[Case]) -> list[Path]:
    listed = cases[0].config.plots
    if listed is not None:
        return [(experiment_path.parent / p).resolve() for p in listed]
    names = list(DEFAULT_PLOTS) + ([COMPARISON_PLOT] if any(c.published for c in cases) else [])
    return [PLOTS_DIR / n for n in names]


def run_experiment(
    path: str | Path,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    plots: bool = True,
    progress: bool = True,
) -> Path:
    """Run an experiment file and write its results folder; returns its path.

    ``kind: simulation`` (the default) simulates every case; ``kind: accuracy`` runs the numpy model
    (sim.traces.accuracy) to measure perplexity and greedy agreement vs sparsity; ``kind: lif_accuracy`` runs
    LLM in a Flash's predictor on the numpy model and in the simulator (sim.lif.real.accuracy).
    """
    path = Path(path)
    if load_yaml(path).get("kind") == "lif_accuracy":
        return _run_lif_accuracy(path, Path(out) if out is not None else default_out(path), overrides, plots, progress)
    if load_yaml(path).get("kind") == "accuracy":
        return _run_accuracy(path, Path(out) if out is not None else default_out(path), overrides, plots)
    cases = load_experiment(path, overrides)
    out = Path(out) if out is not None else default_out(path)
    results = _simulate_all(cases, progress)
    with AtomicFolder(out) as tmp:
        write_results(tmp, path, cases, results)
        for script in plot_scripts(path, cases) if plots else []:
            _run_plot(script, tmp)
    return out


def _run_accuracy(path: Path, out: Path, overrides: dict[str, Any] | None, plots: bool) -> Path:
    from sim.traces.accuracy import run_accuracy

    if overrides:
        raise ConfigError("--set", next(iter(overrides)), "not supported for kind: accuracy experiments")
    with AtomicFolder(out) as tmp:
        run_accuracy(path, tmp)
        if plots:
            _run_plot(PLOTS_DIR / "accuracy.py", tmp)
    return out


def _run_lif_accuracy(path: Path, out: Path, overrides: dict[str, Any] | None, plots: bool, progress: bool) -> Path:
    from sim.lif.real.accuracy import run_lif_accuracy

    if overrides:
        raise ConfigError("--set", next(iter(overrides)), "not supported for kind: lif_accuracy experiments")
    with AtomicFolder(out) as tmp:
        run_lif_accuracy(path, tmp, progress=progress)
        if plots:
            _run_plot(PLOTS_DIR / "lif_speed_accuracy.py", tmp)
    return out


def _simulate_all(cases: Sequence[Case], progress: bool) -> list[CaseResult]:
    total = sum(c.config.decode_tokens for c in cases)
    with tqdm(total=total, unit="tok", disable=None if progress else True, desc="simulating", leave=False) as bar:
        results, cache = [], {}
        for case in cases:
            bar.set_postfix_str(case.name)
            results.append(simulate_case(case, progress=bar.update, cache=cache))
    return results


def _run_plot(script: Path, results_dir: Path) -> None:
    if not script.is_file():
        raise PlotError(f"plot script {script} not found")
    proc = subprocess.run([sys.executable, str(script), str(results_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PlotError(f"plot script {script.name} failed: {last}")
