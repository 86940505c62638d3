"""Trace speed: capture tokens/s, reading the committed trace (tokens/s, MB/s), and masks/s of the sources
that drive OPT-6.7B simulations (projection of the real trace; fitted synthetic generator).

``run()`` returns ``(name, value, unit)`` rows; ``python benchmarks/bench_traces.py`` prints them as
``name value unit`` lines. Capture needs the model file (``python -m sim model fetch smollm2-135m``) and is
skipped without it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from sim.config.profiles import load_model
from sim.traces.format import TraceReader
from sim.traces.projection import ProjectedSource
from sim.traces.source import TraceSource
from sim.traces.synthetic import SyntheticSource, fit

TRACE = Path(__file__).resolve().parents[1] / "traces" / "smollm2-135m.trace"


def bench_capture(tokens: int = 128) -> list[tuple[str, float, str]]:
    from sim.errors import SimError
    from sim.lab.capture import CaptureSpec, capture

    spec = CaptureSpec(tokens=tokens, tasks=("code",), contexts_per_task=1, fields=("ffn_act", "mlp_in"))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            t0 = time.perf_counter()
            capture(spec, Path(tmp) / "b.trace", log=lambda _: None, progress=False)
        except SimError:
            return [("capture_tokens_per_s", float("nan"), "tok/s (skipped: no model file)")]
        elapsed = time.perf_counter() - t0  # includes loading the GGUF (~several s)
        with TraceReader(Path(tmp) / "b.trace") as r:
            steady = r.manifest["capture"]["tokens_per_s"]
    return [("capture_tokens_per_s", tokens / elapsed, "tok/s incl. model load"),
            ("capture_prefill_tokens_per_s", steady, "tok/s")]  # fmt: skip


def bench_read(path: Path = TRACE) -> list[tuple[str, float, str]]:
    with TraceReader(path) as r:
        t0 = time.perf_counter()
        decoded = sum(a.nbytes for c in r.iter_chunks(["ffn_act", "mlp_in"]) for a in c.values())
        elapsed = time.perf_counter() - t0
        n = r.n_tokens
    return [
        ("trace_read_tokens_per_s", n / elapsed, "tok/s"),
        ("trace_read_file_MBps", path.stat().st_size / elapsed / 1e6, "MB/s"),
        ("trace_read_decoded_MBps", decoded / elapsed / 1e6, "MB/s"),
    ]


def _mask_rate(source, n: int, block: int = 64) -> float:
    t0 = time.perf_counter()
    for s in range(0, n, block):
        source.masks(s, min(s + block, n))
    return n / (time.perf_counter() - t0)


def bench_sources(path: Path = TRACE) -> list[tuple[str, float, str]]:
    opt = load_model("opt-6.7b")
    base = TraceSource(path, "topk:0.9")
    proj = ProjectedSource.onto(base, opt, np.random.default_rng(0))
    synth = SyntheticSource(fit(base), np.random.default_rng(0), n_layers=opt.n_layers, d_ff=opt.d_ff)
    n = min(256, base.n_tokens)
    return [
        ("projected_opt6.7b_masks_tokens_per_s", _mask_rate(proj, n), "tok/s"),
        ("synthetic_opt6.7b_masks_tokens_per_s", _mask_rate(synth, n), "tok/s"),
        ("trace_smollm2_masks_tokens_per_s", _mask_rate(base, n), "tok/s"),
    ]


def run() -> list[tuple[str, float, str]]:
    return [*bench_read(), *bench_sources(), *bench_capture()]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.4g} {unit}")
