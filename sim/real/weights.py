"""What a real run holds in DRAM, by content and by bytes, within the experiment's budget.

:class:`ImageWeights` serves every weight a layer computes with from one of three places, in this order:

- **resident** arrays loaded at set-up, as the policy's :meth:`~sim.policies.base.Executable.held` says (the
  embedding table, each layer's q k v o, FFN neurons a hybrid keeps);
- **the window**: one preallocated row matrix per layer ``[capacity, n_ops, d]`` mirroring the policy's
  :class:`~sim.lif.memmgmt.NeuronMatrix` row for row; each step the rows the policy moved are copied for real
  (:meth:`ImageWeights.window_moves`, memory management) and the rows it appended are filled from the step's reads
  (:meth:`ImageWeights.window_appends`);
- **this step's reads** (:class:`~sim.lab.flash_image.reader.ReadBuffer`), dropped when the step ends.

A weight in none of them raises :class:`~sim.lab.flash_image.reader.MissingExtentError`: the real run computes
only with bytes the simulated plan charged. Arrays stay in the image's dtype (fp16 rows are cast when a kernel
uses them, as part of compute). Resident arrays and window matrices are counted against the DRAM budget
(``CapacityError`` past it); read buffers are not (as the simulator does not count streaming buffers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.errors import CapacityError
from sim.lab.flash_image.reader import FlashImage, MissingExtentError, ReadBuffer, ffn_rows, row_starts, rows_at
from sim.lab.flash_image.writer import small_path
from sim.lab.kernels.model import ModelConfig
from sim.layout import EMBEDDINGS
from sim.policies.base import Held
from sim.real.odirect import DirectReader
from sim.units import format_bytes


@dataclass(frozen=True)
class WindowStep:
    dst: np.ndarray  # [m] rows written by copies
    src: np.ndarray  # [m] rows they copy
    appended: np.ndarray  # [a] neurons appended (filled from the reads)


def join_buffers(bufs: list[ReadBuffer]) -> ReadBuffer | None:
    """One buffer holding several reads' extents (sorted), or None for no reads."""
    if len(bufs) <= 1:
        return bufs[0] if bufs else None
    flat = np.concatenate([b.flat for b in bufs])
    base = np.cumsum([0] + [b.flat.size for b in bufs[:-1]])
    ext = np.concatenate([b.extents for b in bufs])
    starts = np.concatenate([b.starts + o for b, o in zip(bufs, base, strict=True)])
    order = np.argsort(ext[:, 0], kind="stable")
    return ReadBuffer(ext[order], flat, starts[order], sum(b.nbytes for b in bufs))


class ImageWeights:
    """Weights of a model served from a flash image into a DRAM budget; see the module docstring."""

    def __init__(self, image: FlashImage, reader: DirectReader, budget_bytes: float | None):
        if "config" not in image.manifest:
            raise MissingExtentError(f"{image.path}: written without the model config and norms; write it again "
                                     "with python -m sim flash-image write")  # fmt: skip
        self.image, self.reader, self.budget = image, reader, budget_bytes
        self.cfg = ModelConfig(**image.manifest["config"])
        self.layout, self.dtype = image.layout, image.np_dtype
        with np.load(small_path(image.path)) as small:
            self.attn_norm, self.ffn_norm = small["attn_norm"], small["ffn_norm"]  # [L, d] each
            self.output_norm, self.inv_freq = small["output_norm"], small["inv_freq"]  # [d], [hd/2]
        self.tenants: dict[str, int] = {}
        self.ops: dict[tuple[int, str], np.ndarray] = {}  # resident whole ops: (layer, op) -> [out, in]
        self.static: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []  # per layer: (neurons [r], op -> [r, d])
        self.matrix: list[np.ndarray] = []  # per layer: window rows [capacity, n_ops, d]
        self.slot: np.ndarray | None = None  # [L, n] int64 row of each neuron in its window matrix, -1: absent
        self.rows_at: np.ndarray | None = None  # [L, width] neuron in each window row, -1: free
        self._placement = [self.layout.ffn_placement(layer) for layer in range(self.cfg.n_layers)]  # where rows live
        self._starts: dict[int, tuple[tuple, np.ndarray]] = {}  # layer -> (buffer layout, row starts)
        self._op_extent: dict[tuple[int, str], tuple[int, int]] = {}  # (layer, op) -> (offset, length) on flash

    # ---- set-up -------------------------------------------------------------------------------------------------
    def load(self, held: Held, window_capacity: np.ndarray | None) -> None:
        """Read what the policy holds (untimed set-up) and allocate the window's matrices (``window_capacity`` [L]
        rows each, as the policy preallocated them)."""
        cfg, lay = self.cfg, self.layout
        if held.embeddings:
            self._hold_op(EMBEDDINGS, "embed", (cfg.vocab_size, cfg.d_model))
        for layer in range(cfg.n_layers):
            if held.attention:
                for op, shape in self.attention_shapes().items():
                    self._hold_op(layer, op, shape)
            neurons = np.asarray(held.ffn[layer], np.int64)
            rows = {}
            if len(neurons):
                buf = self.reader.read(lay.neuron_extents(layer, neurons), keep=True)
                got = ffn_rows(lay, layer, buf, neurons, self.dtype, self._placement[layer])
                rows = {op: np.array(r) for op, r in got.items()}
                self._count(f"ffn L{layer}", sum(r.nbytes for r in rows.values()))
            self.static.append((neurons, rows))
        if window_capacity is not None:
            for rows in window_capacity.tolist():
                self.matrix.append(np.zeros((rows, len(lay.ffn_ops), cfg.d_model), self.dtype))
            self._count("ffn_window", sum(m.nbytes for m in self.matrix))
            self.slot = np.full((cfg.n_layers, lay.n_neurons), -1, np.int64)
            self.rows_at = np.full((cfg.n_layers, int(window_capacity.max(initial=0))), -1, np.int64)

    def attention_shapes(self) -> dict[str, tuple[int, int]]:
        c = self.cfg
        return {"q": (c.q_dim, c.d_model), "k": (c.kv_dim, c.d_model), "v": (c.kv_dim, c.d_model),
                "o": (c.d_model, c.q_dim)}  # fmt: skip

    def _hold_op(self, layer: int, op: str, shape: tuple[int, int]) -> None:
        ((off, length),) = self.layout.op_extents(layer, [op])
        raw = self.reader.read(np.array([[off, length]]), keep=True).bytes_of(int(off), int(length))
        self.ops[(layer, op)] = np.array(raw.view(self.dtype).reshape(shape))
        self._count("embeddings" if layer == EMBEDDINGS else f"attention L{layer}", self.ops[(layer, op)].nbytes)

    def _count(self, tenant: str, nbytes: int) -> None:
        self.tenants[tenant] = self.tenants.get(tenant, 0) + int(nbytes)
        if self.budget is not None and self.held_bytes > self.budget:
            raise CapacityError(f"real run: holding {tenant} takes DRAM to {format_bytes(self.held_bytes)}, over the "
                                f"budget of {format_bytes(self.budget)}")  # fmt: skip

    @property
    def held_bytes(self) -> int:
        return sum(self.tenants.values())

    # ---- per step -----------------------------------------------------------------------------------------------
    def op(self, layer: int, op: str, shape: tuple[int, int], buf: ReadBuffer | None) -> np.ndarray:
        """A whole op [out, in] (image dtype): resident, or from this step's reads."""
        found = self.ops.get((layer, op))
        if found is not None:
            return found
        off, length = self._extent(layer, op)
        if buf is None:
            raise MissingExtentError(f"layer {layer}: op {op} is neither resident nor read this step")
        return buf.bytes_of(int(off), int(length)).view(self.dtype).reshape(shape)

    def _extent(self, layer: int, op: str) -> tuple[int, int]:
        found = self._op_extent.get((layer, op))
        if found is None:
            ((off, length),) = self.layout.op_extents(layer, [op])
            found = self._op_extent[(layer, op)] = (int(off), int(length))
        return found

    def ffn(self, layer: int, neurons: np.ndarray | None, buf: ReadBuffer | None) -> list[dict[str, np.ndarray]]:
        """The rows of ``neurons`` (sorted; None: all) as parts, each op -> [k, d] (image dtype; down transposed):
        the resident rows, the window's and this step's reads each give one part of the neurons they hold (a part
        from one place is a view or one gather; parts are never copied together -- the FFN is a sum over neurons,
        so the caller sums the parts' outputs). A neuron in none of them raises MissingExtentError."""
        want = np.arange(self.layout.n_neurons) if neurons is None else np.asarray(neurons, np.int64)
        parts, todo = [], np.ones(len(want), bool)
        static_idx, static_rows = self.static[layer]
        if len(static_idx) and len(want):
            pos = np.minimum(np.searchsorted(static_idx, want), len(static_idx) - 1)
            hit = static_idx[pos] == want
            if hit.all() and len(static_idx) == len(want):
                return [static_rows]  # all resident, in order: the arrays themselves
            if hit.any():
                at = pos[hit]
                run = at[-1] - at[0] + 1 == len(at)  # consecutive resident rows (a hybrid's first neurons): a view
                take = slice(int(at[0]), int(at[-1]) + 1) if run else at
                parts.append({op: rows[take] for op, rows in static_rows.items()})
            todo &= ~hit
        if self.slot is not None and todo.any():
            slot = self.slot[layer, want]
            hit = todo & (slot >= 0)
            if hit.any():
                rows = self.matrix[layer][slot[hit]]  # [k, n_ops, d] one gather from the window's matrix
                parts.append({op: rows[:, j] for j, op in enumerate(self.layout.ffn_ops)})
            todo &= ~hit
        if todo.any():
            if buf is None:
                raise MissingExtentError(f"layer {layer}: neuron {int(want[todo][0])} is neither resident nor read")
            parts.append(rows_at(self.layout, buf, self._row_starts(layer, buf, want[todo]), self.dtype))
        return parts or [{op: np.zeros((0, self.cfg.d_model), self.dtype) for op in self.layout.ffn_ops}]

    def _row_starts(self, layer: int, buf: ReadBuffer, neurons: np.ndarray) -> np.ndarray:
        """:func:`row_starts`, remembered for the last buffer layout of each layer (a dense policy's reads are the
        same extents every step, so their rows are found once, not per step)."""
        key = (buf.extents.tobytes(), buf.starts.tobytes(), neurons.tobytes())
        found = self._starts.get(layer)
        if found is None or found[0] != key:
            found = self._starts[layer] = (key, row_starts(self.layout, layer, buf, neurons, self._placement[layer]))
        return found[1]

    def window_step(self, layer: int, target: np.ndarray) -> WindowStep:
        """What the policy did to ``layer``'s matrix this step (``target`` [width]: its neuron per row after the
        step), as rows to copy and neurons appended; updates the row bookkeeping (the policy's own work, done
        when it plans the step -- not memory management)."""
        keep = np.flatnonzero(target >= 0)
        neurons = target[keep]  # [r]
        old = self.slot[layer, neurons]  # [r] row before the step, -1: appended
        moved = (old >= 0) & (old != keep)
        gone = self.rows_at[layer][self.rows_at[layer] >= 0]
        self.slot[layer, gone] = -1
        self.slot[layer, neurons] = keep
        self.rows_at[layer] = target
        return WindowStep(keep[moved], old[moved], neurons[old < 0])

    def window_moves(self, layer: int, step: WindowStep) -> None:
        """Memory management for real: copy the moved rows inside the layer's matrix (sources are read before any
        destination is written)."""
        m = self.matrix[layer]
        m[step.dst] = m[step.src]

    def window_appends(self, layer: int, neurons: np.ndarray, buf: ReadBuffer | None) -> None:
        """Fill the rows of appended ``neurons`` from this step's reads."""
        if not len(neurons):
            return
        if buf is None:
            raise MissingExtentError(f"layer {layer}: neuron {int(neurons[0])} entered the window but was not read")
        order = np.sort(neurons)
        got = ffn_rows(self.layout, layer, buf, order, self.dtype, self._placement[layer])
        rows = self.slot[layer, order]
        for j, op in enumerate(self.layout.ffn_ops):
            self.matrix[layer][rows, j] = got[op]
