"""A step's work as a small graph of device jobs: what a policy hands the engine for one decode step or prefill chunk.

Four kinds of job, each one verb of one device:

- ``read``     flash read of extents ``[n, 2] int64 (offset, length)`` into the memory flash reads into;
- ``transfer`` link transfer of ``nbytes`` from memory ``src`` to memory ``dst``;
- ``copy``     ``nbytes`` copied within a memory (memory management: rows moved into holes);
- ``run``      a batch of kernels (:class:`~sim.devices.processor.Op`) on a named processor.

Each job waits for the jobs listed in ``after`` (indices of jobs added before it, so the list is in topological
order and there are no cycles). A job with nothing to wait for starts when the step starts. Nothing else orders
jobs: two jobs on different devices run in parallel, two jobs on one device share it (fair-share servers) or queue
(processors, FIFO). A policy expresses any pipeline this way -- LLM in a Flash's "read layer l+1 while layer l
computes", ActiveFlow's one group preload that several layers wait for, MagicPIG's GPU and CPU jobs of one layer.

Each job also says which part of the time breakdown it belongs to (``stage``: ``io`` ``xfer`` ``memmgmt``
``compute``; by default from its kind) and a span name (``tag``) for the timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sim.devices.processor import Op

Kind = Literal["read", "transfer", "copy", "run"]
Stage = Literal["io", "xfer", "memmgmt", "compute"]
STAGE_OF_KIND: dict[str, Stage] = {"read": "io", "transfer": "xfer", "copy": "memmgmt", "run": "compute"}
NO_EXTENTS = np.zeros((0, 2), dtype=np.int64)


@dataclass(slots=True)
class Graph:
    """Jobs in insertion (= topological) order, one list per field. Add jobs with the four verbs; each returns
    the new job's index, to be named in later jobs' ``after``."""

    kind: list[Kind] = field(default_factory=list)
    payload: list[tuple] = field(default_factory=list)
    after: list[tuple[int, ...]] = field(default_factory=list)
    tag: list[str] = field(default_factory=list)
    stage: list[Stage] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.kind)

    def read(self, extents: np.ndarray, after: Sequence[int] = (), tag: str = "read", merge: bool = True) -> int:
        """Read ``extents`` from flash; ``merge``: adjacent extents become one request (False: one each)."""
        return self._add("read", (extents, merge), after, tag, "io")

    def transfer(self, src: str, dst: str, nbytes: float, after: Sequence[int] = (), tag: str = "xfer",
                 stage: Stage = "xfer") -> int:  # fmt: skip
        """Move ``nbytes`` from memory ``src`` to memory ``dst`` over the link that joins them."""
        return self._add("transfer", (src, dst, float(nbytes)), after, tag, stage)

    def copy(self, memory: str, nbytes: float, after: Sequence[int] = (), tag: str = "memcpy") -> int:
        """Copy ``nbytes`` within ``memory``."""
        return self._add("copy", (memory, float(nbytes)), after, tag, "memmgmt")

    def run(self, processor: str, ops: tuple[Op, ...], after: Sequence[int] = (), tag: str = "compute") -> int:
        """Run ``ops`` on ``processor`` (kernels in FIFO order behind earlier runs on it)."""
        return self._add("run", (processor, ops), after, tag, "compute")

    def _add(self, kind: Kind, payload: tuple, after: Sequence[int], tag: str, stage: Stage) -> int:
        index = len(self.kind)
        after = tuple(after)
        if after and (min(after) < 0 or max(after) >= index):
            bad = [dep for dep in after if not 0 <= dep < index]
            raise ValueError(f"job {index} ({tag}) waits for job {bad[0]}: only jobs added before it exist")
        self.kind.append(kind)
        self.payload.append(payload)
        self.after.append(after)
        self.tag.append(tag)
        self.stage.append(stage)
        return index

    def with_payloads(self, payloads: list[tuple]) -> Graph:
        """A graph with these jobs and dependencies but other payloads (one per job, same kinds)."""
        if len(payloads) != len(self.kind):
            raise ValueError(f"{len(payloads)} payloads for {len(self.kind)} jobs")
        return Graph(list(self.kind), payloads, list(self.after), list(self.tag), list(self.stage))
