"""Experiment files: one YAML naming hardware, model, DRAM budget and policy, optionally with cases.

```yaml
name: table2
hardware: apple-m1-max         # a hardware_profiles/ name or a path
model: opt-6.7b                # a sim/models/profiles/ name or a path
dtype: fp16
processor: cpu
dram_budget: 6.7 GB            # default: the whole of hardware memory "dram"
decode_tokens: 32
policy: {name: hybrid}
cases:                         # optional; each case = the base with dotted-path overrides
  - name: naive
    set: {policy.name: naive}
    published: {io_ms: 2196}   # makes the run write comparison.csv
```
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from sim.config.activations import ActivationsConfig
from sim.config.base import Bytes, StrictModel, load_yaml, set_path, validate
from sim.config.hardware import Dtype, HardwareProfile
from sim.config.profiles import load_hardware, load_model
from sim.errors import ConfigError
from sim.models.profile import ModelProfile
from sim.policies.registry import PolicyConfig
from sim.units import format_bytes

MAX_DECODE_TOKENS = 1_000_000  # per case: minutes to hours of wall time; more is a typo, not a study

# Metrics a case may state published values for; each is a column of the run's summary.
PublishedMetric = Literal[
    "io_ms",
    "xfer_ms",
    "memmgmt_ms",
    "compute_ms",
    "total_ms",
    "flash_GB_per_token",
    "flash_throughput_GBps",
    "dram_GB",
    "dram_used_GB",
]


class LayoutConfig(StrictModel):
    """Flash layout for policies that do not choose one (llm_in_flash picks its own from ``bundling``)."""

    name: Literal["layer_major", "bundled"] = "layer_major"


class ExperimentConfig(StrictModel):
    kind: Literal["simulation"] = Field("simulation", description="other kinds (accuracy) have their own runner")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    reproduces: str = Field("", description="paper figure/table this reproduces, if any")
    calibration: str = Field("", description="what was calibrated to published numbers")
    hardware: str
    hardware_overrides: dict[str, Any] = Field(
        {},
        description="merged over the hardware profile: calibrations and what-if changes, e.g. "
        "{processors: {cpu: {bandwidth_efficiency: 0.03}}}",
    )
    model: str
    dtype: Dtype = "fp16"
    kv_dtype: Dtype = "fp16"
    processor: str = "cpu"
    dram_budget: Bytes | None = Field(None, description="bytes; default: capacity of memory 'dram'")
    context_tokens: int = Field(128, ge=0, le=10_000_000, description="prompt tokens already in the KV cache")
    decode_tokens: int = Field(
        32, ge=1, le=MAX_DECODE_TOKENS, description="decode steps per case (the simulator runs ~100-5000 a second)"
    )
    layout: LayoutConfig = LayoutConfig()
    policy: PolicyConfig
    activations: ActivationsConfig | None = Field(None, description="which trace drives the run (see activations.py)")
    seed: int = Field(0, ge=0, description="seed of the run's np.random.Generator")
    ci: bool = Field(False, description="run in CI; its comparison.csv must match experiments/expected/<name>.csv")
    timeline_tokens: int = Field(3, ge=0, le=1000, description="tokens whose device spans go to timeline.json")
    engine_mode: Literal["auto", "events"] = Field(
        "auto",
        description="auto: a serial token with the machine to itself is computed in closed form and advances "
        "time by one event (the atomic path, sim/engine/atomic.py; bit-identical results), any other token runs "
        "as device events; events: every token runs as device events (for checking the atomic path)",
    )
    plots: list[str] | None = Field(None, description="plot scripts (relative to this file); default set if unset")


class CaseConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.+=,-]+$")
    set: dict[str, Any] = {}
    published: dict[PublishedMetric, float] = {}
    sweep: dict[str, Any] = Field({}, description="the sweep point this case came from (filled by expansion)")


class ExperimentFile(StrictModel):
    """The file as written: the base experiment plus optional cases and a sweep (validated separately).

    ``sweep: {dotted.path: [v1, v2], ...}`` multiplies every case by the grid of values (cartesian product);
    each resulting case is named ``<case>,<leaf>=<value>,...`` and records its point in ``sweep``.
    """

    cases: list[CaseConfig] = []
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}

    def expanded(self) -> list[CaseConfig]:
        if not self.sweep:
            return list(self.cases)
        keys = list(self.sweep)
        out = []
        for case in self.cases:
            for values in itertools.product(*(self.sweep[k] for k in keys)):
                point = dict(zip(keys, values, strict=True))
                label = ",".join(f"{k.rsplit('.', 1)[-1]}={_label(v)}" for k, v in point.items())
                out.append(
                    CaseConfig(
                        name=f"{case.name},{label}", set={**case.set, **point}, published=case.published, sweep=point
                    )
                )
        return out


def _label(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "", str(value).replace(" ", "")) or "x"


@dataclass(frozen=True)
class Case:
    """One runnable case, fully resolved: config plus the profiles it names."""

    name: str
    config: ExperimentConfig
    hardware: HardwareProfile
    model: ModelProfile
    published: dict[str, float]
    raw: dict[str, Any]
    path: Path | None = None  # the experiment file (relative paths in it resolve from its folder)
    sweep: dict[str, Any] | None = None  # the sweep point of this case, if it came from a sweep
    notes: tuple[str, ...] = ()  # things the user should know about how the case was resolved


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> list[Case]:
    """Read, validate and resolve every case of an experiment file (errors: one-line ConfigError).

    ``overrides`` (dotted path -> value, e.g. from ``--set``) apply to the base, before each case's ``set``.
    """
    path = Path(path)
    data = load_yaml(path)
    for dotted, value in (overrides or {}).items():
        data = set_path(data, dotted, value)
    cases_raw = data.pop("cases", None) or [{"name": data.get("name", path.stem)}]
    sweep = data.pop("sweep", None) or {}
    cases = validate(ExperimentFile, {"cases": cases_raw, "sweep": sweep}, path).expanded()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ConfigError(path, "cases", "case names must be unique", names)
    return [_resolve_case(path, data, case, tuple(overrides or ())) for case in cases]


def _shadowed(overrides: tuple[str, ...], case: CaseConfig) -> tuple[str, ...]:
    """Notes on ``--set`` paths that a case's own ``set`` replaces (the case wins: it is applied last)."""
    notes = []
    for key in overrides:
        hits = [k for k in case.set if k == key or k.startswith(key + ".") or key.startswith(k + ".")]
        if hits:
            notes.append(f"--set {key} is overridden in case {case.name} by its set: {', '.join(hits)}")
    return tuple(notes)


def _resolve_case(path: Path, base: dict[str, Any], case: CaseConfig, overrides: tuple[str, ...] = ()) -> Case:
    raw = base
    for dotted, value in case.set.items():
        raw = set_path(raw, dotted, value)
    source = f"{path} (case {case.name})" if case.set else str(path)
    config = validate(ExperimentConfig, raw, source)
    hardware = load_hardware(config.hardware, source, "hardware", config.hardware_overrides)
    model = load_model(config.model, source, "model")
    _check_references(source, config, hardware)
    notes = _shadowed(overrides, case)
    return Case(case.name, config, hardware, model, dict(case.published), raw, path, dict(case.sweep), notes)


def _check_references(source: str, config: ExperimentConfig, hardware: HardwareProfile) -> None:
    if config.processor not in hardware.processors:
        known = ", ".join(hardware.processors)
        raise ConfigError(source, "processor", f"not in hardware {hardware.name!r} (has {known})", config.processor)
    peaks = hardware.processors[config.processor].peak_flops
    for key in ("dtype", "kv_dtype"):
        dtype = getattr(config, key)
        if dtype not in peaks:
            reason = f"processor {config.processor!r} has no peak for it (has {', '.join(peaks)})"
            raise ConfigError(source, key, reason, dtype)
    if "dram" not in hardware.memories:
        raise ConfigError(source, "hardware", "profile has no memory named 'dram'", hardware.name)
    budgeted = hardware.memories[hardware.flash.target_memory]
    if config.dram_budget is not None and config.dram_budget > budgeted.capacity:
        reason = (
            f"exceeds the {format_bytes(budgeted.capacity)} of memory {hardware.flash.target_memory!r} of "
            f"{hardware.name!r} (raise its capacity with hardware_overrides for a what-if)"
        )
        raise ConfigError(source, "dram_budget", reason, format_bytes(config.dram_budget))
    compute_memory, flash_memory = hardware.processors[config.processor].memory, hardware.flash.target_memory
    if compute_memory != flash_memory and not any(
        set(link.ends) == {compute_memory, flash_memory} for link in hardware.links.values()
    ):
        reason = f"computes out of {compute_memory!r} but flash reads into {flash_memory!r} and no link joins them"
        raise ConfigError(source, "processor", reason, config.processor)
