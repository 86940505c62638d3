"""``kind: lif_accuracy`` experiments: what LLM in a Flash's predictor costs in accuracy, and what it buys in speed.

For each point (predictor none | oracle | trained at a stored recall target; window k; ffn_compute):

* accuracy: every held-out context (corpus split ``heldout``, chosen as :mod:`sim.lab.accuracy` chooses
  them) is prefilled once with the :class:`~sim.lab.lif.selector.LifSelector` in "pre" mode; perplexity and
  teacher-forced greedy-token agreement against the dense run (:mod:`sim.lab.accuracy`'s code), plus the
  fraction of neurons computed and the false-negative rates (predictor alone, and after the window);
* speed: the same point simulated on each listed hardware profile with the real SmolLM2 trace
  (:mod:`sim.lab.lif.speed`): ms/token, flash GB/token, DRAM.

Writes into the (temporary) results folder: ``speed_accuracy.csv`` (one row per point), ``about.md``,
``config.yaml`` and the simulation's own results under ``simulation/``. The predictor file is resolved
relative to the experiment file's folder, else the repository root; it also carries the labelling rule
(thresholds) that defines "truly active" for the oracle and the false-negative counts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, model_validator

from sim.config.base import StrictModel, load_yaml, validate
from sim.config.profiles import REPO_ROOT
from sim.errors import ConfigError


class LifPoint(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.+=-]+$")
    predictor: Literal["none", "oracle", "trained"]
    recall: float | None = Field(None, description="trained: which stored recall target of the predictor file")
    predictor_path: str | None = Field(None, description="this point's predictor file (default: the experiment's)")
    window_k: int = Field(1, ge=1, le=65535)
    ffn_compute: Literal["active", "resident"] = "active"
    policy: dict[str, Any] = Field(
        {},
        description="extra llm_in_flash settings for the simulation only; with a "
        "`name` other than llm_in_flash, this point's whole simulated policy",
    )
    set: dict[str, Any] = Field({}, description="dotted experiment paths set for this point's simulation only")

    @model_validator(mode="after")
    def _recall(self):
        if (self.predictor == "trained") != (self.recall is not None):
            raise ValueError("recall is required for predictor 'trained' and only for it")
        return self


class HardwareTarget(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="column prefix in speed_accuracy.csv")
    hardware: str
    processor: str = "cpu"
    set: dict[str, Any] = Field({}, description="dotted experiment paths set for this hardware (e.g. dram_budget)")


class SpeedConfig(StrictModel):
    hardware: list[HardwareTarget] = Field(min_length=1)
    experiment: dict[str, Any] = Field({}, description="experiment keys shared by every simulated case")
    policy: dict[str, Any] = Field({}, description="llm_in_flash settings shared by every point")


class LifAccuracyConfig(StrictModel):
    kind: Literal["lif_accuracy"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    model: str = Field("smollm2-135m", description="GGUF the numpy backend runs (name or path)")
    predictor_path: str = Field(description="predictor file; its labelling rule also defines the true active set")
    heldout_tokens_per_context: int = Field(64, gt=1)
    heldout_contexts_per_task: int = Field(2, gt=0)
    points: list[LifPoint] = Field(min_length=1)
    simulation: SpeedConfig


def resolve(path: str, folder: Path, source: str, key: str) -> Path:
    for candidate in (Path(path), folder / path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(source, key, "no such file", path)


def run_lif_accuracy(path: str | Path, out: Path, log=print, progress: bool = True) -> Path:
    """Run the experiment file's points (accuracy then speed) and write into ``out``; returns the CSV path."""
    from sim.lab.lif.speed import simulate_points
    from sim.lab.modelfile import load_model, load_tokenizer, resolve_model_path
    from sim.lif.predictor import load

    path = Path(path)
    config = validate(LifAccuracyConfig, load_yaml(path), path)
    files = [resolve(p.predictor_path or config.predictor_path, path.parent, str(path), "predictor_path")
             for p in config.points]  # fmt: skip
    model_path = resolve_model_path(config.model)
    cfg, w = load_model(model_path)
    metas = {f: load(f, cfg.n_layers, cfg.d_model, cfg.d_ff)[1] for f in dict.fromkeys(files)}
    _check_points(config, files, metas, path)
    t0 = time.perf_counter()
    acc, held = accuracy_rows(config, cfg, w, load_tokenizer(model_path), files, metas, log, progress)
    t1 = time.perf_counter()
    speed, sim_about = simulate_points(config, path, files, metas, out, progress)
    rows = [{**a, **s} for a, s in zip(acc, speed, strict=True)]
    pd.DataFrame(rows).to_csv(out / "speed_accuracy.csv", index=False)
    (out / "config.yaml").write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    (out / "about.md").write_text(_about(config, path, metas, held, sim_about, t1 - t0, time.perf_counter() - t1))
    return out / "speed_accuracy.csv"


def _check_points(config: LifAccuracyConfig, files: list[Path], metas: dict, source: Path) -> None:
    for i, (p, f) in enumerate(zip(config.points, files, strict=True)):
        stored = metas[f]["recall_targets"]
        if p.recall is not None and not any(abs(p.recall - r) < 1e-9 for r in stored):
            raise ConfigError(source, f"points[{i}].recall", f"not stored in {f.name} ({stored})", p.recall)


def truth_rule(meta: dict):
    """The predictor file's labelling rule as a FittedRule (its saved per-layer thresholds)."""
    from sim.traces.sparsity import FittedRule, SparsityRule

    thr = meta["label_thresholds"]
    return FittedRule(SparsityRule.parse(meta["rule"]), None if thr is None else np.asarray(thr, np.float32))


def accuracy_rows(config, cfg, w, tok, files: list[Path], metas: dict, log=print, progress: bool = True):
    """-> (one dict per point: ppl, agreement, fractions, FN rates; held-out contexts [(name, ids)])."""
    from tqdm import tqdm

    from sim.lab.accuracy import _row, _run, _texts
    from sim.lab.kernels import Hooks
    from sim.lab.lif.selector import LifSelector
    from sim.lab.lif.train import layer_truth
    from sim.lif.predictor import load

    held = _texts("heldout", config.heldout_contexts_per_task, config.heldout_tokens_per_context, tok)
    dense = [_run(cfg, w, ids) for _, ids in held]
    rows = []
    bar = tqdm(total=len(files), desc="accuracy", unit="point", disable=not progress, leave=False)
    for p, pred_path in zip(config.points, files, strict=True):
        fitted = truth_rule(metas[pred_path])
        if p.predictor == "none":
            logits = dense
            fractions = {"fraction_computed": 1.0, "fraction_predicted": 1.0, "fraction_true": float("nan"),
                         "fn_rate": 0.0, "fn_rate_computed": 0.0}  # fmt: skip
        else:
            predictor = (
                load(pred_path, cfg.n_layers, cfg.d_model, cfg.d_ff, p.recall)[0] if p.recall is not None else None
            )
            sel = LifSelector(p.predictor, p.ffn_compute, p.window_k, lambda l, a, f=fitted: layer_truth(f, l, a),
                              lambda l: (w.layers[l].gate, w.layers[l].up), predictor)  # fmt: skip
            hooks = Hooks(ffn_selector=sel.ffn_selector())
            logits = [_run(cfg, w, ids, hooks) for _, ids in held]
            fractions = sel.counts.summary()
        r = _row(p.predictor, 0.0, [1.0], logits, dense, held)
        rows.append({"point": p.name, "predictor": p.predictor, "recall_target": p.recall, "window_k": p.window_k,
                     "ffn_compute": p.ffn_compute, "predictor_file": pred_path.name, "rule": metas[pred_path]["rule"],
                     "ppl": r["ppl"], "nll": r["nll"], "agreement": r["agreement"], "n_tokens": r["n_tokens"],
                     **fractions})  # fmt: skip
        log(f"{p.name}: ppl {r['ppl']:.3f}, agreement {r['agreement']:.3f}, "
            f"computed {fractions['fraction_computed']:.3f}, FN {fractions['fn_rate']:.3f}")  # fmt: skip
        bar.update(1)
    bar.close()
    return rows, held


def _about(config, path: Path, metas: dict, held, sim_about: str, acc_s: float, sim_s: float) -> str:
    from sim.lab.modelfile.registry import sha256_file

    names = ", ".join(f"{n} ({len(ids)} tok)" for n, ids in held)
    files = "".join(
        f"- `{f.relative_to(REPO_ROOT) if f.is_relative_to(REPO_ROOT) else f}` (sha256 {sha256_file(f)[:12]}), made "
        f"by `{m['command']}`; labels: rule {m['rule']} calibrated on its {m['train_tokens']} training tokens "
        f"(corpus split `trace`)\n"
        for f, m in metas.items()
    )
    meta = next(iter(metas.values()))
    return (
        f"# {config.name}\n\n{config.description}\n\nExperiment file: `{path}`\n\nPredictor files:\n{files}\n"
        f"Accuracy (numpy backend, model {config.model}, GGUF sha256 {meta['gguf_sha256'][:12]}): held-out "
        f'contexts (corpus split `heldout`): {names}. Selector mode "pre": gate, up and down run only over the '
        f"computed set. Truth (for the oracle and FN rates) = the predictor file's labelling rule on the dense "
        f"activations of the same layer input. Run time {acc_s:.0f} s.\n\n"
        f"Speed (simulator, {sim_s:.0f} s): {sim_about}\n"
    )
