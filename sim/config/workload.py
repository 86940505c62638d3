"""The workload of an experiment: how many requests, their prompt and output lengths, when they arrive, how many
run together, and where the model's data lives (sections of :class:`~sim.config.experiment.ExperimentConfig`).

```yaml
batch: 8                         # requests decoded together (continuous batching); default 1
requests: 32                     # how many requests (default: batch), or a list, one mapping per request:
                                 #   [{context_tokens: 900, decode_tokens: 64, arrival: "0.5 s"}, ...]
context_tokens: 128              # prompt length per request: a number, or {low: 64, high: 512} (uniform)
decode_tokens: 32                # tokens generated per request: the same forms
arrival_rate_per_s: 2.0          # Poisson arrivals; default: every request arrives at t = 0
prefill_chunk_tokens: 512        # prompt tokens per prefill step; 0: prompts are in the KV cache on arrival
placement: {weights: vram, window: dram, kv: dram}   # memory per role (default: see sim/engine/placement.py)
```
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from sim.config.base import Seconds, StrictModel

MAX_TOKENS = 10_000_000  # prompt or output tokens of one request: far beyond any model's context


class Uniform(StrictModel):
    """An integer drawn uniformly from [low, high] per request."""

    low: int = Field(ge=0, le=MAX_TOKENS)
    high: int = Field(ge=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Length = Tokens | Uniform
OutputLength = Annotated[int, Field(ge=1, le=MAX_TOKENS)] | Uniform  # a request emits at least one token


def lowest(length: Length) -> int:
    return length.low if isinstance(length, Uniform) else length


def highest(length: Length) -> int:
    return length.high if isinstance(length, Uniform) else length


class RequestConfig(StrictModel):
    """One request of an explicit list; unset lengths take the experiment's ``context_tokens``/``decode_tokens``."""

    context_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    decode_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    arrival: Seconds = Field(0.0, description="arrival time, e.g. '0.5 s'")


class PlacementConfig(StrictModel):
    """Which memory of the hardware profile holds each role's data (unset: the default of sim/engine/placement)."""

    weights: str | None = Field(None, description="resident weights; default: the processor's memory")
    window: str | None = Field(None, description="caches of streamed weights; default: where flash reads land")
    kv: str | None = Field(None, description="the KV cache; default: the processor's memory")
