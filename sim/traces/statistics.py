"""Activation statistics of a model, as an input with a cited source (``traces/statistics/NAME.yaml``).

A projection (``activations: {source: projection, density: NAME}``) gives the target model these per-layer active
fractions; a file may also state the sliding window's reuse and the predictor's quality, which the simulator then
checks against the run (window) or uses as the statistical predictor's defaults (predictor). ``kind`` says where
the numbers come from: ``published`` (a paper's table, cited) or ``fitted`` (measured on a real trace by
``python -m sim trace statistics``, whose command the file records). A file describes one ``model``; a run of
another model with it is an assumption, and the run says so.

```yaml
name: opt-6.7b-table6
model: opt-6.7b
kind: published
source: "LLM in a Flash (arXiv 2312.11514 v3) Table 6 and App. C"
density: {points: {1: 0.0156, 16: 0.0266, 32: 0.0536}, n_layers: 32, mean: 0.0330}  # 1-based layer -> fraction
window: {k: 5, fresh_fraction: 0.024, held_fraction: 0.24}  # optional
predictor: {recall: 0.95, fp_rate: 0.07}  # optional
projection: {gain_sigma: 0.58}  # optional: the projection knob fitted to window.fresh_fraction
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from sim.config.activations import ActivationsConfig, ProjectedActivations
from sim.config.base import StrictModel, load_yaml, validate
from sim.config.profiles import REPO_ROOT
from sim.errors import ConfigError

STATISTICS_DIR = REPO_ROOT / "traces" / "statistics"
WINDOW_KS = (1, 2, 3, 4, 5, 6, 7, 8)  # window lengths a fitted file measures


class Density(StrictModel):
    points: dict[int, float] = Field(min_length=1, description="1-based layer -> active fraction of its FFN")
    n_layers: int = Field(gt=0, description="layers of the model the points were measured on")
    mean: float | None = Field(None, gt=0, lt=1, description="published mean over layers (matched exactly)")

    @model_validator(mode="after")
    def _check(self) -> Density:
        for layer, fraction in self.points.items():
            if not 1 <= layer <= self.n_layers:
                raise ValueError(f"density.points: layer {layer} is outside 1..{self.n_layers}")
            if not 0 < fraction < 1:
                raise ValueError(f"density.points: layer {layer}'s fraction {fraction} is not in (0, 1)")
        return self


class Window(StrictModel):
    k: int = Field(ge=1, description="window length, tokens")
    masks: Literal["predicted", "true"] = Field(
        "predicted", description="whose neurons the window holds: a predictor's marks, or the truly active ones"
    )
    fresh_fraction: float = Field(gt=0, lt=1, description="share of the FFN loaded fresh per token")
    held_fraction: float | None = Field(None, gt=0, lt=1, description="share of the FFN the window holds")
    by_k: dict[int, list[float]] | None = Field(
        None, description="fitted files: k -> [fresh_fraction, held_fraction] for each measured window length"
    )


class PredictorQuality(StrictModel):
    recall: float = Field(gt=0, le=1)
    fp_rate: float = Field(ge=0, le=1, description="false positives / inactive neurons")


class Projection(StrictModel):
    gain_sigma: float = Field(ge=0, description="sim.traces.projection gain spread fitted to window.fresh_fraction")


class ActivationStatistics(StrictModel):
    name: str
    model: str = Field(description="the model these statistics were published for or measured on")
    kind: Literal["published", "fitted"]
    source: str = Field(min_length=1, description="the table, or the trace and command, they come from")
    density: Density
    window: Window | None = None
    predictor: PredictorQuality | None = None
    projection: Projection | None = None

    def density_profile(self, n_layers: int) -> np.ndarray:
        """Per-layer active fraction [n_layers] for a model of ``n_layers`` (relative depth; see projection)."""
        from sim.traces.projection import density_profile

        d = self.density
        return density_profile(d.points, n_layers, d.mean, d.n_layers)

    def describe(self) -> str:
        return f"{self.name} ({self.kind}, {self.model}): {self.source}"


def statistics_names() -> list[str]:
    return sorted(p.stem for p in STATISTICS_DIR.glob("*.yaml"))


def load_statistics(
    name: str, source: str, key: str = "activations.density", folder: Path | None = None
) -> ActivationStatistics:
    """The statistics file ``name``: a name in traces/statistics/, or a path (relative to ``folder``, the
    experiment's, else to the repository root); unknown -> one-line ConfigError."""
    path = STATISTICS_DIR / f"{name}.yaml"
    if name.endswith((".yaml", ".yml")):
        relative = [*([folder / name] if folder else []), REPO_ROOT / name]
        candidates = [Path(name)] if Path(name).is_absolute() else relative
        path = next((p for p in candidates if p.is_file()), candidates[0])
    if not path.is_file():
        known = ", ".join(statistics_names()) or "none"
        raise ConfigError(source, key, f"no activation statistics of that name (known: {known}; or a float)", name)
    return validate(ActivationStatistics, load_yaml(path), str(path))


def projection_statistics(
    cfg: ActivationsConfig | None, source: str, experiment_dir: Path | None = None
) -> ActivationStatistics | None:
    """The activation statistics a projection's ``density`` names (None: a number, or not a projection)."""
    if not isinstance(cfg, ProjectedActivations) or not isinstance(cfg.density, str):
        return None
    return load_statistics(cfg.density, source, folder=experiment_dir)


DEFAULT_GAIN_SIGMA = 0.25


def projection_gain_sigma(cfg: ProjectedActivations, stats: ActivationStatistics | None) -> float:
    """The configured gain spread, else the one fitted with the statistics, else DEFAULT_GAIN_SIGMA."""
    if cfg.gain_sigma is not None:
        return cfg.gain_sigma
    return stats.projection.gain_sigma if stats is not None and stats.projection else DEFAULT_GAIN_SIGMA


def fit_statistics(source, name: str, model: str, command: str, k: int = 5) -> ActivationStatistics:
    """Statistics measured on a real trace (``source``: a :class:`~sim.traces.source.TraceSource`): every layer's
    density, and for windows of 1..8 tokens the share of the FFN loaded fresh per token and held (of the truly
    active neurons, context by context: a window never spans two prompts)."""
    L, F, K = source.n_layers, source.d_ff, max(WINDOW_KS)
    contexts = source.contexts(0, source.n_tokens)  # [T] context id per token
    active = np.zeros(L)
    fresh, held, n_pos = np.zeros(K + 1), np.zeros(K + 1), np.zeros(K + 1)
    for ctx in np.unique(contexts):
        idx = np.flatnonzero(contexts == ctx)
        mask = source.masks(int(idx[0]), int(idx[-1]) + 1)  # [T, L, F] bool
        active += mask.sum(axis=(0, 2))
        csum = np.zeros((len(idx) + 1, L, F), np.int32)
        np.cumsum(mask, axis=0, dtype=np.int32, out=csum[1:])
        for w in range(1, min(K, len(idx) - 1) + 1):  # t = w .. T-1: a full window of w tokens before t
            # (sim.lif.window: a step reads what the last w tokens did not store, then holds tokens t-w+1 .. t)
            union = (csum[w + 1 :] - csum[1:-w]) > 0  # [T-w, L, F] tokens t-w+1 .. t
            before = (csum[w:-1] - csum[: -w - 1]) > 0  # tokens t-w .. t-1: what a window of w held before t
            fresh[w] += (union & ~before).sum() / (L * F)
            held[w] += union.sum() / (L * F)
            n_pos[w] += union.shape[0]
    density = active / (source.n_tokens * F)  # [L]
    by_k = {
        w: [round(float(fresh[w] / n_pos[w]), 5), round(float(held[w] / n_pos[w]), 5)] for w in WINDOW_KS if n_pos[w]
    }
    if k not in by_k:
        raise ValueError(f"window k={k} is longer than the trace's contexts")
    return ActivationStatistics(
        name=name,
        model=model,
        kind="fitted",
        source=f"{source.describe()}; measured by: {command}",
        density=Density(points={l + 1: round(float(d), 5) for l, d in enumerate(density)}, n_layers=L),
        window=Window(k=k, masks="true", fresh_fraction=by_k[k][0], held_fraction=by_k[k][1], by_k=by_k),
        projection=Projection(gain_sigma=0.0),  # copies of a source neuron in lock-step: a projection at these
    )  # densities then has exactly the trace's window reuse


def predictor_quality(path: Path, recall: float, rule: str) -> tuple[PredictorQuality, str]:
    """(held-out recall and false-positive rate, what to say of them) of a trained predictor file
    (sim.lif.predictor) at one of its recall targets; its labels must be ``rule`` (one-line error otherwise)."""
    import json

    try:
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(str(path), "--predictor", f"not a predictor file ({type(err).__name__})") from None
    if meta.get("rule") != rule:
        reason = f"was trained on labels {meta.get('rule')!r}, the statistics measure {rule!r}"
        raise ConfigError(str(path), "--predictor", reason, str(path))
    quality = meta["heldout_quality"].get(f"{recall:g}")
    if quality is None:
        known = ", ".join(meta["heldout_quality"])
        raise ConfigError(str(path), "--predictor-recall", f"not one of its targets ({known})", recall)
    said = (f"predictor: {path} at recall target {recall:g}, held-out on {meta.get('heldout_tokens', '?')} tokens "
            f"(precision {quality['precision']:.3f})")  # fmt: skip
    return PredictorQuality(recall=round(quality["recall"], 4), fp_rate=round(quality["fp_rate"], 4)), said


def write_statistics(out: Path, stats: ActivationStatistics) -> None:
    """Write ``stats`` to a new file ``out``, whole or not at all (a temporary file linked into place: an existing
    file is never replaced)."""
    import os
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(statistics_yaml(stats))
        os.link(tmp, out)  # fails if out exists
    finally:
        os.unlink(tmp)


def statistics_yaml(stats: ActivationStatistics) -> str:
    """The file text of ``stats`` (a header line, then the fields in schema order)."""
    import yaml

    head = f"# Activation statistics {stats.name}, written by `python -m sim trace statistics`\n"
    return head + yaml.safe_dump(stats.model_dump(exclude_none=True), sort_keys=False, width=120)
