"""Strict pydantic base, unit-carrying field types, YAML loading and dotted-path overrides."""

from __future__ import annotations

import copy
import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from sim import units
from sim.errors import ConfigError, UnitError


class StrictModel(BaseModel):
    """Frozen config section; unknown keys are errors (pydantic's default would ignore them), values keep their
    YAML type (``true`` is not the integer 1, ``"3"`` is not 3) and every float is finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def _unit_field(kind: units.Kind, low: float, high: float, low_open: bool = False):
    """A quantity of ``kind`` parsed from its unit string and checked against what is physically possible."""

    def _parse(value: Any) -> float:
        try:
            si = units.parse(value, kind)
        except UnitError as err:
            raise ValueError(str(err)) from None
        if si < low or (low_open and si == low):
            raise ValueError(f"must be {'>' if low_open else '>='} {units.format_quantity(low, kind)}")
        if si > high:
            raise ValueError(f"must be at most {units.format_quantity(high, kind)} for a {kind} (not physical)")
        return si

    return BeforeValidator(_parse)


# Field types: YAML unit strings in, SI floats out, range-checked where they are parsed.
Bytes = Annotated[float, _unit_field("bytes", 0.0, 1e16)]  # up to 10 PB
BandwidthBps = Annotated[float, _unit_field("bandwidth", 0.0, 1e15, low_open=True)]  # a rate of 0 divides by 0
Seconds = Annotated[float, _unit_field("time", 0.0, 3600.0)]  # latencies and overheads: under an hour
Flops = Annotated[float, _unit_field("flops", 0.0, 1e19, low_open=True)]

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict) or key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(self.name, f"line {line}", "duplicate or unhashable mapping key", key)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_YAML_BYTES = 4_000_000  # an experiment or profile is a few kB; anything this large is the wrong file


def parse_yaml(text: str, source: str | Path) -> Any:
    """YAML text -> Python data; a syntax error, a duplicate key or absurd nesting is a one-line ConfigError."""
    loader = _Loader(text)
    loader.name = str(source)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(source, where, f"invalid YAML: {getattr(err, 'problem', None) or err}") from None
    except RecursionError:
        raise ConfigError(source, "", "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """A text file's content as UTF-8; missing, unreadable, binary or not UTF-8 is a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(path, "", "no such file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(path, "", f"cannot read it ({err.strerror})") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(path, "", f"is {len(data)} bytes: not a config file (limit {MAX_YAML_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = data[err.start : err.start + 1].hex()
        raise ConfigError(path, "", f"is not UTF-8 text (byte 0x{byte} at offset {err.start})") from None
    if "\x00" in text:
        raise ConfigError(path, "", "is not a text file (it holds NUL bytes)")
    return text.removeprefix("\ufeff")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a UTF-8 file; every problem is a one-line ConfigError naming the file."""
    path = Path(path)
    data = parse_yaml(read_text(path), path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "", "top level must be a mapping", type(data).__name__)
    return data


def validate(cls: type[M], data: dict[str, Any], source: str | Path, prefix: str = "") -> M:
    """Build ``cls`` from ``data``; the first validation problem becomes a one-line ConfigError.

    The key is the dotted path as the user writes it (a discriminated union's tag is not part of it); an unknown
    key lists the valid keys at its place and suggests the nearest."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        # in a union: the member that got furthest (a wrong type is the least telling failure)
        first = max(err.errors(), key=lambda e: (len(e["loc"]), not e["type"].endswith("_type")))
        path, model = _walk(cls, first["loc"])
        key = ".".join(str(p) for p in (prefix, *path) if p != "")
        reason = _reason(first)
        if first["type"] == "extra_forbidden" and model is not None:
            reason = _unknown_key(str(path[-1]), sorted(model.model_fields))
        value = ... if first["type"] == "missing" else first.get("input", ...)
        raise ConfigError(source, key, reason, value) from None


def _unknown_key(key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown key; {hint}valid keys: {', '.join(valid)}"


def _walk(cls: type[BaseModel], loc: tuple) -> tuple[list, type[BaseModel] | None]:
    """pydantic's error location -> (the path without union tags, the model holding its last element)."""
    path: list = []
    node: Any = cls
    parent: type[BaseModel] | None = None
    for part in loc:
        node = _strip(node)
        options = _models(node)
        if len(options) > 1:  # a discriminated union: pydantic puts the chosen tag in the location
            chosen = [m for m in options if _tags(m) and part in _tags(m)]
            if chosen:
                node = chosen[0]
                continue
        member = _union_member(node, part)
        if member is not ...:  # a plain union (``int | Uniform``): pydantic names the member it tried
            node = member
            continue
        if isinstance(node, type) and issubclass(node, BaseModel):
            parent = node
            field = node.model_fields.get(str(part))
            node = field.annotation if field is not None else None
        elif typing.get_origin(node) in (dict, list, tuple):
            node = typing.get_args(node)[-1] if typing.get_args(node) else None
            parent = None
        else:
            node, parent = None, None
        path.append(part)
    return path, parent


def _strip(node: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X."""
    while typing.get_origin(node) is Annotated:
        node = typing.get_args(node)[0]
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(node) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return node


def _union_member(node: Any, part: Any) -> Any:
    """The member of a plain union that pydantic's location part ``part`` names (``int``, ``constrained-int``,
    ``Uniform``, ``list[RequestConfig]``), or ``...`` if ``node`` is not a union or ``part`` names no member."""
    if typing.get_origin(node) not in (typing.Union, types.UnionType) or not isinstance(part, str):
        return ...
    for member in typing.get_args(node):
        bare = _strip(member)
        origin = typing.get_origin(bare)
        names = {getattr(bare, "__name__", ""), f"constrained-{getattr(bare, '__name__', '')}"}
        if origin is not None:
            names.add(f"{origin.__name__}[{', '.join(getattr(a, '__name__', str(a)) for a in typing.get_args(bare))}]")
        if part in names or any(part.endswith((f" {n}]", f"[{n}]")) for n in names if n):  # function-after[.., M]
            return bare
    return ...


def _models(node: Any) -> list[type[BaseModel]]:
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        return [
            a for a in (_strip(x) for x in typing.get_args(node)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
    return []


def _tags(model: type[BaseModel]) -> set:
    """Literal values of a model's discriminator-like fields (``name``, ``source``, ``kind``)."""
    tags: set = set()
    for name in ("name", "source", "kind"):
        field = model.model_fields.get(name)
        if field is not None and typing.get_origin(field.annotation) is typing.Literal:
            tags |= set(typing.get_args(field.annotation))
    return tags


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
