"""Capture a trace: run corpus prompts through the numpy model (one batched prefill per prompt) and record,
per token and layer, the fields asked for (see :data:`sim.traces.format.FIELDS`).

``gate_neg`` (sign of the gate pre-activation, for the gate<0 proxy) is not something the forward pass
reports, so it is recomputed here from the observed ``mlp_in``: ``mlp_in @ gate.T < 0`` (same float32 math).
"""

from __future__ import annotations

import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sim.lab import corpus
from sim.traces.encoding import Encoding, log8
from sim.traces.format import MODEL_DIMS, TraceWriter

DEFAULT_FIELDS = ("ffn_act", "mlp_in")


@dataclass(frozen=True)
class CaptureSpec:
    model: str = "smollm2-135m"
    tokens: int = 1024  # total, split evenly over the contexts
    tasks: tuple[str, ...] | None = None
    contexts_per_task: int | None = None
    fields: tuple[str, ...] = DEFAULT_FIELDS
    split: str = "trace"
    chunk_tokens: int = 256
    encodings: dict[str, Encoding] = field(default_factory=dict)

    def command(self, out: str | Path) -> str:
        """The ``python -m sim trace capture`` command line that reproduces this capture."""
        args = ["python", "-m", "sim", "trace", "capture", "--model", self.model, "--tokens", str(self.tokens)]
        if self.tasks:
            args += ["--tasks", ",".join(self.tasks)]
        if self.contexts_per_task:
            args += ["--contexts-per-task", str(self.contexts_per_task)]
        args += ["--fields", ",".join(self.fields), "--split", self.split, "--chunk-tokens", str(self.chunk_tokens)]
        for name, enc in sorted(self.encodings.items()):
            args += ["--encode", f"{name}={format_encoding(enc)}"]
        return shlex.join([*args, "--out", str(out)])


def format_encoding(enc: Encoding) -> str:
    """``log8:keep_top=0.2,steps=8`` (inverse of :func:`parse_encoding`)."""
    params = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(enc.params.items()))
    return enc.kind + (f":{params}" if params else "")


def parse_encoding(text: str) -> Encoding:
    """``int8c`` or ``log8:keep_top=0.2,steps=8`` -> Encoding (numbers parsed as float, ``steps`` as int)."""
    kind, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = int(value) if key in ("steps", "levels") else float(value)
    if kind == "log8":
        return log8(**params)
    return Encoding.from_json({"kind": kind, **params})


def select_contexts(spec: CaptureSpec) -> list[corpus.ContextSpec]:
    chosen = corpus.contexts(spec.split, list(spec.tasks) if spec.tasks else None)
    if spec.contexts_per_task:
        counts: dict[str, int] = {}
        keep = []
        for c in chosen:
            counts[c.task] = counts.get(c.task, 0) + 1
            if counts[c.task] <= spec.contexts_per_task:
                keep.append(c)
        chosen = keep
    return chosen


def capture(spec: CaptureSpec, out: str | Path, log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Run the capture and write the trace atomically to ``out``; returns the path."""
    from sim.lab.kernels import Hooks, RunState, prefill
    from sim.lab.modelfile import load_model, load_tokenizer, resolve_model_path
    from sim.lab.modelfile.registry import sha256_file

    path = resolve_model_path(spec.model)
    cfg, w = load_model(path)
    tok = load_tokenizer(path)
    ctxs = select_contexts(spec)
    per_ctx = spec.tokens // len(ctxs)
    model = {"name": spec.model, "gguf_file": path.name, "gguf_sha256": sha256_file(path),
             "vocab_size": cfg.vocab_size, **{d: getattr(cfg, d) for d in MODEL_DIMS}}  # fmt: skip
    tasks = sorted({c.task for c in ctxs}, key=corpus.TASKS.index)
    table, t0 = [], time.perf_counter()
    with TraceWriter(out, model, list(spec.fields), spec.chunk_tokens, encodings=spec.encodings) as writer:
        bar = tqdm(total=per_ctx * len(ctxs), unit="tok", desc="capture", disable=not progress)
        for cid, ctx in enumerate(ctxs):
            passage = corpus.load(ctx)
            ids = tok.encode(passage.text)[:per_ctx]
            rec = _Recorder(w, spec.fields)
            prefill(cfg, w, RunState.new(cfg, len(ids)), ids, Hooks(observer=rec), last_only=True)
            writer.append({**rec.arrays(), **token_meta(ids, tasks.index(ctx.task), cid)})
            table.append({"id": cid, "task_id": tasks.index(ctx.task), "n_tokens": len(ids), **passage.provenance})
            bar.update(len(ids))
        bar.close()
        elapsed, n_total = time.perf_counter() - t0, sum(c["n_tokens"] for c in table)
        extra = {"tasks": [{"id": i, "name": t} for i, t in enumerate(tasks)], "contexts": table,
                 "command": spec.command(out), "split": spec.split,
                 "capture": {"elapsed_s": elapsed, "tokens_per_s": n_total / elapsed,
                             "numpy": np.__version__, "python": platform.python_version(),
                             "gate_neg": "recomputed as mlp_in @ gate.T < 0"}}  # fmt: skip
        result = writer.close(extra)
    log(f"wrote {result}: {writer.n_tokens} tokens, {len(ctxs)} contexts, {Path(result).stat().st_size / 1e6:.1f} MB")
    return result


def token_meta(ids: list[int], task_id: int, context_id: int) -> dict[str, np.ndarray]:
    """Per-token metadata fields of one context's tokens."""
    n = len(ids)
    return {"token_id": np.asarray(ids, np.int32), "position": np.arange(n, dtype=np.int32),
            "task_id": np.full(n, task_id, np.int16), "context_id": np.full(n, context_id, np.int32)}  # fmt: skip


class _Recorder:
    """Observer that keeps the requested per-layer arrays of one prefill."""

    def __init__(self, w, fields: tuple[str, ...]):
        self.w, self.fields = w, fields
        self.layers: list[dict[str, np.ndarray]] = []

    def __call__(self, acts) -> None:
        got = {}
        for f in self.fields:
            if f == "ffn_act":
                got[f] = np.abs(acts.ffn_act)  # [n, F]
            elif f == "gate_neg":
                got[f] = (acts.mlp_in @ self.w.layers[acts.layer].gate.T) < 0  # [n, F]
            else:
                got[f] = getattr(acts, f)  # [n, d] or [n, heads, hd]
        self.layers.append(got)

    def arrays(self) -> dict[str, np.ndarray]:
        return {f: np.stack([layer[f] for layer in self.layers], axis=1) for f in self.fields}  # [n, L, ...]
