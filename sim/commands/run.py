"""``python -m sim run FILE [--out DIR] [--set key=value ...]`` and ``python -m sim validate FILE``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sim.config.base import parse_yaml
from sim.errors import ConfigError
from sim.runner import run_experiment, validate_experiment


def parse_sets(items: list[str]) -> dict[str, object]:
    """``["policy.window_k=5", "dram_budget=4 GB"]`` -> {dotted: YAML-parsed value}."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "expected KEY=VALUE with a dotted KEY")
        out[key.strip()] = parse_yaml(value, f"--set {key.strip()}")
    return out


MAX_WORKERS = 1024


def _run(args: argparse.Namespace) -> int:
    if args.scheduler and args.executor != "dask":
        raise ConfigError("--scheduler", "", "needs --executor dask", args.scheduler)
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigError(
            "--workers", "", f"must be from 1 to {MAX_WORKERS} (it is capped by cases and cores)", args.workers
        )
    out = run_experiment(
        args.file,
        args.out,
        parse_sets(args.set),
        plots=not args.no_plots,
        progress=not args.quiet,
        workers=args.workers,
        executor=args.executor,
        scheduler=args.scheduler,
        fresh=args.fresh,
    )
    if not (out / "summary.json").is_file():  # other kinds (accuracy) print their own progress
        print(f"results: {out}")
        return 0
    summary = json.loads((out / "summary.json").read_text())
    for s in summary:
        if s["status"] != "ok":
            print(f"{s['case']:<24} does not fit (see summary.csv)")
            continue
        per = s.get("tokens_per_step", 1.0)
        unit = "ms/token" if per == 1.0 else f"ms/step ({per:.2f} tokens/step: {s['total_ms'] / per:.2f} ms/token)"
        print(
            f"{s['case']:<24} total {s['total_ms']:9.2f} {unit}  (io {s['io_ms']:.2f}, xfer {s['xfer_ms']:.2f}, "
            f"mem {s['memmgmt_ms']:.2f}, compute {s['compute_ms']:.2f})  "
            f"flash {s['flash_GB_per_token']:.3f} GB/token"
        )
    if (out / "comparison.csv").is_file():
        print(f"comparison with published numbers: {out / 'comparison.csv'}")
    print(f"results: {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    for line in validate_experiment(args.file, parse_sets(args.set)):
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run an experiment file and write its results folder")
    run.add_argument("file", type=Path)
    run.add_argument("--out", type=Path, default=None, help="results folder (default: results/<file stem>)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config path")
    run.add_argument("--no-plots", action="store_true", help="skip the plot scripts")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--workers", type=int, default=1, help="simulate cases in N local processes (default 1)")
    executor_help = "local processes (default) or Dask: --scheduler ADDRESS, else a LocalCluster of --workers"
    run.add_argument("--executor", choices=("local", "dask"), default="local", help=executor_help)
    run.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a running Dask scheduler (tcp://host:8786)")
    run.add_argument("--fresh", action="store_true", help="recompute points finished before (see sim/points.py)")
    run.set_defaults(func=_run)
    val = sub.add_parser("validate", help="check an experiment file without running it")
    val.add_argument("file", type=Path)
    val.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    val.set_defaults(func=_validate)
