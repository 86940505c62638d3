"""Memory that does not grow with tokens: a 10,000-token OPT-6.7B llm_in_flash run at the paper's budget (6.7 GB,
half the model; ``window_rows: budget``), activations projected from the committed SmolLM2 trace and looped past
its 960 tokens (said in the run's about.md). Runs ``python -m sim run --fresh`` (a stored point would only be
loaded) in a child process and reports its peak RSS (the OS's accounting of the finished child), the wall time and
simulated tokens per wall-second; the same at 20,000 tokens gives what each further token costs in memory (step
rows stream to parquet parts, sim/engine/steplog.py: the growth should be about nothing).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = {
    "name": "memory",
    "hardware": "apple-m1-max",
    "hardware_overrides": {"flash": {"latency": "0 us"}},
    "model": "opt-6.7b",
    "dtype": "fp16",
    "processor": "cpu",
    "dram_budget": "6.7 GB",
    "context_tokens": 128,
    "prefill_chunk_tokens": 0,
    "timeline_tokens": 0,
    "plots": [],
    "activations": {"source": "projection", "path": str(ROOT / "traces" / "smollm2-135m.trace"),
                    "density": "opt-6.7b-table6", "calib_tokens": 64, "gain_sigma": 0.58, "loop": True},
    "layout": {"name": "bundled"},
    "policy": {"name": "llm_in_flash", "predictor": "statistical", "window_k": 5, "rank_last": 128,
               "capacity_tokens": 64, "coalesce_reads": False, "window_rows": "budget"},
}  # fmt: skip


def _child(tokens: int) -> tuple[float, float]:
    """(peak RSS MB, wall s) of one run in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.yaml"
        path.write_text(yaml.safe_dump(EXPERIMENT | {"decode_tokens": tokens}))
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "sim", "run", str(path), "--out", str(Path(tmp) / "out"), "--quiet", "--fresh"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak, before) / 1024, wall


def run() -> list[tuple[str, float, str]]:
    ten_mb, wall = _child(10_000)
    twenty_mb, _ = _child(20_000)  # RUSAGE_CHILDREN keeps the largest child's peak: run the larger one last
    return [
        ("memory_opt6.7b_lif_10k_tokens_peak_rss_MB", ten_mb, "MB"),
        ("memory_opt6.7b_lif_20k_tokens_peak_rss_MB", twenty_mb, "MB"),
        ("memory_opt6.7b_lif_growth_KB_per_token", (twenty_mb - ten_mb) * 1024 / 10_000, "KB"),
        ("memory_opt6.7b_lif_10k_tokens_wall_s", wall, "s"),
        ("memory_opt6.7b_lif_10k_sim_tokens_per_wall_s", 10_000 / wall, "tok/s"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
