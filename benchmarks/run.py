"""Print every benchmark figure, one ``name value unit`` line each: ``python benchmarks/run.py [NAME ...]``.

Each ``benchmarks/bench_*.py`` module exposes ``run() -> list[(name, value, unit)]``. Figures are measured
on this machine (noisy): compare ratios and orders of magnitude, not digits. Nothing here asserts a time.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(selected: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    for name in modules:
        if selected and name.removeprefix("bench_") not in selected and name not in selected:
            continue
        for figure, value, unit in importlib.import_module(name).run():
            print(f"{figure} {value:.6g} {unit}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
