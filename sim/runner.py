"""Run an experiment file end to end: resolve cases, simulate each, write the results folder, plot.

Plot scripts (``experiments/plots/*.py`` by default) run as separate processes on the written files, so
nothing in ``sim/`` plots. Everything is written into a temporary folder that replaces ``out`` only when
all of it, plots included, succeeded.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sim import points
from sim.config.base import StrictModel, load_yaml, validate
from sim.config.experiment import Case, load_experiment
from sim.config.profiles import REPO_ROOT
from sim.config.search import load_search
from sim.config.workload import Uniform
from sim.dask_executor import simulate_on_dask
from sim.engine.simulate import CaseResult, check_case, does_not_fit, make_requests, simulate_case
from sim.errors import CapacityError, ConfigError, SimError
from sim.lab.accuracy import AccuracyConfig, run_accuracy
from sim.lab.activeflow_stats import ActiveflowStatsConfig, run_activeflow_stats
from sim.lab.kv_accuracy import KVAccuracyConfig, run_kv_accuracy
from sim.lab.lif.accuracy import LifAccuracyConfig, run_lif_accuracy
from sim.lab.moefy import MoeficationConfig, run_moefication
from sim.lab.quant import QuantizationConfig, run_quantization
from sim.outfolder import ResultsFolder
from sim.results import SPOOL, write_results
from sim.search import halving

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


@dataclass(frozen=True)
class OtherKind:
    """An experiment kind other than simulation: its config class, its runner ``run(path, out, progress=...)``
    (which writes into the results folder ``out``) and the plot script it draws with."""

    config: type[StrictModel]
    run: Callable[..., Path]
    plot: str


OTHER_KINDS = {
    # perplexity and greedy agreement vs sparsity on the numpy model
    "accuracy": OtherKind(AccuracyConfig, run_accuracy, "accuracy.py"),
    # LLM in a Flash's predictor on the numpy model (accuracy) and in the simulator (speed)
    "lif_accuracy": OtherKind(LifAccuracyConfig, run_lif_accuracy, "lif_speed_accuracy.py"),
    # KV-cache policies (StreamingLLM, H2O, top-k, Quest, MagicPIG) on the numpy model
    "kv_accuracy": OtherKind(KVAccuracyConfig, run_kv_accuracy, "kv_accuracy.py"),
    # SmolLM2 split into experts with learned routers: accuracy, router recall, prefetch hits, routing traces
    "moefication": OtherKind(MoeficationConfig, run_moefication, "moefication.py"),
    # storage formats (q8_0 ... HQQ 2-bit) fake-quantized per tensor class: weight error and perplexity
    "quantization": OtherKind(QuantizationConfig, run_quantization, "quantization.py"),
    # ActiveFlow's cross-layer prediction and channel caches for the input of every op of the real model
    "activeflow_stats": OtherKind(ActiveflowStatsConfig, run_activeflow_stats, "activeflow_stats.py"),
}


def experiment_kind(path: Path) -> str:
    kind = load_yaml(path).get("kind", "simulation")
    if kind != "simulation" and kind not in OTHER_KINDS:
        raise ConfigError(path, "kind", f"unknown kind; known: simulation, {', '.join(OTHER_KINDS)}", kind)
    return kind


def validate_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> list[str]:
    """Check a file of any kind without running it; returns one line per case (or one for other kinds)."""
    path = Path(path)
    kind = experiment_kind(path)
    if kind != "simulation":
        _no_overrides(kind, overrides)
        config = validate(OTHER_KINDS[kind].config, load_yaml(path), path)
        return [f"ok  {config.name}: kind {kind}"]
    lines, cache = [], {}
    cases = load_experiment(path, overrides)
    lines += [f"note: {note}" for note in notes_of(cases)]
    for case in cases:
        try:
            check_case(case, cache)  # what run does before the first token: traces opened, memory allocated
        except CapacityError as err:
            if len(cases) == 1:
                raise
            lines.append(f"does not fit  {case.name}: {err}")  # a result of a sweep, as run records it
            continue
        c = case.config
        lines.append(
            f"ok  {case.name}: {case.model.name} {c.dtype} on {case.hardware.name}/{c.processor}, "
            f"policy {c.policy.name}, {c.n_requests} request(s) x {_tokens(c.decode_tokens)} tokens, batch {c.batch}"
        )
    return lines


def _tokens(length) -> str:
    return f"{length.low}-{length.high}" if isinstance(length, Uniform) else str(length)


def notes_of(cases: Sequence[Case]) -> list[str]:
    """Each distinct note of the cases, in order (e.g. a --set that a case's own set replaces)."""
    return list(dict.fromkeys(note for case in cases for note in case.notes))


def run_experiment(
    path: str | Path,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    plots: bool = True,
    progress: bool = True,
    workers: int = 1,
    executor: str = "local",
    scheduler: str | None = None,
    fresh: bool = False,
) -> Path:
    """Run an experiment file and write its results folder; returns its path.

    ``kind: simulation`` (the default) simulates every case; other kinds (``OTHER_KINDS``) run their own runner.
    Everything, plots included, is written into a temporary folder that replaces ``out`` at the end.
    """
    path = Path(path)
    out = Path(out) if out is not None else default_out(path)
    kind = experiment_kind(path)
    if kind != "simulation":
        return _run_other(OTHER_KINDS[kind], kind, path, out, overrides, plots, progress)
    cases = load_experiment(path, overrides)
    for note in notes_of(cases):
        print(f"note: {note}", file=sys.stderr)
    with ResultsFolder(out) as tmp:  # refuses a bad --out before any work
        spool = tmp / SPOOL  # local runs stream their step rows here; write_results merges and removes them

        def simulate(batch: Sequence[Case]) -> list[CaseResult]:
            if executor == "dask":
                group = functools.partial(_simulate_group, fresh=fresh)
                return simulate_on_dask(batch, group, workers, scheduler, progress)
            return _simulate_all(batch, progress, workers, fresh, spool)

        search = load_search(path, overrides)
        results = simulate(cases) if search is None else halving(cases, search, simulate, str(path))
        failed = [r for r in results if r.summary["status"] != "ok"]
        if len(failed) == len(results):
            raise CapacityError(f"no case fits its memory; the first: {failed[0].summary['error']}")
        for r in failed:
            print(f"note: case {r.name} does not fit (a row of summary.csv): {r.summary['error']}", file=sys.stderr)
        for note, names in _cases_by_note(results).items():
            print(f"note: {_case_list(names)}: {note}", file=sys.stderr)
        write_results(tmp, path, cases, results)
        failed_plots = _run_plots(plot_scripts(path, cases) if plots else [], tmp)
    _raise_plot_errors(failed_plots, out)
    return out


def _run_plots(scripts: Sequence[Path], folder: Path) -> list[str]:
    """Run each plot script on ``folder``; a failing one does not discard the results: its one-line error is kept
    (and said after the folder is in place, :func:`_raise_plot_errors`)."""
    errors = []
    for script in scripts:
        try:
            run_plot(script, folder)
        except PlotError as err:
            errors.append(str(err))
    return errors


def _raise_plot_errors(errors: list[str], out: Path) -> None:
    if errors:
        raise PlotError(f"results are in {out}, but {'; '.join(errors)}")


def _cases_by_note(results: Sequence[CaseResult]) -> dict[str, list[str]]:
    """Each distinct run note and the cases that said it (a sweep's points often say the same)."""
    by_note: dict[str, list[str]] = {}
    for r in results:
        for note in r.notes:
            by_note.setdefault(note, []).append(r.name)
    return by_note


def _case_list(names: list[str], shown: int = 3) -> str:
    if len(names) == 1:
        return f"case {names[0]}"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} cases ({', '.join(names[:shown])}{more})"


def _no_overrides(kind: str, overrides: dict[str, Any] | None) -> None:
    if overrides:
        raise ConfigError("--set", next(iter(overrides)), f"not supported for kind: {kind} experiments")


def _run_other(spec: OtherKind, kind: str, path: Path, out: Path, overrides, plots: bool, progress: bool) -> Path:
    _no_overrides(kind, overrides)
    with ResultsFolder(out) as tmp:
        spec.run(path, tmp, progress=progress)
        failed_plots = _run_plots([PLOTS_DIR / spec.plot] if plots else [], tmp)
    _raise_plot_errors(failed_plots, out)
    return out


def _simulate_all(
    cases: Sequence[Case], progress: bool, workers: int = 1, fresh: bool = False, spool: Path | None = None
) -> list[CaseResult]:
    """Simulate the cases in order, or in ``workers`` local processes (each case is a pure function of its
    config and seed, so results are identical either way; trace readers are then shared per process only).
    Step rows stream into ``spool`` (None: held compressed in memory)."""
    if workers > 1 and len(cases) > 1:
        return _simulate_parallel(cases, progress, workers, fresh, spool)
    total = sum(r.decode_tokens for c in cases for r in make_requests(c.config))
    with tqdm(total=total, unit="tok", disable=None if progress else True, desc="simulating", leave=False) as bar:
        results, cache = [], {}
        for case in cases:
            bar.set_postfix_str(case.name)
            results.append(_simulate_point(case, len(cases) > 1, cache, bar.update, fresh, spool))
    return results


def _simulate_point(
    case: Case, many: bool, cache: dict, progress=None, fresh: bool = False, spool: Path | None = None
) -> CaseResult:
    """One case; among several, one that does not fit its memory is a result row (the others go on). A point
    finished before (same inputs, same code: :mod:`sim.points`) is loaded instead of run, unless ``fresh``."""
    key = points.point_key(case, timeline=True)
    found = None if fresh else points.load(key)
    if found is not None:
        if progress is not None:
            progress(sum(r.decode_tokens for r in make_requests(case.config)))
        return found
    try:
        result = simulate_case(case, progress=progress, cache=cache, spool=spool)
    except CapacityError as err:
        if not many:
            raise
        return does_not_fit(case, err)
    points.store(key, result)
    return result


def _simulate_parallel(
    cases: Sequence[Case], progress: bool, workers: int, fresh: bool, spool: Path | None
) -> list[CaseResult]:
    """Groups of consecutive cases (a few per worker, so a slow group does not hold the others up) each run in one
    process with one cache: the cases of a group open and calibrate their trace once, as in a serial run."""
    workers = min(workers, len(cases), os.cpu_count() or 1)
    n_groups = min(len(cases), 4 * workers)
    bounds = [len(cases) * g // n_groups for g in range(n_groups + 1)]
    groups = [list(cases[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_simulate_group, group, fresh, spool): len(group) for group in groups}
        with tqdm(
            total=len(cases), unit="case", disable=None if progress else True, desc="simulating", leave=False
        ) as bar:
            for done in as_completed(futures):
                bar.update(futures[done])
        return [result for future in futures for result in future.result()]


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when the parent ends, however it ends (SIGKILL included).

    Linux: the kernel sends SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread
    polls the parent's pid once a second. SIGTERM gets its default action back (the CLI's handler, inherited by
    fork, would unwind the worker through the pool's result pipe instead of ending it)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent_pid:  # the parent died before the call took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _simulate_group(cases: Sequence[Case], fresh: bool = False, spool: Path | None = None) -> list[CaseResult]:
    cache: dict = {}
    return [_simulate_point(case, True, cache, fresh=fresh, spool=spool) for case in cases]


def run_plot(script: Path, results_dir: Path) -> None:
    if not script.is_file():
        raise PlotError(f"plot script {script} not found")
    proc = subprocess.run([sys.executable, str(script), str(results_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PlotError(f"plot script {script.name} failed: {last}")
