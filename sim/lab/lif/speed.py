"""The speed side of a ``kind: lif_accuracy`` experiment: every point simulated on every listed hardware profile.

The points become the cases of an ordinary simulation experiment (policy ``llm_in_flash``; trained points load
the experiment's predictor file through ``policy.predictor_path`` and pick their threshold row by
``policy.recall``), which is written as ``simulation/experiment.yaml`` and run with the simulator's own
:func:`sim.config.experiment.load_experiment` / :func:`sim.engine.simulate.simulate_case`; its full results
(summary, per-token rows, timeline) go to ``simulation/`` beside the table. Paths in the generated file are
absolute so that it resolves wherever the results folder is moved to on this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.engine.activations import resolve_trace_path
from sim.errors import CapacityError


def experiment_data(config, experiment_path: Path, files: list[Path], metas: dict) -> dict[str, Any]:
    """The generated simulation experiment: shared keys + one case per (point, hardware). The trace's sparsity
    rule is each point's predictor-file rule, so "active" means the same thing as in the accuracy run."""
    sim = config.simulation
    base = {"name": f"{config.name}-speed", "hardware": sim.hardware[0].hardware, "model": "smollm2-135m",
            **sim.experiment, "policy": {"name": "llm_in_flash", **sim.policy}}  # fmt: skip
    acts = base.get("activations")
    if acts and "path" in acts:
        source = f"{experiment_path}: simulation.experiment"
        base["activations"] = {**acts, "path": str(resolve_trace_path(acts["path"], experiment_path.parent, source))}
    cases = []
    for p, pred_path in zip(config.points, files, strict=True):
        policy = {"policy.predictor": p.predictor, "policy.window_k": p.window_k, "policy.ffn_compute": p.ffn_compute}
        if acts:
            policy["activations.rule"] = metas[pred_path]["rule"]
        if p.predictor == "trained":
            policy |= {"policy.predictor_path": str(pred_path), "policy.recall": p.recall}
        if p.policy.get("name", "llm_in_flash") != "llm_in_flash":  # another policy (e.g. dense as hybrid)
            policy = {"policy": dict(p.policy)}
        else:
            policy |= {f"policy.{k}": v for k, v in p.policy.items()}
        for hw in sim.hardware:
            setting = {"hardware": hw.hardware, "processor": hw.processor, **hw.set, **policy, **p.set}
            cases.append({"name": f"{p.name},hw={hw.name}", "set": setting})
    return {**base, "cases": cases}


def simulate_points(config, experiment_path: Path, files: list[Path], metas: dict, out: Path, progress: bool = True):
    """Simulate every (point, hardware) -> (one dict of per-hardware columns per point, a line for about.md)."""
    from tqdm import tqdm

    from sim.config.experiment import load_experiment
    from sim.engine.simulate import simulate_case
    from sim.results import write_results

    folder = out / "simulation"
    folder.mkdir(parents=True, exist_ok=True)
    exp_file = folder / "experiment.yaml"
    exp_file.write_text(yaml.safe_dump(experiment_data(config, experiment_path, files, metas), sort_keys=False))
    cases = load_experiment(exp_file)
    ran, results, failed, cache = [], [], {}, {}  # cache: the cases share one trace reader (build_activations)
    for case in tqdm(cases, desc="simulating", unit="case", disable=not progress, leave=False):
        try:
            results.append(simulate_case(case, cache=cache))
            ran.append(case)
        except CapacityError as err:  # the point does not fit this hardware's DRAM budget: a result, not a crash
            failed[case.name] = str(err)
    if not results:
        raise CapacityError(f"{experiment_path}: no point fits the DRAM budget ({next(iter(failed.values()))})")
    write_results(folder, exp_file, ran, results)
    by_name = {r.name: r for r in results}
    rows = []
    for p in config.points:
        row: dict[str, float | str] = {}
        for hw in config.simulation.hardware:
            name = f"{p.name},hw={hw.name}"
            if name in failed:
                row |= {f"{hw.name}_ms_per_token": float("nan"), f"{hw.name}_note": failed[name]}
                continue
            r = by_name[name]
            s, tok = r.summary, r.tokens
            fn = float(np.mean(tok["predictor_fn"])) if "predictor_fn" in tok else 0.0
            row |= {f"{hw.name}_ms_per_token": s["total_ms"], f"{hw.name}_flash_GB_per_token": s["flash_GB_per_token"],
                    f"{hw.name}_dram_MB": 1e3 * s["dram_GB"], f"{hw.name}_sim_fn_rate": fn}  # fmt: skip
        rows.append(row)
    first = results[0].summary
    acts_used = [r.summary["activations"] for r in results]
    failed_note = f" Did not fit the DRAM budget: {'; '.join(failed)}." if failed else ""
    hw_names = ", ".join(f"{h.name} = {h.hardware} ({h.processor})" for h in config.simulation.hardware)
    about = (f"{len(cases)} cases (`simulation/experiment.yaml`, results in `simulation/`), hardware {hw_names}; "
             f"{first['tokens']} decode tokens per case; activations: {'; '.join(dict.fromkeys(acts_used))}."
             f"{failed_note}")  # fmt: skip
    return rows, about
