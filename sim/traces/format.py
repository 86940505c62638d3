"""Trace file format, version 1: write with :class:`TraceWriter`, read chunk by chunk with :class:`TraceReader`.

A trace is one zip archive (see traces/README.md, section FORMAT):

  manifest.json                     format_version, model shapes, fields, chunks, prompts, capture command
  chunks/000000/ffn_act.npy         one .npy member per chunk and field, each compressed (zip LZMA/deflate)
  chunks/000000/token_id.npy        ...

Field arrays are token-major: ``[n_tokens_in_chunk, *per_token_shape]``. The reader keeps the chunks it
read last in a least-recently-used cache bounded by ``cache_bytes`` (default :data:`CACHE_BYTES`, at least the
one chunk just read), so a run that reads a chunk again (calibration, then the masks) decompresses it once, and
traces of any length still stream; a read inside one chunk returns a read-only view of that cache. Every
problem with a file (missing, not a zip, truncated, bad JSON, wrong version, missing member, shape mismatch) is
a one-line :class:`~sim.errors.TraceError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np

from sim.config.base import validate
from sim.errors import ConfigError, TraceError
from sim.traces.encoding import Encoding, log8
from sim.traces.manifest import Manifest

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_DIMS = ("n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "head_dim")
TOKEN_FIELDS = ("token_id", "position", "task_id", "context_id")
CACHE_BYTES = 256 * 2**20  # a reader's chunk cache: ~20 stored ffn_act chunks of the SmolLM2 trace (11.8 MB each)
COMPRESSION = {"lzma": zipfile.ZIP_LZMA, "deflate": zipfile.ZIP_DEFLATED, "stored": zipfile.ZIP_STORED}

# field -> (per-token dims named after model shapes, decoded dtype, default encoding)
FIELDS: dict[str, tuple[tuple[str, ...], str, Encoding]] = {
    "ffn_act": (("n_layers", "d_ff"), "float32", log8()),  # |silu(gate) * up|
    "gate_neg": (("n_layers", "d_ff"), "bool", Encoding("bits")),  # gate pre-activation < 0
    "mlp_in": (("n_layers", "d_model"), "float32", Encoding("fp16")),  # RMS-normed input of gate/up
    "attn_in": (("n_layers", "d_model"), "float32", Encoding("fp16")),  # RMS-normed input of q/k/v
    "q": (("n_layers", "n_heads", "head_dim"), "float32", Encoding("fp16")),  # after RoPE
    "k": (("n_layers", "n_kv_heads", "head_dim"), "float32", Encoding("fp16")),  # after RoPE
    "experts": (("n_layers", "top_k"), "int16", Encoding("raw")),  # routed experts, first choice first (MoE)
    "expert_guess": (("n_layers", "top_k"), "int16", Encoding("raw")),  # guessed a layer early (-1: no guess)
    "token_id": ((), "int32", Encoding("raw")),
    "position": ((), "int32", Encoding("raw")),  # position inside its context (0-based)
    "task_id": ((), "int16", Encoding("raw")),
    "context_id": ((), "int32", Encoding("raw")),
}


def member_name(chunk: int, field: str, suffix: str = "") -> str:
    return f"chunks/{chunk:06d}/{field}{'.' + suffix if suffix else ''}.npy"


def field_shape(field: str, model: dict) -> list[int]:
    return [int(model[dim]) for dim in FIELDS[field][0]]


class TraceWriter:
    """Write a trace atomically: arrays are appended token-major, cut into chunks, and the archive only
    appears at ``path`` when :meth:`close` succeeds (a crash leaves no half-written trace behind)."""

    def __init__(self, path: str | Path, model: dict, fields: list[str], chunk_tokens: int = 256,
                 compression: str = "lzma", encodings: dict[str, Encoding] | None = None):  # fmt: skip
        unknown = [f for f in fields if f not in FIELDS or f in TOKEN_FIELDS]
        if unknown:
            raise ValueError(f"unknown trace fields {unknown}; known: {', '.join(FIELDS)}")
        self.path, self.model, self.chunk_tokens = Path(path), dict(model), int(chunk_tokens)
        self.fields = [*fields, *TOKEN_FIELDS]
        encodings = encodings or {}
        self.encodings = {f: encodings.get(f, FIELDS[f][2]) for f in self.fields}
        self.compression = compression
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=COMPRESSION[compression])
        self._buffer: dict[str, list[np.ndarray]] = {f: [] for f in self.fields}
        self._buffered = 0
        self._chunks: list[list[int]] = []
        self.n_tokens = 0

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        """Add ``n`` tokens: ``arrays[field]`` is ``[n, *per_token_shape]`` for every field and token field."""
        n = len(arrays["token_id"])
        for f in self.fields:
            a = np.asarray(arrays[f])
            expected = [n, *field_shape(f, self.model)]
            if list(a.shape) != expected:
                raise ValueError(f"field {f}: shape {list(a.shape)} != expected {expected}")
            self._buffer[f].append(a)
        self._buffered += n
        while self._buffered >= self.chunk_tokens:
            self._flush(self.chunk_tokens)

    def _flush(self, n: int) -> None:
        chunk = len(self._chunks)
        for f in self.fields:
            whole = np.concatenate(self._buffer[f])
            for suffix, array in self.encodings[f].encode(whole[:n]).items():
                self._write_member(member_name(chunk, f, suffix), array)
            self._buffer[f] = [whole[n:]]
        self._chunks.append([self.n_tokens, self.n_tokens + n])
        self.n_tokens += n
        self._buffered -= n

    def _write_member(self, name: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
        self._zip.writestr(name, buf.getvalue())

    def close(self, manifest_extra: dict | None = None) -> Path:
        """Flush the last chunk, write manifest.json, and move the archive into place."""
        if self._buffered:
            self._flush(self._buffered)
        self._zip.writestr(MANIFEST, json.dumps(self._manifest(manifest_extra or {}), indent=1))
        self._zip.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._zip.close()
        self._tmp.unlink(missing_ok=True)

    def _manifest(self, extra: dict) -> dict:
        fields = {}
        for f in self.fields:
            enc = self.encodings[f]
            fields[f] = {"dims": list(FIELDS[f][0]), "shape": field_shape(f, self.model), "dtype": FIELDS[f][1],
                         "encoding": enc.to_json(), "max_rel_error": enc.max_rel_error}  # fmt: skip
        base = {"format_version": FORMAT_VERSION, "model": self.model, "n_tokens": self.n_tokens,
                "chunk_tokens": self.chunk_tokens, "compression": self.compression, "chunks": self._chunks,
                "fields": fields}  # fmt: skip
        return {**base, **extra}

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class TraceReader:
    """Read a trace written by :class:`TraceWriter` (or by ``python -m sim trace capture``)."""

    def __init__(self, path: str | Path, cache_bytes: int = CACHE_BYTES, derive: Callable | None = None):
        """``derive``: a store of derived arrays (``sim.points.derived``): each member is decompressed once per
        content and then loaded from there (a trace's LZMA chunks cost ~0.14 s each to decompress)."""
        self.path, self.cache_bytes, self.derive = Path(path), int(cache_bytes), derive
        self._digest: np.ndarray | None = None
        if not self.path.is_file():
            self._fail("no such file (make one with `python -m sim trace capture`, see traces/README.md)")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError) as err:  # a damaged directory
            self._fail(f"not a readable trace archive, truncated or corrupt ({err})")
        self.manifest = self._read_manifest()
        self._check_members()
        self._cache: OrderedDict[tuple[int, str, bool], dict[str, np.ndarray]] = OrderedDict()  # LRU first
        self._cached_bytes = 0

    def _fail(self, what: str) -> NoReturn:
        raise TraceError(f"trace {self.path}: {what}")

    def _read_manifest(self) -> dict:
        try:
            text = self._zip.read(MANIFEST)
        except KeyError:
            self._fail(f"missing {MANIFEST} (not a trace, or written by an interrupted capture)")
        except Exception as err:  # zip, CRC, zlib and lzma errors all mean the same thing here
            self._fail(f"{MANIFEST} is corrupt ({type(err).__name__}: {err})")
        try:
            manifest = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            self._fail(f"{MANIFEST} is not valid JSON ({err})")
        if not isinstance(manifest, dict):
            self._fail(f"{MANIFEST} must hold a JSON object")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            self._fail(f"format_version {version!r} is not supported (this reader reads {FORMAT_VERSION})")
        missing = [k for k in ("model", "n_tokens", "chunks", "fields") if k not in manifest]
        if missing:
            self._fail(f"{MANIFEST} lacks key(s) {', '.join(missing)}")
        try:
            validate(Manifest, manifest, MANIFEST)
        except ConfigError as err:
            self._fail(str(err))
        return manifest

    def _check_members(self) -> None:
        names = set(self._zip.namelist())
        for f in self.fields:
            suffixes = ("", *self._encoding(f).members)
            for chunk in range(len(self.chunks)):
                for name in (member_name(chunk, f, s) for s in suffixes):
                    if name not in names:
                        self._fail(f"missing member {name} (truncated trace?)")
        if self.chunks and self.chunks[-1][1] != self.n_tokens:
            self._fail(f"chunks end at token {self.chunks[-1][1]} but n_tokens is {self.n_tokens}")

    # ---- metadata -----------------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return [tuple(c) for c in self.manifest["chunks"]]

    @property
    def fields(self) -> list[str]:
        return list(self.manifest["fields"])

    @property
    def model(self) -> dict:
        return self.manifest["model"]

    def has(self, field: str) -> bool:
        return field in self.manifest["fields"]

    def encoding(self, field: str) -> Encoding:
        return self._encoding(field)

    # ---- data ---------------------------------------------------------------------------------------
    def _encoding(self, field: str) -> Encoding:
        try:
            return Encoding.from_json(self.manifest["fields"][field]["encoding"])
        except (KeyError, TypeError, ValueError) as err:
            self._fail(f"{MANIFEST}: field {field} has a bad encoding ({err})")

    def _cached(self, key: tuple[int, str, bool], make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The arrays under ``key`` from the LRU cache, else ``make()`` them (made read-only) and evict the least
        recently used entries until the cache holds at most ``cache_bytes`` (or only this entry)."""
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        arrays = make()
        for a in arrays.values():
            a.flags.writeable = False
        self._cache[key] = arrays
        self._cached_bytes += sum(a.nbytes for a in arrays.values())
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            self._cached_bytes -= sum(a.nbytes for a in self._cache.popitem(last=False)[1].values())
        return arrays

    def _stored(self, chunk: int, field: str) -> dict[str, np.ndarray]:
        """{suffix: stored array} of one chunk's members of ``field`` (decompressed, not decoded)."""
        enc, stored = self._encoding(field), {}
        name = member_name(chunk, field)
        try:
            for suffix in ("", *enc.members):
                name = member_name(chunk, field, suffix)
                stored[suffix] = self._member(name)
        except Exception as err:  # zlib/lzma/CRC/npy header errors all mean the same thing here
            self._fail(f"member {name} is corrupt ({type(err).__name__}: {err})")
        return stored

    def _member(self, name: str) -> np.ndarray:
        def read() -> np.ndarray:
            return np.lib.format.read_array(io.BytesIO(self._zip.read(name)), allow_pickle=False)

        if self.derive is None:
            return read()
        if self._digest is None:  # the archive's content, once: the key of everything derived from it
            with open(self.path, "rb") as f:
                self._digest = np.frombuffer(hashlib.file_digest(f, "sha256").digest(), np.uint8)
        return self.derive("trace-member", [self._digest, np.frombuffer(name.encode(), np.uint8)], read)

    def _decoded(self, chunk: int, field: str) -> dict[str, np.ndarray]:
        """{"": decoded values} of one chunk of ``field``, decoded from the (cached) stored arrays."""
        stored = self._cached((chunk, field, False), lambda: self._stored(chunk, field))
        shape = self.manifest["fields"][field]["shape"]
        values = self._encoding(field).decode(stored, shape[-1] if shape else 0)
        start, stop = self.chunks[chunk]
        if list(values.shape) != [stop - start, *shape]:
            name = member_name(chunk, field)
            self._fail(f"member {name} has shape {list(values.shape)}, manifest says {[stop - start, *shape]}")
        return {"": values}

    def _chunk(self, chunk: int, field: str, decoded: bool = True) -> np.ndarray:
        if field not in self.manifest["fields"]:
            self._fail(f"has no field {field!r} (fields: {', '.join(self.fields)})")
        make = (lambda: self._decoded(chunk, field)) if decoded else (lambda: self._stored(chunk, field))
        return self._cached((chunk, field, decoded), make)[""]

    def iter_chunks(self, fields: list[str] | None = None, start: int = 0, stop: int | None = None,
                    decoded: bool = True) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
        """Yield ``{field: array [n, ...], "token_index": int64 [n]}`` chunk by chunk over [start, stop).

        ``decoded=False`` yields the stored main arrays (e.g. log8 codes) without decoding them."""
        fields = fields or self.fields
        stop = self.n_tokens if stop is None else stop
        for i, (c0, c1) in enumerate(self.chunks):
            lo, hi = max(c0, start), min(c1, stop)
            if lo >= hi:
                continue
            out = {f: self._chunk(i, f, decoded)[lo - c0 : hi - c0] for f in fields}
            out["token_index"] = np.arange(lo, hi, dtype=np.int64)
            yield out

    def read(self, field: str, start: int = 0, stop: int | None = None, decoded: bool = True) -> np.ndarray:
        """Decoded ``field`` for tokens [start, stop): ``[stop - start, *per_token_shape]`` (``decoded=False``:
        the stored array, e.g. log8 codes, for fast comparisons)."""
        stop = self.n_tokens if stop is None else stop
        if not 0 <= start <= stop <= self.n_tokens:
            self._fail(f"token range [{start}, {stop}) outside [0, {self.n_tokens})")
        parts = [c[field] for c in self.iter_chunks([field], start, stop, decoded)]
        if not parts:
            return np.zeros(
                [0, *self.manifest["fields"][field]["shape"]], dtype=self.manifest["fields"][field]["dtype"]
            )
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # ---- checks -------------------------------------------------------------------------------------
    def validate_against(self, model: object, gguf_sha256: str | None = None) -> None:
        """Raise one TraceError naming every shape that differs between this trace and ``model``
        (a ModelProfile, a kernel ModelConfig, or anything with n_layers / d_model / d_ff ... attributes)."""
        name = getattr(model, "name", "") or type(model).__name__
        problems = []
        for dim in MODEL_DIMS:
            ours, theirs = self.model.get(dim), getattr(model, dim, None)
            if ours is not None and theirs is not None and int(ours) != int(theirs):
                problems.append(f"{dim} {ours} != model {name} {dim} {theirs}")
        sha = self.model.get("gguf_sha256")
        if gguf_sha256 and sha and sha != gguf_sha256:
            problems.append(f"gguf_sha256 {sha[:12]}… != model file {gguf_sha256[:12]}…")
        if problems:
            self._fail("; ".join(problems))

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
