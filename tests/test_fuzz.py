"""Fuzz: generated malformed experiments, hardware profiles, model profiles and traces, run through ``validate`` and
``run`` as a user would (the CLI's ``main``).

Each example changes one thing in a valid set-up (a tiny LLM-in-a-Flash run on a small real trace): one value
anywhere in the experiment, the hardware profile, the model profile or the trace's manifest replaced, an unknown
key added, or the trace file cut short or with a byte flipped. The oracle fails the test on

- **a traceback**: any exception out of ``main``; an exit code other than 0 or 2;
- **a messy error**: exit 2 must print exactly one line ``error: ...`` naming the file it is about, and leave no
  results folder behind;
- **a hang**: a call that takes longer than ``HANG_S``;
- **silent acceptance**: a change that is certainly invalid (a negative, NaN or infinite number; text or a list
  where a number goes; an unknown name; an unknown key in a closed mapping; a truncated trace) must be refused,
  and an accepted run must report a finite, positive latency.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.traces.format import TraceWriter

FIXTURES = Path(__file__).parent / "fixtures"
HANG_S = 30
MODEL = {
    "name": "fuzz-tiny",
    "source": "test fixture",
    "n_layers": 3,
    "d_model": 32,
    "d_ff": 96,
    "n_heads": 4,
    "n_kv_heads": 2,
    "head_dim": 8,
    "vocab_size": 64,
    "ffn_kind": "swiglu",
    "tied_embeddings": True,
}
EXPERIMENT = {
    "name": "fuzz",
    "hardware": "hw.yaml",
    "model": "model.yaml",
    "dtype": "fp16",
    "processor": "cpu",
    "dram_budget": "50 GB",
    "context_tokens": 8,
    "decode_tokens": 3,
    "batch": 1,
    "seed": 0,
    "timeline_tokens": 1,
    "activations": {"source": "trace", "path": "t.trace", "rule": "threshold:0.5"},
    "layout": {"name": "bundled"},
    "policy": {"name": "llm_in_flash", "predictor": "statistical", "window_k": 2, "capacity_tokens": 4},
}
FREE_TEXT = {"name", "description", "source"}  # any string is fine here
OPEN_MAPPINGS = {("memories",), ("links",), ("processors",)}  # the user names these entries


def _write_trace(path: Path) -> None:
    rng = np.random.default_rng(0)
    T, L, F, d = 40, MODEL["n_layers"], MODEL["d_ff"], MODEL["d_model"]
    dims = {k: MODEL[k] for k in ("n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "head_dim")}
    with TraceWriter(path, {"name": "fuzz-tiny", **dims}, ["ffn_act", "gate_neg", "mlp_in"], chunk_tokens=16) as w:
        w.append(
            {
                "ffn_act": np.exp(rng.normal(-2.0, 2.0, (T, L, F))).astype(np.float32),
                "gate_neg": rng.random((T, L, F)) < 0.6,
                "mlp_in": rng.standard_normal((T, L, d)).astype(np.float32),
                "token_id": rng.integers(0, 64, T).astype(np.int32),
                "position": np.arange(T, dtype=np.int32),
                "task_id": np.zeros(T, dtype=np.int16),
                "context_id": np.zeros(T, dtype=np.int32),
            }
        )
        w.close({"command": "tests/test_fuzz.py"})


@pytest.fixture(scope="module")
def valid_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "t.trace"
    _write_trace(path)
    return path


def _manifest(trace: Path) -> dict:
    with zipfile.ZipFile(trace) as z:
        return json.loads(z.read("manifest.json"))


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list) and node:
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path, node


def _mappings(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from _mappings(value, (*path, key))


def _set(node: Any, path: tuple, value: Any) -> Any:
    """A copy of ``node`` with ``path`` set to ``value``."""
    if not path:
        return value
    copy = list(node) if isinstance(node, list) else dict(node)
    copy[path[0]] = _set(node[path[0]], path[1:], value)
    return copy


def _is_number(value: Any) -> bool:
    """A number, or a quantity string such as '100 GB/s' / '4 KiB' / '0 s'."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and value[:1].isdigit()


CERTAINLY_BAD_NUMBER = st.sampled_from([-1, -2.5, float("nan"), float("inf"), "-3 GB", "banana", [1, 2], {"a": 1}])
CERTAINLY_BAD_NAME = st.sampled_from(["zz-no-such-thing", 17, [1], {"a": 1}])
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["0", "0 s", "1e400 GB", "1 kB", "5 MB/s", "1e-30 s", "3600 s", "7 GiB", ""]),
    st.lists(st.integers(-3, 3), max_size=3),
)


@st.composite
def changes(draw, documents: dict[str, Any]):
    """(document, changed document, certainly invalid?) for one random change of one document."""
    name = draw(st.sampled_from(sorted(documents)))
    doc = documents[name]
    kind = draw(st.sampled_from(["value", "value", "unknown-key"]))
    if kind == "unknown-key":
        where = draw(st.sampled_from([p for p in _mappings(doc) if p not in OPEN_MAPPINGS]))
        node = doc
        for part in where:
            node = node[part]
        changed = _set(doc, where, {**node, "zz_unknown_key": draw(ANY_VALUE)})
        return name, changed, name != "manifest"  # the manifest is read, not a closed schema
    path, old = draw(st.sampled_from(list(_leaves(doc))))
    key = next((p for p in reversed(path) if isinstance(p, str)), "")
    if draw(st.booleans()):
        value, bad = draw(ANY_VALUE), False
    elif _is_number(old):
        value, bad = draw(CERTAINLY_BAD_NUMBER), name != "manifest" or path[0] == "model"
    elif isinstance(old, str) and key not in FREE_TEXT:
        value, bad = draw(CERTAINLY_BAD_NAME), name != "manifest"
    else:
        value, bad = draw(ANY_VALUE), False
    return name, _set(doc, path, value), bad


class _HangError(Exception):
    pass


def _on_alarm(signum, frame):
    raise _HangError(f"no answer within {HANG_S} s")


def _call(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(HANG_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


def _check(folder: Path, must_fail: bool, what: str) -> str:
    """Validate then run; returns what happened (for hypothesis' statistics)."""
    for verb in ("validate", "run"):
        out = folder / "out"
        extra = ["--out", str(out), "--quiet", "--no-plots"] if verb == "run" else []
        code, err = _call(verb, str(folder / "e.yaml"), *extra)
        assert code in (0, 2), f"{what}: {verb} exit {code}: {err!r}"
        if code == 2:
            assert err.startswith("error: ") and err.count("\n") == 1, f"{what}: {verb}: {err!r}"
            assert not out.exists(), f"{what}: a failed run left {out}"
        elif must_fail:
            pytest.fail(f"{what}: {verb} accepted a certainly invalid input")
        elif verb == "run":
            summary = json.loads((out / "summary.json").read_text())
            for row in summary:
                assert math.isfinite(row["total_ms"]) and row["total_ms"] > 0, f"{what}: total_ms {row['total_ms']}"
        if code == 2:
            return f"{verb} refused"  # validate refused: run refuses too (tests/test_bad_inputs.py checks they agree)
    return "ran"


def _setup(folder: Path, trace: Path, documents: dict[str, Any]) -> None:
    (folder / "e.yaml").write_text(yaml.safe_dump(documents["experiment"]))
    (folder / "hw.yaml").write_text(yaml.safe_dump(documents["hardware"]))
    (folder / "model.yaml").write_text(yaml.safe_dump(documents["model"]))
    if documents["manifest"] is None:
        shutil.copy(trace, folder / "t.trace")
        return
    with zipfile.ZipFile(trace) as zin, zipfile.ZipFile(folder / "t.trace", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "manifest.json":
                data = json.dumps(documents["manifest"], allow_nan=True).encode()
            zout.writestr(item, data)


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))  # CI: 60, fixed seed; a longer hunt: FUZZ_EXAMPLES=2000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _documents(trace: Path) -> dict[str, Any]:
    return {
        "experiment": EXPERIMENT,
        "hardware": yaml.safe_load((FIXTURES / "hw-simple.yaml").read_text()),
        "model": MODEL,
        "manifest": _manifest(trace),
    }


def test_the_unchanged_set_up_runs(valid_trace):
    with tempfile.TemporaryDirectory() as tmp:
        _setup(Path(tmp), valid_trace, {**_documents(valid_trace), "manifest": None})
        _check(Path(tmp), must_fail=False, what="unchanged")


@FUZZ
@given(data=st.data())
def test_one_changed_value_or_key(valid_trace, data):
    documents = _documents(valid_trace)
    name, changed, bad = data.draw(changes(documents))
    with tempfile.TemporaryDirectory() as tmp:
        _setup(Path(tmp), valid_trace, {**documents, name: changed})
        event(_check(Path(tmp), must_fail=bad, what=f"{name}: {changed!r}"[:400]))


@settings(max_examples=max(25, EXAMPLES // 3), deadline=None, derandomize="FUZZ_EXAMPLES" not in os.environ)
@given(cut=st.floats(0.0, 0.999), flip=st.one_of(st.none(), st.integers(0, 10**9)))
def test_damaged_trace_files(valid_trace, cut, flip):
    raw = bytearray(valid_trace.read_bytes())
    if flip is None:
        raw = raw[: int(cut * len(raw))]  # cut short: certainly invalid
    else:
        raw[flip % len(raw)] ^= 0xFF
    documents = {**_documents(valid_trace), "manifest": None}
    with tempfile.TemporaryDirectory() as tmp:
        _setup(Path(tmp), valid_trace, documents)
        (Path(tmp) / "t.trace").write_bytes(bytes(raw))
        event(_check(Path(tmp), must_fail=flip is None, what=f"trace cut at {cut:.3f}, flip {flip}"))
