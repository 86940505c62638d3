"""Measure the machine this runs on and describe it as a hardware profile (``python -m sim calibrate``).

Every number of the profile is a measurement made here, its method in the comment beside it:

- **flash**: a scratch file (``--dir``, deleted afterwards) read with ``O_DIRECT`` (:mod:`sim.real.odirect`) in
  requests of each chunk size at random aligned offsets, in read calls of ``qd`` requests each issued by ``qd``
  threads (the simulated device's batch at queue depth qd); throughput = bytes / wall time over many calls; the
  profile keeps the median over rounds, made monotone (:func:`monotone`). ``latency``: the mean of single 4 KiB
  reads at queue depth 1 minus 4 KiB at the largest chunk's queue-depth-1 throughput (the convention of the
  datasheet-derived profiles). ``max_queue_depth``: the deepest queue measured (the real executor reads with that
  many threads). ``page_bytes``: the O_DIRECT block.
- **DRAM**: ``copy_bandwidth`` = row copies inside a matrix (``m[dst] = m[src]`` of random rows of 4-16 KiB, what
  neuron memory management does), bytes moved / s; ``bandwidth`` = a large ``np.copyto`` (2 x bytes / s).
- **CPU**: the transformer block of the numpy kernels (:func:`sim.lab.kernels.block`) on random weights of several
  Llama shapes, one token at a short context. A line through time vs weight bytes (least relative squares) gives
  ``mem_bandwidth`` (1 / slope, fp32 weights) and ``overhead`` (the intercept / the 4 kernels the simulator
  charges per block: q/k/v, attention, o, FFN); ``peak_flops.fp16`` is what fp16 weights achieve (cast to fp32 and
  multiplied; 2 FLOPs per weight over the time above the intercept); ``peak_flops.fp32`` a large GEMM;
  ``gather_efficiency`` the dense rate over the rate of the same block computing 10% of its FFN neurons gathered
  from a larger matrix. BLAS threads: the machine's default (threadpoolctl); the report lists 1 thread too.

Quick mode (default) stays under a minute; ``--thorough`` measures more sizes, depths and repeats.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.real.odirect import ALIGN_BYTES, DirectReader, aligned_empty, open_direct

KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Plan:
    chunk_sizes: tuple[int, ...]
    queue_depths: tuple[int, ...]
    file_bytes: int
    point_bytes: int  # bytes read per (chunk, qd) point (at least 64 requests)
    point_s: float  # ... or stop after this long
    repeats: int  # kernel passes per shape and round
    rounds: int  # the flash grid and the kernel shapes are measured this many times, interleaved (medians kept)
    shapes: tuple[tuple[int, int], ...]  # (d_model, d_ff) of the kernel benchmark

    thorough: bool = False

    def thread_counts(self) -> list[int]:
        """BLAS threads measured: the machine's default; thorough mode adds one thread (for the report)."""
        default = os.cpu_count() or 1
        return sorted({default, 1} if self.thorough else {default}, reverse=True)

    def kernel_points(self) -> int:
        return self.rounds * len(self.thread_counts()) * len(self.shapes) * 4

    @staticmethod
    def of(thorough: bool) -> Plan:
        shapes = ((256, 768), (576, 1536), (1024, 2816), (1536, 4096))  # (d_model, d_ff), Llama-like ratios
        if thorough:
            chunks = (4 * KiB, 8 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB)
            return Plan(chunks, (1, 2, 4, 8, 16, 32), 1024 * MiB, 256 * MiB, 4.0, 3, 5, (*shapes, (2048, 5632)), True)
        chunks = (4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, MiB, 4 * MiB, 32 * MiB)
        return Plan(chunks, (1, 4, 32), 256 * MiB, 128 * MiB, 0.9, 2, 3, shapes)


Progress = Callable[[str], None]


# ---- flash ----------------------------------------------------------------------------------------------------------
def scratch_file(folder: Path, nbytes: int) -> Path:
    """A file of random bytes in ``folder`` (written once, fsynced so that reads come from the device)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".sim-calibrate-{os.getpid()}.bin"
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for _ in range(nbytes // (16 * MiB)):
            f.write(rng.integers(0, 256, 16 * MiB, dtype=np.uint8).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return path


def measure_flash(path: Path, plan: Plan, progress: Progress) -> pd.DataFrame:
    """Throughput per (chunk size, queue depth, round): random aligned requests of one size, qd threads. The grid
    is measured ``plan.rounds`` times, interleaved, so that a burst of noise on a shared machine hits one round of
    many points rather than every round of one point; the profile takes the median over rounds."""
    size = path.stat().st_size
    rng = np.random.default_rng(1)
    rows = []
    readers = {qd: DirectReader(path, qd) for qd in plan.queue_depths}
    try:
        for rnd in range(plan.rounds):
            for qd, reader in readers.items():
                for chunk in plan.chunk_sizes:
                    progress(f"flash round {rnd + 1}/{plan.rounds}: {chunk // KiB} KiB requests at queue depth {qd}")
                    seconds, done = _read_point(reader, size, chunk, qd, plan, rng)
                    rows.append({"round": rnd, "chunk_bytes": chunk, "queue_depth": qd, "bytes": done,
                                 "seconds": seconds, "throughput_Bps": done / seconds})  # fmt: skip
    finally:
        for reader in readers.values():
            reader.close()
    return pd.DataFrame(rows)


def _read_point(reader: DirectReader, size: int, chunk: int, qd: int, plan: Plan, rng) -> tuple[float, int]:
    """(seconds, bytes) of batches of requests of ``chunk`` bytes, for about ``plan.point_s / plan.rounds``."""
    batch = qd  # requests per read call (merge=False: each its own): one batch keeps qd requests outstanding, as the
    # simulated device serves a batch of n requests at queue depth min(max_queue_depth, n), one latency per batch
    n = max(batch, plan.point_bytes // chunk // batch * batch)
    offsets = rng.integers(0, (size - chunk) // ALIGN_BYTES, n) * ALIGN_BYTES
    ext = np.stack([offsets, np.full(n, chunk)], axis=1)
    reader.read(ext[:batch], merge=False)  # untimed: the buffer's pages, the threads
    done, t0 = 0, time.perf_counter()
    for lo in range(0, n, batch):
        reader.read(ext[lo : lo + batch], merge=False)
        done += min(batch, n - lo) * chunk
        if time.perf_counter() - t0 > plan.point_s / plan.rounds:
            break
    return time.perf_counter() - t0, done


def measure_latency(path: Path, n: int = 200) -> float:
    """Mean seconds of one 4 KiB O_DIRECT read at queue depth 1 (random offsets)."""
    fd = open_direct(path)
    buf = aligned_empty(ALIGN_BYTES)
    slots = path.stat().st_size // ALIGN_BYTES - 1
    offsets = (np.random.default_rng(2).integers(0, slots, n) * ALIGN_BYTES).tolist()
    try:
        t0 = time.perf_counter()
        for off in offsets:
            os.preadv(fd, [buf], off)
        return (time.perf_counter() - t0) / n
    finally:
        os.close(fd)


# ---- DRAM -----------------------------------------------------------------------------------------------------------
def measure_copy(plan: Plan) -> dict[str, float]:
    """Large memcpy bandwidth (read + write) and row-copy throughput (bytes moved per s) for 4-16 KiB rows."""
    a = np.ones(256 * MiB // 8)
    b = np.zeros_like(a) + 1  # every page touched before timing
    times = []
    for _ in range(3 * plan.repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    out = {"memcpy_Bps": 2 * a.nbytes / float(np.median(times))}
    rng = np.random.default_rng(3)
    for row in (4 * KiB, 8 * KiB, 16 * KiB):
        m = np.ones((128 * MiB // row, row), np.uint8)  # every page touched before timing
        k = 2000
        times = []
        for _ in range(3 * plan.repeats):  # fresh random rows each time, so no repeat finds them cached
            src, dst = rng.choice(m.shape[0], (2, k), replace=False)
            t0 = time.perf_counter()
            m[dst] = m[src]
            times.append(time.perf_counter() - t0)
        out[f"row_copy_{row // KiB}KiB_Bps"] = k * row / float(np.median(times))
    return out


# ---- CPU kernels ----------------------------------------------------------------------------------------------------
WORKING_SET_BYTES = 256 * MiB  # weights cycled through by the kernel benchmark: >> any last-level cache here


def _block_s(d: int, f: int, dtype: type, density: float | None, repeats: int) -> tuple[float, int, int]:
    """Median seconds of one block (one token, 16 cached) over passes through as many random layers as fill
    WORKING_SET_BYTES (so weights come from DRAM, as in a model's forward pass) -> (s, attention bytes, FFN bytes)."""
    from sim.lab.kernels.forward import FfnSelector, Hooks, block
    from sim.lab.kernels.model import LayerWeights, ModelConfig, RunState, Weights

    heads = max(1, d // 64)
    kv = heads // 3 if heads % 3 == 0 else heads // 4 if heads % 4 == 0 else 1  # grouped-query, as Llamas have
    cfg = ModelConfig("llama", 1, d, f, heads, kv, 64, 1000, 64)
    random = Weights.random(cfg, np.random.default_rng(4))
    base, inv_freq = random.layers[0], random.inv_freq
    itemsize = np.dtype(dtype).itemsize
    attn = [np.asarray(a, dtype) for a in (base.wq, base.wk, base.wv, base.wo)]
    attn_bytes = sum(a.nbytes for a in attn)
    n_layers = max(2, WORKING_SET_BYTES // (attn_bytes + 3 * f * d * itemsize))
    layers = []  # per layer: attention ops and the FFN held as a window matrix [f, 3, d] (gathered) or three matrices
    for _ in range(n_layers):
        a = [m.copy() for m in attn]
        if density is None:
            ffn = [np.asarray(m, dtype).copy() for m in (base.gate, base.up, np.ascontiguousarray(base.down.T))]
        else:
            ffn = np.stack([base.gate, base.up, np.ascontiguousarray(base.down.T)], axis=1).astype(dtype)
        layers.append((a, ffn))
    pick = np.sort(np.random.default_rng(6).choice(f, max(1, int(f * (density or 1))), replace=False))
    keep = [np.arange(len(pick))]
    hooks = Hooks() if density is None else Hooks(ffn_selector=FfnSelector(lambda _l, _x, _a: keep, "pre"))
    state = RunState.new(cfg, 32)
    x = np.random.default_rng(5).standard_normal((1, d)).astype(np.float32)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for a, ffn in layers:
            state.pos = 16
            if density is None:
                gate, up, down = ffn
            else:
                rows = ffn[pick]  # [k, 3, d] the gather from the window's matrix
                gate, up, down = rows[:, 0], rows[:, 1], rows[:, 2]
            lw = LayerWeights(base.attn_norm, *a, base.ffn_norm, gate, up, down.T)
            block(cfg, lw, inv_freq, state, 0, x, np.array([16]), hooks)
        times.append((time.perf_counter() - t0) / n_layers)
    ffn_bytes = len(pick) * 3 * d * itemsize
    return float(np.median(times[1:])), attn_bytes, ffn_bytes


def measure_kernels(plan: Plan, progress: Progress) -> pd.DataFrame:
    """One row per (shape, dtype, density, threads): median seconds and the weight bytes the simulator charges."""
    from threadpoolctl import threadpool_limits

    rows = []
    for rnd in range(plan.rounds):
        for threads in plan.thread_counts():
            with threadpool_limits(threads):
                for d, f in plan.shapes:
                    for dtype, name in ((np.float32, "fp32"), (np.float16, "fp16")):
                        for density in (None, 0.1):
                            kind = "dense" if density is None else "gathered"
                            progress(f"kernels round {rnd + 1}/{plan.rounds}: d={d} f={f} {name} {kind}, "
                                     f"{threads} thread(s)")  # fmt: skip
                            s, attn_b, ffn_b = _block_s(d, f, dtype, density, plan.repeats)
                            rows.append({"round": rnd, "d_model": d, "d_ff": f, "dtype": name,
                                         "gathered": density is not None, "threads": threads, "seconds": s,
                                         "attention_bytes": attn_b, "ffn_bytes": ffn_b,
                                         "weights": (attn_b + ffn_b) / np.dtype(dtype).itemsize})  # fmt: skip
    return pd.DataFrame(rows)


def measure_gemm() -> float:
    """FLOP/s of a 1024^3 fp32 GEMM (median of 5)."""
    a = np.random.default_rng(7).standard_normal((1024, 1024)).astype(np.float32)
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2 * 1024**3 / float(np.median(times[1:]))


@dataclass(frozen=True)
class Fit:
    mem_bandwidth: float  # B/s
    overhead_s: float
    fp16_flops: float
    gather_efficiency: float
    residual_pct: float  # largest |fit - measured| / measured over the dense fp32 points
    gather_residual_pct: float = 0.0  # largest |fit - measured| / measured of the gathered FFN over the shapes
    # whose gather takes over 10 kernel overheads (below that the overhead's noise dominates)
    gather_row_s: float = 0.0  # a per-gathered-row cost fitted beside bytes
    row_term: bool = False  # the fit keeps it (positive): the profile's gather_row_overhead, else 0


def fit_kernels(k: pd.DataFrame, threads: int) -> Fit:
    """Roofline parameters from the kernel table (see the module docstring)."""
    k = k[k.threads == threads].groupby(["d_model", "d_ff", "dtype", "gathered"], as_index=False).median()
    dense32 = k[(k.dtype == "fp32") & ~k.gathered]
    x = (dense32.attention_bytes + dense32.ffn_bytes).to_numpy(float)
    y = dense32.seconds.to_numpy(float)
    slope, intercept = np.polyfit(x, y, 1, w=1 / y)  # least relative squares: small shapes count as much as big
    intercept = max(intercept, 0.0)
    bw = 1.0 / slope
    residual = float(np.max(np.abs(intercept + x / bw - y) / y))
    dense16 = k[(k.dtype == "fp16") & ~k.gathered]
    flops16 = float(np.median(2 * dense16.weights / np.maximum(dense16.seconds - intercept, 1e-9)))
    g32 = k[(k.dtype == "fp32") & k.gathered]
    gathered_s = np.maximum(g32.seconds - intercept - g32.attention_bytes / bw, 1e-9).to_numpy(float)
    eff = float(np.clip(np.median((g32.ffn_bytes / bw) / gathered_s), 0.01, 1.0))
    # Does one gather factor serve every shape, or do narrow rows cost more per byte? Fit a per-row term beside the
    # bytes (rows = the gathered FFN's rows: ffn_bytes / (d_model x 4 B)); the profile takes it when it is positive
    # (gather_row_overhead; the simulator's Op.rows), else the bytes-only factor stands alone.
    rows = (g32.ffn_bytes / (g32.d_model * 4)).to_numpy(float)
    timed = gathered_s > 10 * intercept / 4  # shapes whose gather takes well over one kernel's overhead
    a = np.stack([g32.ffn_bytes.to_numpy(float) / bw, rows], axis=1) / gathered_s[:, None]
    fit_rows = timed if timed.sum() >= 2 else np.ones(len(rows), bool)  # below that the overhead's noise rules
    (inverse_eff, row_s), *_ = np.linalg.lstsq(a[fit_rows], np.ones(int(fit_rows.sum())), rcond=None)
    row_term = row_s > 0 and inverse_eff >= 1  # a cost per row and a factor that still slows the bytes down
    if row_term:
        eff = float(1 / inverse_eff)
    predicted = g32.ffn_bytes.to_numpy(float) / (bw * eff) + (rows * row_s if row_term else 0.0)
    misfit = np.abs(predicted / gathered_s - 1)[timed]
    g_residual = float(misfit.max()) if misfit.size else 0.0
    return Fit(bw, intercept / 4, flops16, eff, 100 * residual, 100 * g_residual, float(row_s), row_term)


# ---- the profile ----------------------------------------------------------------------------------------------------
MARKER = "# written by python -m sim calibrate"


def _gbps(x: float) -> str:
    return f"{x / 1e9:.3g} GB/s"


def profile_yaml(name: str, flash: pd.DataFrame, latency_s: float, copy: dict, fit: Fit, gemm_flops: float,
                 threads: int, folder: Path, report: str, thorough: bool) -> str:  # fmt: skip
    """The hardware profile text, each number with the measurement it comes from."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "thorough" if thorough else "quick"
    chunks = sorted(flash.chunk_bytes.unique())
    qds = sorted(flash.queue_depth.unique())
    table = monotone(flash.pivot_table(index="queue_depth", columns="chunk_bytes", values="throughput_Bps",
                                       aggfunc="median"))  # fmt: skip
    seq1 = float(table.loc[qds[0], chunks[-1]])
    latency = max(latency_s - 4096 / seq1, 1e-7)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    disk = _disk_of(folder)
    cells = {qd: ", ".join(f'"{_gbps(v)}"' for v in table.loc[qd, chunks]) for qd in qds}
    rows = "\n".join(f"      - [{cells[qd]}]  # qd {qd}" for qd in qds)
    row_copy = float(np.mean([v for k, v in copy.items() if k.startswith("row_copy")]))
    node = f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores, {threads} BLAS threads"
    latency_note = (f"# measured: mean 4 KiB O_DIRECT read at qd 1 ({latency_s * 1e6:.1f} us) minus 4 KiB at the "
                    f"qd-1 curve's largest chunk ({chunks[-1] // KiB} KiB)")  # fmt: skip
    fp16_note = "# measured: fp16 weights cast to fp32 in the block kernel, 2 FLOPs per weight / (time - overhead)"
    bandwidth_note = f"# measured: 1 / slope of block time vs fp32 weight bytes (fit within {fit.residual_pct:.0f}%)"
    gather_note = ("# measured: dense rate / rate over 10% of the FFN gathered from a window matrix"
                   + (" (with the per-row term below)" if fit.row_term else ""))  # fmt: skip
    row_note = (f"# measured: a per-row term fitted beside the bytes of the gathered FFN over the shapes: "
                f"{fit.gather_row_s * 1e9:.0f} ns/row, {'kept' if fit.row_term else 'not a cost, so 0'}; the gather "
                f"model fits every shape within {fit.gather_residual_pct:.0f}%")  # fmt: skip
    row_overhead = fit.gather_row_s if fit.row_term else 0.0
    return f"""{MARKER} ({mode}) on {when}:
# every number below was measured on this machine ({node})
# by the methods of sim/real/calibrate.py; raw measurements in {report}.
# Flash = the disk holding {folder} ({disk}).
name: {name}
description: "This machine as measured by python -m sim calibrate ({mode}, {when})"
flash:
  capacity: "{_free_bytes(folder) / 1e9:.1f} GB"  # measured: free space of the file system holding the scratch file
  latency: "{latency * 1e6:.1f} us"  {latency_note}
  max_queue_depth: {qds[-1]}  # the deepest queue measured (the real executor reads with this many threads)
  page_bytes: "{ALIGN_BYTES} B"  # O_DIRECT moves whole aligned blocks
  aligned: true  # requests are the blocks they cover, joined where they meet (sim/real/odirect.py)
  target_memory: dram
  curve:
    chunk_sizes: [{", ".join(f'"{c // KiB} KiB"' for c in chunks)}]  # random aligned O_DIRECT reads
    queue_depths: {list(map(int, qds))}  # this many reader threads
    # throughput, measured: median of {int(flash["round"].max()) + 1} rounds, monotone envelope (sim/real/calibrate.py);
    # rows = queue_depths, columns = chunk_sizes
    throughput:
{rows}
memories:
  dram:
    capacity: "{mem / 2**30:.1f} GiB"  # measured: os.sysconf physical pages x page size
    bandwidth: "{_gbps(copy["memcpy_Bps"])}"  # measured: np.copyto of 256 MiB, 2 x bytes / s
    copy_bandwidth: "{_gbps(row_copy)}"  # measured: row copies m[dst] = m[src], 4-16 KiB rows, bytes moved / s
processors:
  cpu:
    kind: cpu
    memory: dram
    peak_flops:
      fp32: "{gemm_flops / 1e9:.3g} GFLOPS"  # measured: 1024^3 fp32 GEMM in numpy, {threads} threads
      fp16: "{fit.fp16_flops / 1e9:.3g} GFLOPS"  {fp16_note}
    mem_bandwidth: "{_gbps(fit.mem_bandwidth)}"  {bandwidth_note}
    overhead: "{fit.overhead_s * 1e6:.1f} us"  # measured: block-time intercept / 4 kernels per block
    gather_efficiency: {fit.gather_efficiency:.3f}  {gather_note}
    gather_row_overhead: "{row_overhead * 1e9:.1f} ns"  {row_note}
"""


def monotone(table: pd.DataFrame) -> pd.DataFrame:
    """The throughput table [qd, chunk] made non-decreasing along both axes (running maximum): a reader can always
    issue fewer requests at once or split a larger one, so measured dips (noise on a shared machine) are not
    features of the device. The raw medians stay in the report."""
    return table.cummax(axis=1).cummax(axis=0)


def _disk_of(folder: Path) -> str:
    try:
        st = os.statvfs(folder)
        return f"{st.f_bsize} B blocks"
    except OSError:
        return "unknown"


def _free_bytes(folder: Path) -> float:
    st = os.statvfs(folder)
    return float(st.f_bavail * st.f_frsize)
