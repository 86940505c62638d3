"""The ``search:`` block of an experiment file (what :mod:`sim.search` does with it is described there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from sim.config.base import StrictModel, load_yaml, set_path, validate


class SearchConfig(StrictModel):
    method: Literal["halving"]
    objective: str = Field("tokens_per_s", description="a numeric column of summary.csv")
    goal: Literal["max", "min"] = "max"
    min_decode_tokens: int = Field(8, ge=1, description="tokens of the first rung")
    eta: int = Field(3, ge=2, le=100, description="keep 1/eta of the cases per rung; eta x the tokens")
    per: str | None = Field(None, description="a swept (or zipped) path: halve within each of its values")


def load_search(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig | None:
    """The experiment file's ``search:`` block (after ``--set`` overrides), or None."""
    data = load_yaml(Path(path))
    for dotted, value in (overrides or {}).items():
        data = set_path(data, dotted, value)
    raw = data.get("search") if isinstance(data, dict) else None
    return None if raw is None else validate(SearchConfig, raw, Path(path), prefix="search")
