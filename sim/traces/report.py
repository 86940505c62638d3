"""Statistics of a whole trace, streamed context by context (``python -m sim trace stats``).

A context (one prompt) is a contiguous run of tokens with the same ``context_id``; only one context's
masks are in memory at a time. Hot-weight reuse splits each context into a warm-up half and an evaluation
half and asks how many of the evaluation half's active neurons a static LFU cache (the C most-used neurons
per layer) would hold if it had been warmed on: the same context, the other contexts of the same task,
the contexts of other tasks, or the evaluation half itself (``oracle``, the best any static cache can do).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sim.errors import TraceError
from sim.traces import stats
from sim.traces.format import TraceReader
from sim.traces.sparsity import FittedRule, SparsityRule


def calibration_sample(reader: TraceReader, field: str, n_tokens: int) -> np.ndarray:
    """Every ``stride``-th token of ``field`` over the whole trace (about ``n_tokens`` of them)."""
    stride = max(1, reader.n_tokens // max(1, n_tokens))
    parts = [c[field][c["token_index"] % stride == 0] for c in reader.iter_chunks([field])]
    return np.concatenate(parts)


def check_rule(reader: TraceReader, rule: SparsityRule) -> None:
    """TraceError unless the trace holds what ``rule`` reads, densely enough for its sparsity."""
    if not reader.has(rule.field):
        raise TraceError(f"trace {reader.path}: rule {rule.describe()} needs field {rule.field} (fields: "
                         f"{', '.join(reader.fields)}; capture it with --fields)")  # fmt: skip
    keep = reader.manifest["fields"][rule.field]["encoding"].get("keep_top", 1.0)
    # a threshold at exactly 1 - keep would sit on the stored zeros and degenerate into top-k
    floor = 1.0 - keep + (1e-6 if rule.kind == "threshold" and keep < 1.0 else -1e-9)
    if rule.kind in ("threshold", "topk") and rule.sparsity < floor:
        need = f"{'>' if rule.kind == 'threshold' else '>='} {1 - keep:g}"
        raise TraceError(f"trace {reader.path}: stores only the top {keep:.0%} of {rule.field} per token, so "
                         f"rule {rule.describe()} (needs sparsity {need}) cannot be applied")  # fmt: skip


def fit_rule(reader: TraceReader, rule: SparsityRule, calib_tokens: int = 2048) -> FittedRule:
    """Calibrate ``rule`` on an evenly spaced sample of the trace (threshold rules only need it)."""
    check_rule(reader, rule)
    calib = calibration_sample(reader, rule.field, calib_tokens) if rule.kind == "threshold" else None
    return rule.fit(calib)


def iter_contexts(reader: TraceReader, fields: list[str]) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Yield (context_id, task_id, {field: [T_c, ...]}) for each contiguous run of one context."""
    want = [*fields, "context_id", "task_id"]
    pending: list[dict[str, np.ndarray]] = []
    for chunk in reader.iter_chunks(want):
        ctx = chunk["context_id"]
        cuts = np.flatnonzero(np.diff(ctx)) + 1
        for piece in np.split(np.arange(len(ctx)), cuts):
            part = {f: chunk[f][piece] for f in want}
            if pending and pending[-1]["context_id"][0] != part["context_id"][0]:
                yield _joined(pending, fields)
                pending = []
            pending.append(part)
    if pending:
        yield _joined(pending, fields)


def _joined(parts: list[dict[str, np.ndarray]], fields: list[str]) -> tuple[int, int, dict[str, np.ndarray]]:
    arrays = {f: np.concatenate([p[f] for p in parts]) for f in fields}
    return int(parts[0]["context_id"][0]), int(parts[0]["task_id"][0]), arrays


def trace_stats(reader: TraceReader, rule: SparsityRule, ks: list[int], distances: list[int],
                channel_density: float = 0.1, cache_fractions: tuple[float, ...] = (0.1, 0.25, 0.5),
                calib_tokens: int = 2048) -> dict:  # fmt: skip
    """All statistics of one trace under one sparsity rule, as JSON-ready tables."""
    fitted = fit_rule(reader, rule, calib_tokens)
    L, F = reader.model["n_layers"], reader.model["d_ff"]
    channels = [f for f in ("mlp_in", "attn_in") if reader.has(f)]
    acc = _Accumulator(len(ks), len(distances), L, F, channels)
    for ctx, task, arrays in iter_contexts(reader, [rule.field, *channels]):
        mask = fitted.mask(arrays[rule.field])  # [T_c, L, F]
        acc.add(ctx, task, mask, {c: stats.topk_channels(arrays[c], channel_density) for c in channels},
                ks, distances)  # fmt: skip
    out = acc.tables(ks, distances, cache_fractions)
    out["meta"] = {"trace": str(reader.path), "rule": rule.describe(), "n_tokens": reader.n_tokens,
                   "n_contexts": len(acc.warm), "channel_density": channel_density,
                   "thresholds": None if fitted.thresholds is None else fitted.thresholds.tolist(),
                   "model": reader.model.get("name", "")}  # fmt: skip
    return out


class _Accumulator:
    """Sums over contexts; :meth:`tables` turns them into weighted means."""

    def __init__(self, K: int, D: int, L: int, F: int, channels: list[str]):
        self.active, self.tokens = np.zeros(L), 0
        self.win_sum, self.win_n = np.zeros((K, L)), np.zeros(K)
        self.ovl = {k: [np.zeros(D), np.zeros(D), np.zeros(D)] for k in ["ffn", *channels]}
        self.pers_num, self.pers_den = np.zeros(L), np.zeros(L)
        self.warm: dict[int, np.ndarray] = {}
        self.eval: dict[int, np.ndarray] = {}
        self.task: dict[int, int] = {}
        self.F = F

    def add(self, ctx: int, task: int, mask: np.ndarray, channel_masks: dict, ks: list[int], ds: list[int]) -> None:
        T = len(mask)
        self.active += mask.sum(axis=(0, 2))
        self.tokens += T
        use, n_pos = stats.window_use(mask, ks)
        ok = n_pos > 0
        self.win_sum[ok] += use[ok] * n_pos[ok, None]
        self.win_n += n_pos
        for kind, m in {"ffn": mask, **channel_masks}.items():
            overlap, base = stats.cross_layer_overlap(m, ds)
            good = ~np.isnan(overlap)
            self.ovl[kind][0][good] += overlap[good] * T
            self.ovl[kind][1][good] += base[good] * T
            self.ovl[kind][2][good] += T
        num, den = stats.persistence(mask)
        self.pers_num += num
        self.pers_den += den
        half = T // 2
        self.warm[ctx], self.eval[ctx] = stats.neuron_counts(mask[:half]), stats.neuron_counts(mask[half:])
        self.task[ctx] = task

    def tables(self, ks: list[int], ds: list[int], fractions: tuple[float, ...]) -> dict:
        density = self.active / (self.tokens * self.F)
        window = self.win_sum / np.maximum(self.win_n, 1)[:, None]
        overlap = [{"kind": kind, "distance": d, "overlap": s[0][j] / s[2][j], "baseline": s[1][j] / s[2][j]}
                   for kind, s in self.ovl.items() for j, d in enumerate(ds) if s[2][j] > 0]  # fmt: skip
        return {
            "density": {"layer": list(range(len(density))), "density": density.tolist(), "mean": float(density.mean())},
            "window": {
                "k": list(ks),
                "use": window.mean(axis=1).tolist(),
                "use_per_layer": window.tolist(),
                "n_positions": self.win_n.tolist(),
            },  # fmt: skip
            "overlap": overlap,
            "persistence": (self.pers_num / np.maximum(self.pers_den, 1)).tolist(),
            "reuse": [row for f in fractions for row in self._reuse(f)],
        }

    def _reuse(self, fraction: float) -> list[dict]:
        capacity = int(round(fraction * self.F))
        sums: dict[str, list[float]] = {s: [0.0, 0.0] for s in ("same_context", "same_task", "other_task", "oracle")}
        for ctx, ev in self.eval.items():
            same = [self.warm[c] for c in self.warm if c != ctx and self.task[c] == self.task[ctx]]
            other = [self.warm[c] for c in self.warm if self.task[c] != self.task[ctx]]
            sources = {
                "same_context": self.warm[ctx],
                "oracle": ev,
                "same_task": np.sum(same, axis=0) if same else None,
                "other_task": np.sum(other, axis=0) if other else None,
            }
            for name, warm in sources.items():
                if warm is not None:
                    hits, accesses = stats.lfu_hit_rate(warm, ev, capacity)
                    sums[name][0] += hits
                    sums[name][1] += accesses
        return [{"cache_fraction": fraction, "warmed_on": k, "hit_rate": h / a if a else float("nan")}
                for k, (h, a) in sums.items()]  # fmt: skip


def write_stats(reader: TraceReader, rules: list[SparsityRule], out: Path, ks: list[int],
                channel_density: float = 0.1) -> Path:  # fmt: skip
    """Run :func:`trace_stats` per rule; write ``trace_stats.json`` and tidy CSVs (one row per rule and x)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    results = {r.describe(): trace_stats(reader, r, ks, [1, 2, 3, 4], channel_density) for r in rules}
    rows: dict[str, list[dict]] = {"density": [], "window": [], "overlap": [], "reuse": [], "persistence": []}
    for tag, res in results.items():
        rows["density"] += [{"rule": tag, "layer": i, "density": d} for i, d in enumerate(res["density"]["density"])]
        rows["window"] += [
            {"rule": tag, "k": k, "use": u} for k, u in zip(res["window"]["k"], res["window"]["use"], strict=True)
        ]
        rows["overlap"] += [{"rule": tag, **row} for row in res["overlap"]]
        rows["reuse"] += [{"rule": tag, **row} for row in res["reuse"]]
        rows["persistence"] += [
            {"rule": tag, "layer": i, "p_active_given_prev": p} for i, p in enumerate(res["persistence"])
        ]
    for name, table in rows.items():
        pd.DataFrame(table).to_csv(out / f"{name}.csv", index=False)
    tmp = out / "trace_stats.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "trace_stats.json")
    return out
