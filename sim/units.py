"""The one unit parser. YAML holds strings such as ``"6.1 GB/s"``, ``"32 KiB"``, ``"15 us"``,
``"82.6 TFLOPS"``; everything inside the simulator is an SI float.

Decimal prefixes are powers of 1000 (GB = 1e9), binary prefixes powers of 1024 (GiB = 2**30).
Bandwidth is always decimal-or-binary as written: "6 GiB/s" = 6 * 2**30 B/s.
A bare number is accepted only for dimensionless kinds and for zero: "6.1" for a bandwidth would be
ambiguous, so it is an error rather than a silently wrong result.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from sim.errors import UnitError

Kind = Literal["bytes", "bandwidth", "time", "flops", "bits"]

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0}

# unit suffix (after the prefix) for each kind
_BASE = {
    "bytes": ("B",),
    "bandwidth": ("B/s", "Bps"),
    "flops": ("FLOPS", "FLOP/s", "OPS", "OP/s"),
    "bits": ("bit", "bits", "b"),
}

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s\d].*?)?\s*$")


def _prefix_scale(prefix: str) -> float | None:
    if prefix in _BINARY:
        return _BINARY[prefix]
    return _DECIMAL.get(prefix)


def _unit_scale(unit: str, kind: Kind) -> float | None:
    if kind == "time":
        return _TIME.get(unit)
    for base in _BASE[kind]:
        if unit.endswith(base):
            scale = _prefix_scale(unit[: -len(base)])
            if scale is not None:
                return scale
    return None


def parse(value: str | int | float, kind: Kind) -> float:
    """Parse ``value`` as a quantity of ``kind`` and return it in SI base units.

    >>> parse("6.1 GB/s", "bandwidth")
    6100000000.0
    >>> parse("32 KiB", "bytes")
    32768.0
    """
    if isinstance(value, bool):
        raise UnitError(f"expected a {kind} quantity such as {_example(kind)!r}, got {value!r}")
    if isinstance(value, int | float):
        if value == 0 and math.isfinite(value):
            return 0.0
        raise UnitError(f"{value!r} has no unit; write it as e.g. {_example(kind)!r}")
    match = _NUMBER.match(str(value))
    if not match or match.group(2) is None:
        raise UnitError(f"{value!r} is not a {kind} quantity such as {_example(kind)!r}")
    number, unit = float(match.group(1)), match.group(2).strip()
    if not math.isfinite(number):
        raise UnitError(f"{value!r}: the number is too large to be finite")
    scale = _unit_scale(unit, kind)
    if scale is None:
        raise UnitError(f"{value!r}: unknown {kind} unit {unit!r}; e.g. {_example(kind)!r}")
    return number * scale


def _example(kind: Kind) -> str:
    return {
        "bytes": "32 KiB",
        "bandwidth": "6.1 GB/s",
        "time": "15 us",
        "flops": "82.6 TFLOPS",
        "bits": "4.5 bit",
    }[kind]


def format_bytes(n_bytes: float) -> str:
    """Human-readable decimal size for messages and tables (``13.4 GB``)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def format_quantity(si: float, kind: Kind) -> str:
    """An SI value as a short unit string of ``kind`` for messages (``"1e+15 B/s"``, ``"3600 s"``)."""
    unit = {"bytes": "B", "bandwidth": "B/s", "time": "s", "flops": "FLOPS", "bits": "bit"}[kind]
    return f"{si:g} {unit}"
