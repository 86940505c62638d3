"""Could compiled code reach 1000 simulated tokens/s for OPT-6.7B "all" on this machine? A measurement, not part
of the simulator: ``pip install numba && python benchmarks/floor_lif_compiled.py``.

bench_lif.py's configuration (projected trace, statistical predictor at App. C quality, k = 5 window, neuron
memory management) spends ~4-5 ms per token in vectorised numpy, most of it deciding ~50k predicted neurons and
~17k loads and evictions per token (bench_lif's per-piece figures). This file rewrites that per-token neuron work
as fused loops compiled by numba, the fastest form we could write it in, and times it on the same inputs:

* true sets: the projection's count tables (sim.traces.projection._active_flat) read per (layer, source neuron);
* predictor: recall draws, then false positives by the same bucketed Poisson thinning as
  sim.lif.statistical, with the random numbers drawn in bulk by numpy (numba's own generator is slower here);
* window: packed bits, k-slot ring, loads and evictions extracted word by word (de Bruijn bit scan);
* matrix: delete = move the last row into the hole, insert = append (sim.lif.memmgmt's cost model);
* extents: runs of adjacent loaded neurons (what the flash model prices).

It draws other random numbers than the simulator, so its sets are equal in size and law, not identical; it
prints their sizes next to the times. The engine's own pricing and booking (bench_lif's engine figure, ~0.3 ms)
come on top. STYLE 13 keeps hot loops vectorised in sim/; this file exists to say what breaking it would buy.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

try:
    from numba import njit
except ImportError:  # numba is not a dependency of the project
    sys.exit("floor_lif_compiled.py needs numba: pip install numba")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_lif  # noqa: E402

from sim.config.experiment import load_experiment  # noqa: E402
from sim.engine.activations import build_activations  # noqa: E402
from sim.lif.statistical import DENSE_Q, StatisticalPredictor  # noqa: E402

TOKENS = bench_lif.TOKENS
_DEBRUIJN = 0x03F79D71B4CB0A89


@njit(cache=True)
def _true_active(codes_t, layers, lowest, count, order, first, n_src, n, stamp, t, out, n_pos, w_pos, w):
    """Targets whose source code beats their threshold -> out[:a] flat ids (unordered); stamp[id] = t."""
    a = 0
    for l in range(len(layers)):
        n_pos[l], w_pos[l] = 0, 0.0
        cl = codes_t[layers[l]]
        for s in range(n_src):
            c = cl[s]
            if c > lowest[l, s]:
                row = l * n_src + s
                for i in range(count[row * 256 + c]):
                    j = l * n + order[first[row] + i]
                    stamp[j] = t
                    out[a] = j
                    a += 1
                    n_pos[l] += 1
                    w_pos[l] += w[j]
    return a


@njit(cache=True)
def _set(bits, j):
    bits[j >> 6] |= np.uint64(1) << np.uint64(j & 63)


@njit(cache=True)
def _predict(active, a, u_keep, recall, fp_rate, dense_q, n, stamp, t, bits, n_pos, w_pos, w_total,
             members, ratio, start, glayer, w_max, exps, unif):  # fmt: skip
    """Predicted set into bits: each active kept w.p. recall; inactive i chosen w.p. w_i * scale_l (as
    StatisticalPredictor.false_positives). Returns (kept, false positives, exps used, uniforms used), the last
    two -1 if ``exps`` or ``unif`` ran out."""
    bits[:] = 0
    kept = 0
    for i in range(a):
        if u_keep[i] < recall:
            _set(bits, active[i])
            kept += 1
    scale = fp_rate * (n - n_pos) / np.maximum(w_total - w_pos, 1e-30)  # [L]
    ie, iu, n_fp = 0, 0, 0
    for g in range(len(start) - 1):
        s, lo, hi = w_max[g] * scale[glayer[g]], start[g], start[g + 1]
        if s > dense_q:  # hot group: one uniform per member
            if iu + hi - lo > len(unif):
                return kept, n_fp, -1, -1  # out of random numbers: the caller draws more and repeats
            for m in range(lo, hi):
                if unif[iu] < ratio[m] * s and stamp[members[m]] != t:
                    _set(bits, members[m])
                    n_fp += 1
                iu += 1
            continue
        h, x, last = -np.log1p(-s), 0.0, -1  # Poisson points on the members' intervals; the first one decides
        while True:
            if ie == len(exps) or iu == len(unif):
                return kept, n_fp, -1, -1
            x += exps[ie] / h
            ie += 1
            p = int(x)
            if p >= hi - lo:
                break
            if p != last:
                last = p
                if unif[iu] < ratio[lo + p] and stamp[members[lo + p]] != t:
                    _set(bits, members[lo + p])
                    n_fp += 1
                iu += 1
    return kept, n_fp, ie, iu


@njit(cache=True)
def _extract(word, base, out, k, table):
    while word:
        low = word & (~word + np.uint64(1))
        out[k] = base + table[(low * np.uint64(_DEBRUIJN)) >> np.uint64(58)]
        k += 1
        word ^= low
    return k


@njit(cache=True)
def _window(bits, ring, slot, resident, loads, evicts, table):
    """Push bits into ring[slot]; loads = bits & ~before, evicts = before & ~after, both sorted flat ids."""
    n_load = n_evict = 0
    for i in range(len(bits)):
        before, p = resident[i], bits[i]
        ring[slot, i] = p
        after = np.uint64(0)
        for r in range(ring.shape[0]):
            after |= ring[r, i]
        resident[i] = after
        if p & ~before:
            n_load = _extract(p & ~before, i * 64, loads, n_load, table)
        if before & ~after:
            n_evict = _extract(before & ~after, i * 64, evicts, n_evict, table)
    return n_load, n_evict


@njit(cache=True)
def _matrix(loads, n_load, evicts, n_evict, row_of, neuron_in, n_rows, row0, n):
    """Delete = move the layer's last row into the hole; insert = append. Returns rows moved."""
    moves = 0
    for i in range(n_evict):
        x = evicts[i]
        l = x // n
        hole, last = row_of[x], n_rows[l] - 1
        row_of[x] = -1
        if hole != last:
            y = neuron_in[row0[l] + last]
            neuron_in[row0[l] + hole] = y
            row_of[y] = hole
            moves += 1
        n_rows[l] = last
    for i in range(n_load):
        x = loads[i]
        l = x // n
        neuron_in[row0[l] + n_rows[l]] = x
        row_of[x] = n_rows[l]
        n_rows[l] += 1
    return moves


@njit(cache=True)
def _extents(loads, n_load, n):
    """Runs of adjacent loaded neurons within a layer (one flash request each)."""
    runs, i = 0, 0
    while i < n_load:
        j = i + 1
        while j < n_load and loads[j] == loads[j - 1] + 1 and loads[j] // n == loads[i] // n:
            j += 1
        runs += 1
        i = j
    return runs


def _inputs():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "floor.yaml"
        path.write_text(yaml.safe_dump(bench_lif.EXPERIMENT))
        (case,) = load_experiment(path)
    src = build_activations(case.config.activations, case.model, np.random.default_rng(case.config.seed))
    weights = src.active_counts(0, TOKENS).astype(np.float32) / TOKENS + 1e-3  # as LlmInFlash._mask_stream
    policy = bench_lif.EXPERIMENT["policy"]
    predictor = StatisticalPredictor(0.95, 0.07, weights)
    buckets, w, w_total = predictor._static(weights.shape)
    codes = src.base.reader.read("ffn_act", 0, TOKENS, decoded=False)  # [T, L, F] uint8
    return src, predictor, buckets, w, w_total, codes, int(policy["window_k"])


def run() -> list[tuple[str, float, str]]:
    src, pred, b, w, w_total, codes, k = _inputs()
    count, order, lowest, first = src._copies
    n_layers, n, n_src = src.n_layers, src.d_ff, src.base.d_ff
    table = np.zeros(64, np.int64)
    for i in range(64):
        table[((1 << i) * _DEBRUIJN % 2**64) >> 58] = i
    rng = np.random.default_rng(0)
    n_all = n_layers * n
    stamp, active = np.full(n_all, -1, np.int32), np.empty(n_all, np.int64)
    n_pos, w_pos = np.zeros(n_layers, np.int64), np.zeros(n_layers)
    bits, resident = np.zeros(n_all // 64, np.uint64), np.zeros(n_all // 64, np.uint64)
    loads, evicts = np.empty(n_all, np.int64), np.empty(n_all, np.int64)
    figures: list[tuple[str, float, str]] = []
    for rep in ("compile", "warm"):  # the first pass compiles (or loads numba's cache)
        ring = np.zeros((k, n_all // 64), np.uint64)
        resident[:], stamp[:] = 0, -1
        row_of, neuron_in = np.full(n_all, -1, np.int64), np.full(n_all, -1, np.int64)
        n_rows, row0 = np.zeros(n_layers, np.int64), np.arange(n_layers, dtype=np.int64) * n
        spent = dict.fromkeys(("true_sets", "random_draws", "predictor", "window", "matrix", "extents"), 0.0)
        sizes = dict.fromkeys(("true", "false_positives", "loaded", "evicted", "rows_moved", "runs"), 0)
        for t in range(TOKENS):
            t0 = time.perf_counter()
            a = _true_active(codes[t], src.layers, lowest, count, order, first, n_src, n, stamp, t, active, n_pos,
                             w_pos, w)  # fmt: skip
            t1 = time.perf_counter()
            draws = 60_000  # a token uses ~40k points and ~9k hot-group members
            while True:
                u_keep, exps, unif = rng.random(a), rng.standard_exponential(draws), rng.random(draws)
                t2 = time.perf_counter()
                _, n_fp, used, _ = _predict(active, a, u_keep, pred.recall, pred.fp_rate, DENSE_Q, n, stamp, t, bits,
                                            n_pos, w_pos, w_total, b.members, b.ratio, b.start, b.layer, b.w_max,
                                            exps, unif)  # fmt: skip
                if used >= 0:
                    break
                draws *= 2
            t3 = time.perf_counter()
            n_load, n_evict = _window(bits, ring, t % k, resident, loads, evicts, table)
            t4 = time.perf_counter()
            moves = _matrix(loads, n_load, evicts, n_evict, row_of, neuron_in, n_rows, row0, n)
            t5 = time.perf_counter()
            runs = _extents(loads, n_load, n)
            t6 = time.perf_counter()
            for name, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
                spent[name] += dt
            for name, v in zip(sizes, (a, n_fp, n_load, n_evict, moves, runs), strict=True):
                sizes[name] += v
        if rep == "warm":
            total_ms = 1e3 * sum(spent.values()) / TOKENS
            figures += [("opt6.7b_lif_all_compiled_neuron_work_ms_per_token", total_ms, "ms/token"),
                        ("opt6.7b_lif_all_compiled_tokens_per_wall_s_bound", 1e3 / total_ms, "tok/s")]  # fmt: skip
            figures += [(f"opt6.7b_lif_all_compiled_{k_}_ms_per_token", 1e3 * s / TOKENS, "ms/token")
                        for k_, s in spent.items()]  # fmt: skip
            figures += [(f"opt6.7b_lif_all_compiled_{k_}_per_token", v / TOKENS, "neurons") for k_, v in sizes.items()]
    return figures


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name} {value:.6g} {unit}")
