"""Which activations drive a run (``activations:`` in an experiment). Every result records which.

```yaml
activations: {source: trace, path: traces/smollm2-135m.trace, rule: "threshold:0.9"}
activations: {source: projection, path: traces/smollm2-135m.trace, density: opt-6.7b-table6}
activations: {source: synthetic, path: traces/smollm2-135m.trace, rule: "threshold:0.9", density: 0.033}
```
``path`` is relative to the experiment file's folder, else to the repository root. ``rule``: ``threshold:S``
(per-layer quantile, CATS/TEAL), ``topk:S`` (exactly (1-S)·d_ff per token), ``gate`` (gate < 0 proxy), ``dense``;
S is the sparsity (fraction dropped).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from sim.config.base import StrictModel

RULE_PATTERN = r"^(threshold:(0(\.\d+)?|1(\.0+)?)|topk:(0(\.\d+)?|1(\.0+)?)|gate|dense)$"


class _FromTrace(StrictModel):
    path: str = Field(description="trace file (.trace)")
    calib_tokens: int = Field(2048, ge=1, description="tokens that calibrate per-layer thresholds")
    offset_tokens: int = Field(0, ge=0, description="decode step t reads source token offset_tokens + t")
    loop: bool = Field(
        False,
        description="past the source's last token start again at its first (for runs longer than the trace; "
        "said in every result's activations line); false: a run longer than the source is an error",
    )


class TraceActivations(_FromTrace):
    """A real trace, made into masks by a sparsity rule; the model must have the trace's shapes."""

    source: Literal["trace"]
    rule: str = Field("threshold:0.9", pattern=RULE_PATTERN)


class ProjectedActivations(_FromTrace):
    """A real trace projected onto the experiment's model shape (sim.traces.projection)."""

    source: Literal["projection"]
    density: float | str = Field(
        "opt-6.7b-table6",
        description="per-layer active fraction: activation statistics (a name in traces/statistics/, or a path to "
        "one such file; sim.traces.statistics) or one number for every layer",
    )
    gain_sigma: float | None = Field(
        None,
        ge=0,
        description="gain spread of a source neuron's copies; default: the statistics' fitted value, else 0.25",
    )

    @field_validator("density")
    @classmethod
    def _fraction(cls, value):
        if isinstance(value, float) and not 0 < value < 1:
            raise ValueError("density must be a fraction in (0, 1)")
        return value


class SyntheticActivations(_FromTrace):
    """A Markov-chain generator whose statistics are fitted on a real trace (sim.traces.synthetic)."""

    source: Literal["synthetic"]
    rule: str = Field("threshold:0.9", pattern=RULE_PATTERN)
    density: float | None = Field(None, gt=0, lt=1, description="override the fitted mean density")
    n_tokens: int | None = Field(None, ge=1, description="tokens to generate (default: as many as fitted)")


ActivationsConfig = Annotated[
    TraceActivations | ProjectedActivations | SyntheticActivations, Field(discriminator="source")
]
