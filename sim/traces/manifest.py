"""The schema of a trace's ``manifest.json`` (format version 1), checked when a trace is opened.

The keys the reader relies on are typed and range-checked here, so a damaged or hand-edited manifest is one line
naming the trace and the key, not an exception deep in a decoder: the model's shapes, the token count, the chunk
boundaries (contiguous from token 0 to ``n_tokens``), and per field its shape (what the model's shapes imply),
dtype and encoding (with that encoding's own parameters). Other keys (prompts, corpus provenance, the capture
command) are kept as written; ``tasks`` and ``contexts``, which sources read, are typed too.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from sim.config.base import StrictModel

MAX_DIM = 1 << 20  # no model dimension is a million or more (sim/config/model.py bounds d_ff the same way)
MAX_TOKENS = 1 << 31
Dim = Annotated[int, Field(ge=1, le=MAX_DIM)]


class _Open(StrictModel):
    """Known keys typed, other keys kept (the manifest carries provenance the reader does not interpret)."""

    model_config = ConfigDict(extra="allow")


class ModelShape(_Open):
    name: str = ""
    n_layers: Dim
    d_model: Dim
    d_ff: Dim
    n_heads: Dim
    n_kv_heads: Dim
    head_dim: Dim


class Log8(StrictModel):
    kind: Literal["log8"]
    lo_log2: float = Field(ge=-126, le=0)
    steps: int = Field(ge=1, le=254)
    keep_top: float = Field(1.0, gt=0, le=1)


class Int8c(StrictModel):
    kind: Literal["int8c"]
    levels: int = Field(127, ge=1, le=127)


class Plain(StrictModel):
    kind: Literal["fp16", "bits", "raw"]


Encoding = Annotated[Log8 | Int8c | Plain, Field(discriminator="kind")]


class FieldSpec(StrictModel):
    dims: list[str]
    shape: list[Dim]
    dtype: Literal["float32", "bool", "int32", "int16"]
    encoding: Encoding
    max_rel_error: float = Field(ge=0)


class Task(_Open):
    id: int = Field(ge=0)
    name: str


class Context(_Open):
    id: int = Field(ge=0)
    task_id: int = Field(ge=0)
    n_tokens: int = Field(ge=0, le=MAX_TOKENS)


class Manifest(_Open):
    format_version: Literal[1]
    model: ModelShape
    n_tokens: int = Field(ge=0, le=MAX_TOKENS)
    chunk_tokens: int = Field(ge=1, le=MAX_TOKENS)
    compression: Literal["lzma", "deflate", "stored"]
    chunks: list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]]  # [start, stop)
    fields: dict[str, FieldSpec]
    tasks: list[Task] = []
    contexts: list[Context] = []

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        from sim.traces.format import FIELDS, TOKEN_FIELDS, field_shape  # the field table lives with the format

        edge = 0
        for i, (start, stop) in enumerate(self.chunks):
            if start != edge or stop <= start:
                raise ValueError(f"chunks[{i}] is {[start, stop]}; chunks must run contiguously from token 0")
            edge = stop
        if edge != self.n_tokens:
            raise ValueError(f"chunks end at token {edge} but n_tokens is {self.n_tokens}")
        model = self.model.model_dump()
        for name, spec in self.fields.items():
            if name not in FIELDS:
                raise ValueError(f"fields.{name}: unknown field; known: {', '.join(FIELDS)}")
            dims, dtype, _ = FIELDS[name]
            expected = field_shape(name, model)
            if spec.dims != list(dims) or spec.shape != expected or spec.dtype != dtype:
                got = f"dims {spec.dims}, shape {spec.shape}, dtype {spec.dtype}"
                raise ValueError(f"fields.{name}: {got}; the model's shapes give {list(dims)}, {expected}, {dtype}")
        missing = [f for f in TOKEN_FIELDS if f not in self.fields]
        if missing:
            raise ValueError(f"fields: lacks the token field(s) {', '.join(missing)}")
        return self
