"""Simulated vs measured: one case simulated on its hardware profile and executed for real, side by side.

Per case, the median over the same decode steps of both runs (the first ``warmup`` dropped: cold caches, thread
start; medians because a shared machine's noise comes in bursts that a mean would let one step decide):

    component   simulated ms/token (the engine's breakdown)   measured ms/token (sim.real.executor)   error %
    total       total_s                                       total_s
    io          io_stall_s                                    io_s (read inline + waiting + unpacking rows)
    memmgmt     memmgmt_s                                     memmgmt_s
    compute     compute_s                                     compute_s

Where a component is off by more than the target (15%), the row names the device model behind it: io -> the flash
curve and latency (``flash`` in the profile), memmgmt -> the DRAM ``copy_bandwidth``, compute -> the processor's
roofline (``mem_bandwidth``, ``peak_flops``, ``overhead``, ``gather_efficiency``).

Outputs are checked too: the real run's decode tokens (argmax, teacher-forced) must equal the numpy reference
(:func:`reference_outputs`: the dense weights at the image's precision, computing the same FFN neurons each step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.engine.simulate import CaseResult
from sim.lab.flash_image.writer import IMAGE_DTYPES
from sim.lab.kernels.forward import FfnSelector, Hooks, decode_step, prefill
from sim.lab.kernels.model import LayerWeights, RunState, Weights
from sim.models.profile import ModelProfile
from sim.real.executor import RealRun

TARGET_PCT = 15.0
COMPONENTS = {"total": ("total_s", "total_s"), "io": ("io_stall_s", "io_s"), "memmgmt": ("memmgmt_s", "memmgmt_s"),
              "compute": ("compute_s", "compute_s")}  # fmt: skip
DEVICE_MODEL = {"io": "flash curve / latency", "memmgmt": "DRAM copy_bandwidth",
                "compute": "processor roofline (mem_bandwidth, overhead, gather_efficiency)"}  # fmt: skip
SIGNIFICANT_MS = 0.5  # components below this in both runs are not judged (noise on a 2-core machine)


def compare(sim: CaseResult, real: RealRun, warmup: int = 2) -> list[dict[str, Any]]:
    """Rows (component, simulated ms, measured ms, error %, within target, suspect) for one case."""
    s = sim.tokens[sim.tokens.phase == "decode"].iloc[warmup:]
    r = real.steps[real.steps.phase == "decode"].iloc[warmup:]
    rows = []
    for name, (sim_col, real_col) in COMPONENTS.items():
        sim_ms, real_ms = 1e3 * float(s[sim_col].median()), 1e3 * float(r[real_col].median())
        error = 100.0 * (sim_ms - real_ms) / real_ms if real_ms > 0 else float("nan")
        judged = max(sim_ms, real_ms) >= SIGNIFICANT_MS
        ok = bool(not judged or abs(error) <= TARGET_PCT)
        suspect = "" if ok or name == "total" else DEVICE_MODEL[name]
        rows.append({"case": sim.name, "component": name, "simulated_ms": sim_ms, "measured_ms": real_ms,
                     "measured_min_ms": 1e3 * float(r[real_col].min()),
                     "measured_max_ms": 1e3 * float(r[real_col].max()),
                     "error_pct": error, "within_target": ok, "suspect": suspect})  # fmt: skip
    return rows


def cast_weights(w: Weights, dtype: str) -> Weights:
    """The weights rounded to an image dtype (what the flash image holds), float32 again."""
    dt = IMAGE_DTYPES[dtype]
    if dt is np.float32:
        return w

    def r(a):
        return None if a is None else a.astype(dt).astype(np.float32)

    layers = tuple(LayerWeights(lw.attn_norm, r(lw.wq), r(lw.wk), r(lw.wv), r(lw.wo), lw.ffn_norm, r(lw.gate),
                                r(lw.up), r(lw.down)) for lw in w.layers)  # fmt: skip
    embd = r(w.tok_embd)
    return Weights(embd, w.output_norm, embd, layers, w.inv_freq)


def reference_outputs(real: RealRun, model: ModelProfile, image: Path) -> list[int]:
    """Replay the real run's steps in the numpy forward pass on the dense weights the image was written from (the
    model file's, or the same random weights), at the image's precision, each decode step computing the FFN neurons
    the real run computed; returns the decode steps' argmax tokens."""
    import json

    from sim.lab.flash_image import manifest_path, random_weights
    from sim.lab.modelfile.gguf_load import load_model

    manifest = json.loads(manifest_path(image).read_text())
    seed = manifest.get("random_seed")
    cfg, w = load_model(model.name) if seed is None else random_weights(model, seed)
    w = cast_weights(w, manifest["dtype"])
    state = RunState.new(cfg, max(1, len(real.prompt) + len(real.inputs)))
    if real.dense_prompt:
        prefill(cfg, w, state, real.prompt, last_only=True)
    outputs = []
    for phase, tokens, sets in real.replay:
        hooks = None
        if sets is not None:
            hooks = Hooks(ffn_selector=FfnSelector(lambda layer, _x, _a, sets=sets: [sets[layer]], "pre"))
        if phase == "prefill":
            prefill(cfg, w, state, tokens, hooks, last_only=True)
        else:
            outputs.append(int(np.argmax(decode_step(cfg, w, state, tokens[0], hooks))))
    return outputs


def summary_row(sim: CaseResult, real: RealRun, rows: list[dict], matches: bool | None) -> dict[str, Any]:
    by = {r["component"]: r for r in rows}
    d = real.steps[real.steps.phase == "decode"]
    return {
        "case": sim.name,
        "policy": sim.summary.get("policy"),
        "simulated_ms_per_token": by["total"]["simulated_ms"],
        "measured_ms_per_token": by["total"]["measured_ms"],
        "error_pct": by["total"]["error_pct"],
        "all_within_target": all(r["within_target"] for r in rows),
        "suspects": "; ".join(sorted({r["suspect"] for r in rows if r["suspect"]})),
        "flash_MB_per_token": float(d["flash_bytes"].mean()) / 1e6,
        "flash_moved_MB_per_token": float(d["flash_moved_bytes"].mean()) / 1e6,
        "flash_requests_per_token": float(d["flash_requests"].mean()),
        "sim_flash_MB_per_token": float(sim.tokens.loc[sim.tokens.phase == "decode", "flash_bytes"].mean()) / 1e6,
        "dram_held_MB": real.held_bytes / 1e6,
        "outputs_match_reference": matches,
    }
