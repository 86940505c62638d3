"""A case's step rows (what ``tokens.parquet`` holds), streamed so a run's memory does not grow with its tokens.

At most ``flush_rows`` rows are held as dicts; each full batch becomes a zstd-compressed parquet *part*, written
into a spool folder (in a run: a hidden folder inside the results folder being written) or, with no spool (a
Dask worker on another machine), kept as bytes. Reading goes part by part (:meth:`StepLog.frames`), so neither the
summary nor the results file needs every row at once. A log pickles with its parts' paths (a local worker
returns it to its parent); :meth:`embedded` carries the bytes instead (a stored sweep point must outlive the
spool). ``tokens`` of a :class:`~sim.engine.simulate.CaseResult` is :meth:`frame`.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FLUSH_ROWS = 4096
COMPRESSION = "zstd"


class StepLog:
    """Rows appended one step at a time; parts on disk (``spool``) or in memory."""

    def __init__(self, spool: Path | None = None, flush_rows: int | None = None) -> None:
        self.spool, self.flush_rows = spool, flush_rows or FLUSH_ROWS
        self._rows: list[dict[str, Any]] = []
        self._parts: list[Path | bytes] = []
        self.n_rows = 0

    def __len__(self) -> int:
        return self.n_rows

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self.n_rows += 1
        if len(self._rows) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Turn the held rows into a part (a run calls this once at its end)."""
        if not self._rows:
            return
        table = pa.Table.from_pandas(pd.DataFrame(self._rows), preserve_index=False)
        self._rows = []
        if self.spool is None:
            sink = io.BytesIO()
            pq.write_table(table, sink, compression=COMPRESSION)
            self._parts.append(sink.getvalue())
            return
        self.spool.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.spool, prefix="steps-", suffix=".parquet")
        os.close(fd)
        pq.write_table(table, name, compression=COMPRESSION)
        self._parts.append(Path(name))

    def tables(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """Each part as an Arrow table (``columns``: only those the part has), then the rows not yet flushed."""
        for part in self._parts:
            names = pq.read_schema(_source(part)).names
            yield pq.read_table(_source(part), columns=[c for c in columns if c in names] if columns else None)
        if self._rows:
            table = pa.Table.from_pandas(pd.DataFrame(self._rows), preserve_index=False)
            yield table.select([c for c in columns if c in table.column_names]) if columns else table

    def frames(self, columns: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        for table in self.tables(columns):
            yield table.to_pandas()

    def frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Every row at once (tests, short runs); a long run's results go through :meth:`tables`."""
        frames = list(self.frames(columns))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def embedded(self) -> StepLog:
        """A copy whose parts are all bytes: it outlives the spool (a stored sweep point)."""
        self.flush()
        copy = StepLog(None, self.flush_rows)
        copy._parts = [p if isinstance(p, bytes) else p.read_bytes() for p in self._parts]
        copy.n_rows = self.n_rows
        return copy


def write_parquet(path: Path, logs: Sequence[tuple[str, StepLog]]) -> None:
    """One parquet file of every log's rows, a ``case`` column naming each, written part by part. Parts may differ
    in columns (a policy's statistics) and types (an int column that is float in another part): the file's schema
    is their union, promoted, and a column a part lacks is null there."""
    for _, log in logs:
        log.flush()
    schemas = [pq.read_schema(_source(part)) for _, log in logs for part in log._parts]
    schema = pa.unify_schemas([*schemas, pa.schema([("case", pa.string())])], promote_options="permissive")
    with pq.ParquetWriter(path, schema, compression=COMPRESSION) as writer:
        for name, log in logs:
            for table in log.tables():
                writer.write_table(pa.table([_column(table, f, name) for f in schema], schema=schema))


def _source(part: Path | bytes):
    return pa.BufferReader(part) if isinstance(part, bytes) else part


def _column(table: pa.Table, field: pa.Field, case: str) -> pa.ChunkedArray | pa.Array:
    if field.name == "case":
        return pa.array([case] * table.num_rows, pa.string())
    if field.name not in table.column_names:
        return pa.nulls(table.num_rows, field.type)
    return table[field.name].cast(field.type)
