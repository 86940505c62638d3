"""Print every benchmark figure, one ``name value unit`` line each: ``python benchmarks/run.py [NAME ...]``.

Each ``benchmarks/bench_*.py`` module exposes ``run() -> list[(name, value, unit)]``. Figures are measured
on this machine (noisy): compare ratios and orders of magnitude, not digits. Nothing here asserts a time.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from tqdm import tqdm

HERE = Path(__file__).resolve().parent


def main(selected: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    chosen = [m for m in modules if not selected or m.removeprefix("bench_") in selected or m in selected]
    bar = tqdm(chosen, desc="benchmarks", unit="module", file=sys.stderr, disable=not sys.stderr.isatty())
    for name in bar:
        bar.set_postfix_str(name)
        for figure, value, unit in importlib.import_module(name).run():
            bar.write(f"{figure} {value:.6g} {unit}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
