"""Calibrate the two per-backend numbers of LLM in a Flash Table 3's "all" rows that shapes cannot predict:

* ``processors.<p>.gather_efficiency`` -- so that compute equals the published Compute column, when the case
  computes the FFN over gathered (predicted) rows (``policy.ffn_compute: active``);
* ``memories.dram.copy_bandwidth`` -- so that memory management equals the published Mem column (the bytes
  copied are predicted by sim/lif/memmgmt.py; only the rate is calibrated).

    python experiments/calibrate_lif.py EXPERIMENT CASE COMPUTE_MS MEMMGMT_MS

Both times are linear in the calibrated quantity (compute = A + G / gather_efficiency; memmgmt = bytes /
copy_bandwidth), so two simulations of the case (gather_efficiency 1 and 0.5) solve them exactly. The other
calibrated number, ``bandwidth_efficiency``, comes from the naive row (experiments/calibrate_compute.py) and
must already be in the case. Prints the values experiment files quote in ``hardware_overrides``.
"""

from __future__ import annotations

import dataclasses
import sys

from sim.config.experiment import Case, load_experiment
from sim.engine.simulate import simulate_case


def with_hardware(case: Case, gather_efficiency: float) -> Case:
    """The case with its processor's gather_efficiency replaced."""
    hw, name = case.hardware, case.config.processor
    proc = hw.processors[name].model_copy(update={"gather_efficiency": gather_efficiency})
    return dataclasses.replace(case, hardware=hw.model_copy(update={"processors": {**hw.processors, name: proc}}))


def calibrate(path: str, case_name: str, compute_ms: float, memmgmt_ms: float) -> dict[str, float | str]:
    case = next(c for c in load_experiment(path) if c.name == case_name)
    full, half = (simulate_case(with_hardware(case, g), timeline=False).summary for g in (1.0, 0.5))
    gathered_ms = half["compute_ms"] - full["compute_ms"]  # G: gathered kernels at efficiency 1
    fixed_ms = full["compute_ms"] - gathered_ms  # A: everything else
    copy_Bps = case.hardware.memories["dram"].copy_bandwidth  # noqa: N806
    out: dict[str, float | str] = {
        "fixed_compute_ms": fixed_ms,
        "gathered_compute_ms_at_1": gathered_ms,
        "memmgmt_ms_now": full["memmgmt_ms"],
        "copy_bandwidth_GBps": round(copy_Bps * full["memmgmt_ms"] / memmgmt_ms / 1e9, 3),
    }
    if gathered_ms <= 0 or compute_ms <= fixed_ms or gathered_ms / (compute_ms - fixed_ms) > 1:
        out["gather_efficiency"] = "n/a (published compute not reachable with gather_efficiency <= 1)"
    else:
        out["gather_efficiency"] = round(gathered_ms / (compute_ms - fixed_ms), 4)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.split("\n\n")[1])
    exp, name, compute, memmgmt = sys.argv[1:]
    result = calibrate(exp, name, float(compute), float(memmgmt))
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
