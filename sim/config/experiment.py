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

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sim.config.activations import ActivationsConfig
from sim.config.base import Bytes, StrictModel, load_yaml, set_path, validate
from sim.config.hardware import Dtype, HardwareProfile
from sim.config.profiles import load_hardware, load_model
from sim.config.search import load_search
from sim.config.workload import Length, OutputLength, PlacementConfig, RequestConfig, highest, lowest
from sim.errors import ConfigError
from sim.models.profile import ModelProfile
from sim.policies.registry import PolicyConfig
from sim.traces.statistics import ActivationStatistics, projection_statistics
from sim.units import format_bytes

MAX_DECODE_TOKENS = 1_000_000  # per case: minutes to hours of wall time; more is a typo, not a study
MAX_REQUESTS = 1_000_000

# Metrics a case may state published values for; each is a column of the run's summary (<memory>_GB and
# <memory>_used_GB for a memory of the hardware profile).
PUBLISHED_METRICS = (
    "io_ms",
    "xfer_ms",
    "memmgmt_ms",
    "compute_ms",
    "total_ms",
    "tokens_per_s",
    "system_tokens_per_s",
    "ttft_ms",
    "flash_GB_per_token",
    "flash_throughput_GBps",
)
MEMORY_METRIC = re.compile(r"^(?P<memory>[A-Za-z0-9_]+?)(_used)?_GB$")


LAYOUT_POLICIES = ("all_dram", "naive", "hybrid", "llm_in_flash")  # policies that read through the engine's layout


class LayoutConfig(StrictModel):
    """Where every weight lives on flash (sim/layout): layer_major (each op's matrix in turn; a neuron's up and down
    rows apart), bundled (LLM in a Flash's row-column bundles: a neuron's rows side by side), coactivation (each
    bundle followed by a copy of its closest friend's, picked from the run's activations)."""

    name: Literal["layer_major", "bundled", "coactivation"] = "layer_major"
    coactivation_tokens: int = Field(
        512, ge=2, description="coactivation: source tokens whose co-activations pick friends"
    )
    dtype: Dtype | None = Field(
        None,
        description="the dtype weights are stored in on flash, so the size of every row, bundle and read (LLM in a "
        "Flash quotes fp32 bundles); default: the experiment's dtype. DRAM and compute use the experiment's dtype: "
        "rows are converted as they land (conversion not charged). naive, hybrid and llm_in_flash only",
    )


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
    context_tokens: Length = Field(128, description="prompt tokens per request: a number or {low, high}")
    decode_tokens: OutputLength = Field(
        32, description="tokens generated per request: a number or {low, high} (the simulator runs ~100-5000 a second)"
    )
    batch: int = Field(1, ge=1, le=65536, description="requests decoded together (continuous batching)")
    requests: Annotated[int, Field(ge=1)] | Annotated[list[RequestConfig], Field(min_length=1)] | None = Field(
        None, description="how many requests (default: batch), or a list of {context_tokens, decode_tokens, arrival}"
    )
    arrival_rate_per_s: float | None = Field(
        None, gt=0, le=1e9, description="Poisson arrivals at this rate; default: every request arrives at t = 0"
    )
    prefill_chunk_tokens: int = Field(
        512, ge=0, le=1_000_000, description="prompt tokens per prefill step; 0: prompts are in the KV cache on arrival"
    )
    placement: PlacementConfig = PlacementConfig()
    layout: LayoutConfig = LayoutConfig()
    policy: PolicyConfig
    activations: ActivationsConfig | None = Field(None, description="which trace drives the run (see activations.py)")
    seed: int = Field(0, ge=0, description="seed of the run's np.random.Generator")
    ci: bool = Field(False, description="run in CI; its comparison.csv must match experiments/expected/<name>.csv")
    timeline_tokens: int = Field(3, ge=0, le=1000, description="tokens whose device spans go to timeline.json")
    engine_mode: Literal["auto", "events"] = Field(
        "auto",
        description="auto: a step that nothing can contend with is computed in closed form and advances time by one "
        "event (sim/engine/executor.py; the same times), any other step runs as device events; events: every "
        "step runs as device events (for checking the shortcut)",
    )
    plots: list[str] | None = Field(None, description="plot scripts (relative to this file); default set if unset")

    @model_validator(mode="after")
    def _workload(self) -> ExperimentConfig:
        n = self.n_requests
        if lowest(self.decode_tokens) < 1:
            raise ValueError("decode_tokens: every request generates at least 1 token")
        if n > MAX_REQUESTS:
            raise ValueError(f"requests: {n} requests; at most {MAX_REQUESTS} per case")
        longest = self.max_decode_tokens
        if n * longest > MAX_DECODE_TOKENS:
            raise ValueError(
                f"decode_tokens: {n} requests x {longest} tokens is over {MAX_DECODE_TOKENS} decoded tokens per case "
                "(hours of wall time): shorten the run or split it into cases"
            )
        return self

    @property
    def n_requests(self) -> int:
        return len(self.requests) if isinstance(self.requests, list) else self.requests or self.batch

    @property
    def request_list(self) -> list[RequestConfig]:
        """The explicitly listed requests (none if the file gives a count)."""
        return self.requests if isinstance(self.requests, list) else []

    @property
    def max_decode_tokens(self) -> int:
        """The most tokens any request of the case may generate."""
        listed = [r.decode_tokens for r in self.request_list if r.decode_tokens is not None]
        return max([highest(self.decode_tokens), *listed])

    @property
    def max_context_tokens(self) -> int:
        """The most tokens any request's KV cache may hold (its prompt plus what it generates)."""
        listed = [r.context_tokens for r in self.request_list if r.context_tokens is not None]
        return max([highest(self.context_tokens), *listed]) + self.max_decode_tokens


class CaseConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.+=,-]+$")
    set: dict[str, Any] = {}
    published: dict[str, float] = {}
    calibrated: list[str] = Field(
        [], description="published metrics a parameter was tuned to (rows labelled calibrated; the rest predicted)"
    )
    sweep: dict[str, Any] = Field({}, description="the sweep point this case came from (filled by expansion)")


class ExperimentFile(StrictModel):
    """The file as written: the base experiment plus optional cases, a sweep and a zip (validated separately).

    ``sweep: {dotted.path: [v1, v2], ...}`` multiplies every case by the grid of values (cartesian product);
    ``zip: {dotted.path: [v1, v2], other.path: [w1, w2]}`` adds one more axis whose i-th point sets every listed path
    to its i-th value together (lists of one length: a machine and its budget, a model and its trace). Each resulting
    case is named ``<case>,<leaf>=<value>,...`` and records its point in ``sweep``.
    """

    cases: list[CaseConfig] = []
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    zip: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}

    @field_validator("zip")
    @classmethod
    def _zip_lengths(cls, value: dict[str, list[Any]], info: ValidationInfo) -> dict[str, list[Any]]:
        lengths = {k: len(v) for k, v in value.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"every list needs the same length (got {lengths})")
        both = sorted(set(value) & set(info.data.get("sweep", {})))
        if both:
            raise ValueError(f"{both[0]!r} is also swept; a path is swept or zipped, not both")
        return value

    def expanded(self) -> list[CaseConfig]:
        axes = [[((k, v),) for v in values] for k, values in self.sweep.items()]  # one axis per swept path
        if self.zip:
            axes.append(list(zip(*([(k, v) for v in values] for k, values in self.zip.items()), strict=True)))
        if not axes:
            return list(self.cases)
        out = []
        for case in self.cases:
            for combo in itertools.product(*axes):
                point = dict(pair for group in combo for pair in group)
                label = ",".join(f"{k.rsplit('.', 1)[-1]}={_label(v)}" for k, v in point.items())
                out.append(
                    CaseConfig(
                        name=f"{case.name},{label}",
                        set={**case.set, **point},
                        published=case.published,
                        calibrated=case.calibrated,
                        sweep=point,
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
    calibrated: tuple[str, ...] = ()  # published metrics a parameter was tuned to; the others are predictions
    statistics: ActivationStatistics | None = None  # the activation statistics a projection's density names


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> list[Case]:
    """Read, validate and resolve every case of an experiment file (errors: one-line ConfigError).

    ``overrides`` (dotted path -> value, e.g. from ``--set``) apply to the base, before each case's ``set``.
    """
    path = Path(path)
    data = load_yaml(path)
    for dotted, value in (overrides or {}).items():
        data = set_path(data, dotted, value)
    cases_raw = data.pop("cases", None) or [{"name": data.get("name", path.stem)}]
    sweep, zipped = data.pop("sweep", None) or {}, data.pop("zip", None) or {}
    if data.pop("search", None) is not None:
        load_search(path, overrides)  # its errors, one line each, before anything runs (sim/search.py runs it)
    cases = validate(ExperimentFile, {"cases": cases_raw, "sweep": sweep, "zip": zipped}, path).expanded()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ConfigError(path, "cases", "case names must be unique", names)
    return [_resolve_case(path, data, case, tuple(overrides or ())) for case in cases]


def _statistics(
    config: ExperimentConfig, model: ModelProfile, source: str, folder: Path
) -> tuple[ExperimentConfig, ActivationStatistics | None, tuple[str, ...]]:
    """The activation statistics a projection names, what they set (the statistical predictor's recall and false
    positives, where the experiment leaves them), and notes on what is assumed rather than measured for ``model``."""
    stats, notes, also = projection_statistics(config.activations, source, folder), [], ""
    policy = config.policy
    if getattr(policy, "predictor", None) == "statistical":
        unset = [k for k in ("recall", "fp_rate") if k not in policy.model_fields_set]
        if unset and stats is not None and stats.predictor is not None:
            update = {k: getattr(stats.predictor, k) for k in unset}
            config = config.model_copy(update={"policy": policy.model_copy(update=update)})
            also = " (with the statistical predictor's " + ", ".join(f"{k} {v:g}" for k, v in update.items()) + ")"
        elif unset and model.name != "opt-6.7b" and getattr(config.activations, "source", "") == "projection":
            values = ", ".join(f"{k} {getattr(policy, k):g}" for k in unset)
            notes.append(f"the statistical predictor's {values} are OPT-6.7B's (LLM in a Flash App. C): an "
                         f"assumption for {model.name}")  # fmt: skip
    if stats is not None and stats.model != model.name:
        notes.append(f"activations of {model.name} use {stats.name}{also} ({stats.kind} for {stats.model}): an "
                     f"assumption, not a measurement of {model.name}")  # fmt: skip
    return config, stats, tuple(notes)


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
    hardware = load_hardware(config.hardware, source, "hardware", config.hardware_overrides, path.parent)
    model = load_model(config.model, source, "model", path.parent)
    _check_references(source, config, hardware, case.published)
    for metric in case.calibrated:
        if metric not in case.published:
            reason = "names a metric the case does not publish"
            raise ConfigError(f"{path} (case {case.name})", "calibrated", reason, metric)
    config, statistics, assumed = _statistics(config, model, source, path.parent)
    notes = _shadowed(overrides, case) + assumed
    published, calibrated = dict(case.published), tuple(case.calibrated)
    return Case(case.name, config, hardware, model, published, raw, path, dict(case.sweep), notes, calibrated,
                statistics)  # fmt: skip


def _check_references(
    source: str, config: ExperimentConfig, hardware: HardwareProfile, published: dict[str, float]
) -> None:
    stored = config.layout.dtype
    if stored not in (None, config.dtype) and config.policy.name not in LAYOUT_POLICIES:
        reason = f"policy {config.policy.name} stores weights at the experiment's dtype (layout.dtype is for " + (
            ", ".join(LAYOUT_POLICIES) + ")"
        )
        raise ConfigError(source, "layout.dtype", reason, stored)
    if config.processor not in hardware.processors:
        known = ", ".join(hardware.processors)
        raise ConfigError(source, "processor", f"not in hardware {hardware.name!r} (has {known})", config.processor)
    peaks = hardware.processors[config.processor].peak_flops
    for key in ("dtype", "kv_dtype"):
        dtype = getattr(config, key)
        if dtype not in peaks:
            reason = f"processor {config.processor!r} has no peak for it (has {', '.join(peaks)})"
            raise ConfigError(source, key, reason, dtype)
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
    _check_placement(source, config, hardware, compute_memory)
    _check_published(source, published, hardware)


def _linked(hardware: HardwareProfile, a: str, b: str) -> bool:
    return a == b or any(set(link.ends) == {a, b} for link in hardware.links.values())


def _check_placement(source: str, config: ExperimentConfig, hardware: HardwareProfile, compute: str) -> None:
    """Every role's memory exists, and weights and the KV cache can reach the processor."""
    for role, memory in config.placement.model_dump().items():
        if memory is None:
            continue
        if memory not in hardware.memories:
            reason = f"not a memory of hardware {hardware.name!r} (has {', '.join(hardware.memories)})"
            raise ConfigError(source, f"placement.{role}", reason, memory)
        if role in ("weights", "kv") and not _linked(hardware, memory, compute):
            reason = f"processor {config.processor!r} computes out of {compute!r} and no link joins them"
            raise ConfigError(source, f"placement.{role}", reason, memory)
    if config.arrival_rate_per_s is not None and config.request_list:
        reason = "listed requests give their own arrival times"
        raise ConfigError(source, "arrival_rate_per_s", reason, config.arrival_rate_per_s)


def _check_published(source: str, published: dict[str, float], hardware: HardwareProfile) -> None:
    for metric in published:
        found = MEMORY_METRIC.match(metric)
        if metric in PUBLISHED_METRICS or (found and found["memory"] in hardware.memories):
            continue
        memories = ", ".join(f"{m}_GB, {m}_used_GB" for m in hardware.memories)
        reason = f"not a summary metric; known: {', '.join(PUBLISHED_METRICS)}, {memories}"
        raise ConfigError(source, f"published.{metric}", reason)
