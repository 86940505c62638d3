"""A roofline processor (CPU, GPU, NPU) executing kernels one at a time.

Modelled: per kernel, time = max(flops / (peak_flops[dtype] * flops_efficiency),
nbytes / (mem_bandwidth * bandwidth_efficiency)), divided by ``gather_efficiency`` for kernels over gathered
(sparse) rows, plus ``gather_row_overhead`` per gathered row, plus a fixed per-kernel overhead. So a kernel's shape
matters: a small GEMV (an MQA model's k and v) is dominated by the overhead, and a gather over many narrow rows
pays its row term where a machine's measurements show one (``python -m sim calibrate`` fits it). Kernels run in
FIFO order of :meth:`Processor.run` calls: the processor keeps the time it becomes free (``busy_until``); a batch
of ops is ONE SimPy event.

Not modelled: concurrent kernels / streams, caches, frequency scaling, contention for memory bandwidth with
other devices (flash DMA, copies), launch-queue depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import simpy

from sim.config.hardware import ProcessorSpec


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    flops: float
    nbytes: float  # bytes the kernel reads and writes in memory
    dtype: str = "fp16"
    gathered: bool = False  # runs over gathered (sparse) rows or columns
    rows: int = 0  # gathered rows (or columns) the kernel indexes, for the per-row term


MEMO_OPS = 4096  # distinct ops whose times are memoised (a policy's ops repeat across layers and tokens)


class Processor:
    """Roofline kernels in FIFO order; see the module docstring."""

    def __init__(self, env: simpy.Environment, name: str, spec: ProcessorSpec):
        self.env = env
        self.name = name
        self.spec = spec
        self._flops_per_s = {dtype: peak * spec.flops_efficiency for dtype, peak in spec.peak_flops.items()}
        self._bytes_per_s = spec.mem_bandwidth * spec.bandwidth_efficiency
        self.busy_until = 0.0  # when the last queued kernel ends
        self._op_s: dict[int, tuple[Op, float]] = {}  # id(op) -> (op, op_time_s): memo of frozen ops by identity
        # (a policy reuses its Op objects across layers and tokens; holding the op keeps its id from being reused)

    def op_time_s(self, op: Op) -> float:
        """Roofline time of one kernel, overhead included."""
        found = self._op_s.get(id(op))
        if found is not None and found[0] is op:
            return found[1]
        time_s = self._roofline_s(op)
        if len(self._op_s) >= MEMO_OPS:
            self._op_s.clear()
        self._op_s[id(op)] = (op, time_s)
        return time_s

    def service_s(self, ops: Sequence[Op]) -> float:
        """Seconds the kernels take back to back (the sum of their roofline times, in order)."""
        compute_s, memo = 0.0, self._op_s
        for op in ops:
            found = memo.get(id(op))
            compute_s += found[1] if found is not None and found[0] is op else self.op_time_s(op)
        return compute_s

    def _roofline_s(self, op: Op) -> float:
        flops_per_s = self._flops_per_s.get(op.dtype)
        if flops_per_s is None:
            raise ValueError(
                f"processor {self.name!r}: op {op.name!r} has dtype {op.dtype!r}, "
                f"known dtypes: {', '.join(sorted(self._flops_per_s))}"
            )
        roof_s = max(op.flops / flops_per_s, op.nbytes / self._bytes_per_s)
        if op.gathered:
            roof_s = roof_s / self.spec.gather_efficiency + op.rows * self.spec.gather_row_overhead
        return roof_s + self.spec.overhead

    def run(self, ops: Sequence[Op], compute_s: float | None = None) -> simpy.Event:
        """Queue ``ops`` behind earlier calls; the event fires when they are done (``compute_s``: their
        :meth:`service_s`, if the caller has it already)."""
        now = self.env.now
        compute_s = self.service_s(ops) if compute_s is None else compute_s
        end_s = max(now, self.busy_until) + compute_s
        self.busy_until = end_s
        return self.env.timeout(end_s - now)
