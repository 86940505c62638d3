"""A roofline processor (CPU, GPU, NPU) executing kernels one at a time.

Modelled: per kernel, time = max(flops / (peak_flops[dtype] * flops_efficiency),
nbytes / (mem_bandwidth * bandwidth_efficiency)), divided by ``gather_efficiency`` for kernels over gathered
(sparse) rows, plus a fixed per-kernel overhead. Kernels run in FIFO order of :meth:`Processor.run` calls:
the processor keeps the time it becomes free (``busy_until``); a batch of ops is ONE SimPy event.

Not modelled: concurrent kernels / streams, caches, frequency scaling, contention for memory bandwidth with
other devices (flash DMA, copies), launch-queue depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import simpy

from sim.config.hardware import ProcessorSpec
from sim.stats.recorder import Recorder


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    flops: float
    nbytes: float  # bytes the kernel reads and writes in memory
    dtype: str = "fp16"
    gathered: bool = False  # runs over gathered (sparse) rows or columns


MEMO_OPS = 4096  # distinct ops whose times are memoised (a policy's ops repeat across layers and tokens)


class Processor:
    """Roofline kernels in FIFO order; see the module docstring."""

    def __init__(self, env: simpy.Environment, name: str, spec: ProcessorSpec, recorder: Recorder | None = None):
        self.env = env
        self.name = name
        self.spec = spec
        self.recorder = recorder
        self._flops_per_s = {dtype: peak * spec.flops_efficiency for dtype, peak in spec.peak_flops.items()}
        self._bytes_per_s = spec.mem_bandwidth * spec.bandwidth_efficiency
        self.busy_until = 0.0
        self.busy_s = 0.0
        self.n_kernels = 0
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

    def _roofline_s(self, op: Op) -> float:
        flops_per_s = self._flops_per_s.get(op.dtype)
        if flops_per_s is None:
            raise ValueError(
                f"processor {self.name!r}: op {op.name!r} has dtype {op.dtype!r}, "
                f"known dtypes: {', '.join(sorted(self._flops_per_s))}"
            )
        roof_s = max(op.flops / flops_per_s, op.nbytes / self._bytes_per_s)
        if op.gathered:
            roof_s /= self.spec.gather_efficiency
        return roof_s + self.spec.overhead

    def run(self, ops: Sequence[Op], tag: str = "compute") -> simpy.Event:
        """Queue ``ops`` behind earlier calls; the event (value: seconds of compute) fires when they are done."""
        now = float(self.env.now)
        compute_s, end_s = self._book(ops, tag, now)
        return self.env.timeout(end_s - now, value=compute_s)

    def run_alone(self, ops: Sequence[Op], start_s: float, tag: str = "compute") -> float:
        """:meth:`run` called at ``start_s`` with nothing else calling before it completes: the same booking and
        span; returns the instant run()'s timeout fires, ``start_s + (end - start_s)`` (SimPy adds the delay to
        now, which may differ from ``end`` in the last bit). No SimPy event."""
        start_s = float(start_s)
        _, end_s = self._book(ops, tag, start_s)
        return start_s + (end_s - start_s)

    def _book(self, ops: Sequence[Op], tag: str, now: float) -> tuple[float, float]:
        """Queue ``ops`` at ``now`` behind earlier calls: busy time, kernel count, span -> (compute_s, end_s)."""
        compute_s, memo = 0, self._op_s  # (0 + t: the floats of sum())
        for op in ops:
            found = memo.get(id(op))
            compute_s += found[1] if found is not None and found[0] is op else self.op_time_s(op)
        start_s = max(now, self.busy_until)
        end_s = start_s + compute_s
        self.busy_until = end_s
        self.busy_s += compute_s
        self.n_kernels += len(ops)
        if self.recorder is not None and self.recorder.enabled:  # (the bytes are summed only for a span)
            self.recorder.span(self.name, tag, start_s, end_s, float(sum(op.nbytes for op in ops)))
        return compute_s, end_s
