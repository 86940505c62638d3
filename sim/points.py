"""Finished sweep points on disk, keyed by what determines them, so a rerun skips them and a killed sweep resumes.

A point's key is the sha256 of: its resolved config, the parsed hardware and model profiles, the content hash of
every file the config names (traces, predictors), the simulator's own source (every ``sim/**/*.py``: a code change
is a new key), and whether a timeline is recorded. Its result (steps, requests, summary, spans) is pickled into
``$SIM_POINTS_DIR`` (default ``~/.cache/sparse-llm-sim/points``) through a temporary file and ``os.replace``, so
a kill leaves either the whole point or nothing, and processes running points at once never see half of one.
Only points that ran are stored (a point that does not fit is cheap to find again). ``--fresh`` recomputes.
:func:`derived` stores arrays a point derives from its inputs the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SOURCE_ROOT = Path(__file__).resolve().parent


def points_dir() -> Path:
    env = os.environ.get("SIM_POINTS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sparse-llm-sim" / "points"


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(SOURCE_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(node: Any, base: Path | None) -> dict[str, str]:
    """{path: sha256} of every string in the config that names an existing file (relative to the experiment)."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for value in node.values():
            out |= _files(value, base)
    elif isinstance(node, list):
        for value in node:
            out |= _files(value, base)
    elif isinstance(node, str) and ("/" in node or node.endswith((".trace", ".npz", ".yaml"))):
        for candidate in ([base / node] if base else []) + [Path(node), SOURCE_ROOT.parent / node]:
            if candidate.is_file():
                stat = candidate.stat()
                out[node] = _file_hash(str(candidate.resolve()), stat.st_mtime_ns, stat.st_size)
                break
    return out


def point_key(case, timeline: bool) -> str:
    config = case.config.model_dump(mode="json")
    record = {
        "case": case.name,
        "sweep": case.sweep or {},
        "config": config,
        "hardware": case.hardware.model_dump(mode="json"),
        "model": case.model.model_dump(mode="json"),
        "statistics": case.statistics.model_dump(mode="json") if getattr(case, "statistics", None) else None,
        "files": _files(config, case.path.parent if case.path else None),
        "code": code_hash(),
        "timeline": timeline,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def derived(kind: str, inputs: list[np.ndarray], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """An array a run derives from its inputs (e.g. co-activation friends from a trace's masks), stored under the
    sha256 of the inputs' bytes and the simulator's code, so a validate followed by a run, or the next sweep
    point, computes it once. Written atomically like the points."""
    digest = hashlib.sha256(kind.encode() + code_hash().encode())
    for array in inputs:
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    path = points_dir() / "derived" / f"{kind}-{digest.hexdigest()}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # unreadable: compute it again
            pass
    value = compute()
    _write_atomically(path, lambda f: np.save(f, value, allow_pickle=False))
    return value


def derived_arrays(kind: str, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Named arrays a run derives from inputs that ``key`` identifies (a source's fingerprint and the knobs that
    shape the result), stored once under the sha256 of the key and the simulator's code, written atomically."""
    digest = hashlib.sha256(f"{kind}\0{code_hash()}\0{key}".encode()).hexdigest()
    path = points_dir() / "derived" / f"{kind}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, KeyError, EOFError):  # unreadable: compute it again
            pass
    value = compute()
    _write_atomically(path, lambda f: np.savez(f, **value))
    return value


def _write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it into place (readers in other
    processes see the old file or the whole new one, never a part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(key: str):
    path = points_dir() / f"{key}.pkl"
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):  # unreadable: recompute it
        return None


def store(key: str, result) -> None:
    result = dataclasses.replace(result, steps=result.steps.embedded())  # its rows, not paths into a spool
    _write_atomically(points_dir() / f"{key}.pkl", lambda f: pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL))
