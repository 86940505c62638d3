"""Build the ActivationSource an experiment's ``activations:`` section names (sim.traces does the work)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sim import points
from sim.config.activations import ActivationsConfig, ProjectedActivations, SyntheticActivations, TraceActivations
from sim.config.profiles import REPO_ROOT
from sim.errors import ConfigError, TraceError
from sim.models.profile import ModelProfile
from sim.traces.format import TraceReader
from sim.traces.projection import ProjectedSource
from sim.traces.source import ActivationSource, Looped, Offset, TraceSource
from sim.traces.statistics import projection_gain_sigma, projection_statistics
from sim.traces.synthetic import SyntheticSource, fit


def resolve_trace_path(path: str, experiment_dir: Path | None, source: str) -> Path:
    """A trace path relative to the experiment's folder, else to the repository root; missing -> ConfigError."""
    candidates = (
        [Path(path)]
        if Path(path).is_absolute()
        else [*(([experiment_dir / path]) if experiment_dir else []), REPO_ROOT / path]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(source, "activations.path", "no such trace file (see traces/README.md)", path)


def build_activations(
    cfg: ActivationsConfig,
    model: ModelProfile,
    rng: np.random.Generator,
    experiment_dir: Path | None = None,
    source: str = "experiment",
    cache: dict | None = None,
) -> ActivationSource:
    """The source ``cfg`` names. ``cache`` (one dict per run) shares sources between cases: opening and calibrating
    a trace, or projecting it, is most of a small case's set-up time. A source built from random draws (projection,
    synthetic) is shared only by cases whose generator is in the same state, and each of them gets the generator
    in the state the build left it in (:func:`_drawn`): sharing never changes a draw."""
    path = resolve_trace_path(cfg.path, experiment_dir, source)
    rule = cfg.rule if isinstance(cfg, TraceActivations | SyntheticActivations) else "threshold:0.9"

    def trace(rule: str, calib_tokens: int) -> TraceSource:
        key = (str(path.resolve()), path.stat().st_mtime_ns, rule, calib_tokens)
        return _memo(cache, key, lambda: TraceSource(TraceReader(path, derive=points.derived), rule, calib_tokens))

    if isinstance(cfg, ProjectedActivations):
        base = trace("dense", 1)
        stats = projection_statistics(cfg, source, experiment_dir)
        density = stats.density_profile(model.n_layers) if stats is not None else cfg.density
        sigma = projection_gain_sigma(cfg, stats)

        def project() -> ProjectedSource:
            kw = {"density": density, "gain_sigma": sigma, "calib_tokens": cfg.calib_tokens,
                  "density_from": stats.name if stats is not None else ""}  # fmt: skip
            return ProjectedSource.onto(base, model, rng, derive=points.derived, **kw)  # thresholds: once, on disk

        src = _drawn(cache, ("projection", id(base), model.model_dump_json(), cfg.model_dump_json()), rng, project)
    elif isinstance(cfg, SyntheticActivations):
        base = trace(rule, cfg.calib_tokens)
        fitted = _memo(cache, ("fit", id(base)), lambda: fit(base))  # id: base lives in the cache

        def sample() -> SyntheticSource:
            shape = {"n_layers": model.n_layers, "d_ff": model.n_experts * model.d_ff}
            return SyntheticSource(fitted, rng, n_tokens=cfg.n_tokens, density=cfg.density, **shape)

        src = _drawn(cache, ("synthetic", id(fitted), model.model_dump_json(), cfg.model_dump_json()), rng, sample)
    else:
        src = trace(rule, cfg.calib_tokens)
        src.reader.validate_against(model)
    _check_shape(src, model, source)
    src = Offset(src, cfg.offset_tokens) if cfg.offset_tokens else src
    return Looped(src) if cfg.loop else src


def _memo(cache: dict | None, key: tuple, build: Callable[[], Any]) -> Any:
    """``build()`` once per key of ``cache`` (without a cache: every time)."""
    if cache is None:
        return build()
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _drawn(cache: dict | None, key: tuple, rng: np.random.Generator, build: Callable[[], Any]) -> Any:
    """``build()`` (which draws from ``rng``) through ``cache``: a hit returns what the same build from the same
    generator state returned, and moves ``rng`` to the state that build left it in, as if it had run again."""
    state = json.dumps(rng.bit_generator.state, sort_keys=True) if cache is not None else None
    built, after = _memo(cache, (*key, state), lambda: (build(), rng.bit_generator.state))
    rng.bit_generator.state = after
    return built


def _check_shape(src: ActivationSource, model: ModelProfile, source: str) -> None:
    n = model.n_experts * model.d_ff
    if (src.n_layers, src.d_ff) != (model.n_layers, n):
        raise TraceError(
            f"{source}: activations {src.describe()} have {src.n_layers} layers x {src.d_ff} neurons, "
            f"model {model.name} needs {model.n_layers} x {n} (use source: projection)"
        )
