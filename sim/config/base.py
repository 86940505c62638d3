"""Strict pydantic base, unit-carrying field types, YAML loading and dotted-path overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from sim import units
from sim.errors import ConfigError, UnitError


class StrictModel(BaseModel):
    """Frozen config section; unknown keys are errors (pydantic's default would ignore them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _unit_field(kind: units.Kind):
    def _parse(value: Any) -> float:
        try:
            return units.parse(value, kind)
        except UnitError as err:
            raise ValueError(str(err)) from None

    return BeforeValidator(_parse)


# Field types: YAML unit strings in, SI floats out.
Bytes = Annotated[float, _unit_field("bytes")]
BandwidthBps = Annotated[float, _unit_field("bandwidth")]
Seconds = Annotated[float, _unit_field("time")]
Flops = Annotated[float, _unit_field("flops")]

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a syntax error is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ConfigError(path, where, f"invalid YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "", "top level must be a mapping", type(data).__name__)
    return data


def validate(cls: type[M], data: dict[str, Any], source: str | Path, prefix: str = "") -> M:
    """Build ``cls`` from ``data``; the first validation problem becomes a one-line ConfigError."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
        reason = _reason(first)
        value = ... if first["type"] == "missing" else first.get("input", ...)
        raise ConfigError(source, key, reason, value) from None


def _reason(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = error["msg"]
    return msg.removeprefix("Value error, ")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in; nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_path(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c`` set to ``value`` (the seam sweeps and cases use)."""
    out = copy.deepcopy(data)
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError("<override>", dotted, f"{part!r} is not a mapping", child)
        node = child
    node[leaf] = copy.deepcopy(value)
    return out
