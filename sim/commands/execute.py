"""``python -m sim execute EXPERIMENT [--out DIR] [--images DIR] [--set key=value ...]``: run it for real too.

Each case is simulated, executed on this machine from a real flash image (O_DIRECT reads, numpy kernels) with
the same policy, and compared per component (sim/real/session.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.commands.run import parse_sets
from sim.errors import ConfigError
from sim.runner import default_out


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("execute", help="simulate each case AND execute it for real; compare them")
    p.add_argument("file", type=Path, help="experiment YAML (its hardware: a profile from `calibrate`)")
    p.add_argument("--out", type=Path, help="results folder (default: results/<experiment name>)")
    p.add_argument("--images", type=Path, help="folder of flash images (default: ~/.cache/sparse-llm-sim/images)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an experiment key")
    p.add_argument("--warmup", type=int, default=2, help="decode steps not counted (default 2)")
    p.add_argument("--calibrate", action="store_true",
                   help="measure this machine first (calibrate's quick mode, into the results) and use that profile "
                   "as every case's hardware: the profile and the run see the machine in the same state")  # fmt: skip
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_execute)


def _execute(args: argparse.Namespace) -> int:
    from sim.real.session import execute_experiment

    if not args.file.is_file():
        raise ConfigError(str(args.file), "", "no such experiment file")
    if args.warmup < 0:
        raise ConfigError("--warmup", "", "must be >= 0", args.warmup)
    out = args.out or default_out(args.file)
    out, summary = execute_experiment(args.file, out, parse_sets(args.set), args.images, not args.quiet,
                                      args.warmup, not args.no_plots, args.calibrate)  # fmt: skip
    for _, r in summary.iterrows():
        if r.status != "ok":
            print(f"{r.case:<20} does not fit (see summary.csv)")
            continue
        match = r.outputs_match_reference
        print(f"{r.case:<20} simulated {r.simulated_ms_per_token:8.2f} ms/token  measured "
              f"{r.measured_ms_per_token:8.2f}  ({r.error_pct:+.1f}%)  outputs match: {match}")  # fmt: skip
    print(f"results: {out}")
    return 0
