"""What a policy asks the engine to do for one layer of one token.

A policy is pure planning: it returns :class:`LayerPlan` objects (vectorised over layers inside the
policy) and never touches SimPy. The engine executes a plan as:

1. the **loader** issues ``preload`` when compute of layer ``issue_at`` *starts* (``issue_at = layer - 1``:
   the load overlaps the previous layer's compute; ``issue_at = layer``: no overlap; ``issue_at < 0``: at the
   start of the token). Layers whose weights arrive with another layer's read name it in ``ready_with``.
2. the **compute** process, for the layer: waits for the preload (``io_stall_s``), reads ``on_demand``
   extents (blocking, also ``io_stall_s``), runs ``transfers`` over links (``xfer_s``), copies
   ``memmgmt_bytes`` in DRAM (``memmgmt_s``) and runs ``ops`` on the processor (``compute_s``).

Devices know nothing of models: a plan speaks only in extents, bytes and :class:`~sim.devices.processor.Op`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.devices.processor import Op

NO_EXTENTS = np.zeros((0, 2), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Transfer:
    """Bytes moved over the link between two memories (e.g. ``dram`` -> ``vram``)."""

    src: str
    dst: str
    nbytes: float
    tag: str = "xfer"


@dataclass(slots=True)
class LayerPlan:
    layer: int
    issue_at: int
    preload: np.ndarray = field(default_factory=lambda: NO_EXTENTS)  # [n, 2] int64 (offset, length)
    ready_with: int | None = None
    on_demand: np.ndarray = field(default_factory=lambda: NO_EXTENTS)  # [n, 2] int64
    transfers: tuple[Transfer, ...] = ()
    memmgmt_bytes: float = 0.0
    coalesce: bool = True  # the reader merges adjacent extents into one request (False: one request each)
    ops: tuple[Op, ...] = ()
    processor: str = "cpu"
