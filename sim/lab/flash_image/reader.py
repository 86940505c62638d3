"""Read a flash image back, touching ONLY the byte extents the simulator charged.

:meth:`FlashImage.read_extents` reads each (merged) extent with ``os.pread`` and counts the bytes. From what was
read, :meth:`FlashImage.neurons` reconstructs the requested neurons' FFN rows: a row is usable only if it lies
entirely inside one read extent (any stored copy will do), and a requested neuron with any row not read raises
:class:`MissingExtentError` naming the layer and the neuron -- never a silent zero.

:meth:`FlashImage.verify_layer` then runs the sparse FFN kernel (``sim.lab.kernels.sparse.ffn_sparse``) on the
reconstructed rows and on the dense weights restricted to the same neurons (cast to the image dtype), and
compares both the rows and the outputs bit for bit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sim.errors import SimError
from sim.lab.flash_image.writer import FORMAT, IMAGE_DTYPES, manifest_path
from sim.lab.kernels.model import Weights
from sim.lab.kernels.sparse import ffn_sparse
from sim.layout import BaseLayout, build_layout, coalesce
from sim.models.profile import ModelProfile


class MissingExtentError(SimError):
    """A neuron was used whose bytes the simulator never charged (its extent was not read)."""


@dataclass(frozen=True)
class ReadBuffer:
    """What a read delivered: extent i's bytes are ``flat[starts[i] : starts[i] + extents[i, 1]]``."""

    extents: np.ndarray  # [n, 2] merged extents that were read, sorted by offset
    flat: np.ndarray  # [B] uint8 the bytes read (may hold more than the extents: an aligned reader's pages)
    starts: np.ndarray  # [n] int64 where each extent's first byte is in flat
    nbytes: int  # bytes of the extents (what was asked for)

    def bytes_of(self, offset: int, length: int) -> np.ndarray:
        """[length] uint8 of file bytes [offset, offset + length), which must lie inside one extent."""
        i = int(np.searchsorted(self.extents[:, 0], offset, side="right")) - 1
        if i < 0 or offset + length > self.extents[i, 0] + self.extents[i, 1]:
            raise MissingExtentError(f"bytes {offset}..{offset + length} were not read")
        at = int(self.starts[i] + offset - self.extents[i, 0])
        return self.flat[at : at + length]


@dataclass(frozen=True)
class VerifyResult:
    layer: int
    n_neurons: int
    bytes_read: int
    max_abs_diff: float
    bit_exact: bool


class FlashImage:
    def __init__(self, path: Path, manifest: dict, layout: BaseLayout):
        self.path, self.manifest, self.layout = path, manifest, layout
        self.np_dtype = IMAGE_DTYPES[manifest["dtype"]]
        self.bytes_read = 0

    @staticmethod
    def open(path: str | Path) -> FlashImage:
        path, mpath = Path(path), manifest_path(path)
        if not path.is_file() or not mpath.is_file():
            raise SimError(f"{path}: flash image or its manifest {mpath.name} is missing")
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != FORMAT:
            raise SimError(f"{mpath}: format: not a flash image manifest (got {manifest.get('format')!r})")
        if manifest.get("kind") == "channels":
            raise SimError(f"{path}: is a channel-layout image (ActiveFlow); sim.lab.flash_image.ChannelImage reads it")
        profile = ModelProfile.model_validate(manifest["model"])
        options = {}
        if manifest["friends_file"]:
            options["friends"] = np.load(path.with_name(manifest["friends_file"]))
        layout = build_layout(manifest["layout"], profile, manifest["dtype"], **options)
        if layout.total_bytes != manifest["total_bytes"] or path.stat().st_size != layout.total_bytes:
            raise SimError(f"{path}: size {path.stat().st_size} does not match its manifest ({layout.total_bytes})")
        return FlashImage(path, manifest, layout)

    def read_extents(self, extents: np.ndarray) -> ReadBuffer:
        """Read exactly these byte ranges (adjacent ones merged, as the flash device does)."""
        merged = coalesce(np.asarray(extents, np.int64).reshape(-1, 2))
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = [os.pread(fd, int(length), int(off)) for off, length in merged]  # one call per merged read
        finally:
            os.close(fd)
        nbytes = int(merged[:, 1].sum())
        self.bytes_read += nbytes
        starts = np.concatenate([[0], np.cumsum(merged[:, 1])[:-1]]).astype(np.int64)
        return ReadBuffer(merged, np.frombuffer(b"".join(data), np.uint8), starts, nbytes)

    def neurons(self, layer: int, buf: ReadBuffer, neurons: np.ndarray) -> dict[str, np.ndarray]:
        """Rows of ``neurons`` (sorted distinct indices) from what was read: op -> [k, d_model] float32 (down
        transposed)."""
        rows = ffn_rows(self.layout, layer, buf, neurons, self.np_dtype)
        return {op: np.ascontiguousarray(r, dtype=np.float32) for op, r in rows.items()}

    def verify_layer(self, weights: Weights, layer: int, neurons: np.ndarray, x: np.ndarray) -> VerifyResult:
        """Read neuron_extents(layer, neurons), rebuild those neurons, compare with the dense weights bit for bit."""
        neurons = np.unique(np.asarray(neurons, np.int64))
        buf = self.read_extents(self.layout.neuron_extents(layer, neurons))
        rows = self.neurons(layer, buf, neurons)
        lw, cast = weights.layers[layer], self._as_image_dtype
        gate, up, down = cast(lw.gate), cast(lw.up), cast(lw.down)  # dense, image precision
        k = np.arange(len(neurons))
        y_img, _ = ffn_sparse(x, rows["gate"], rows["up"], np.ascontiguousarray(rows["down"].T), k)
        y_ref, _ = ffn_sparse(x, gate, up, down, neurons)  # the dense weights restricted to the same neurons
        rows_equal = all(
            np.array_equal(rows[op], ref) for op, ref in (("gate", gate[neurons]), ("up", up[neurons]),
                                                          ("down", down[:, neurons].T))
        )  # fmt: skip
        diff = float(np.abs(y_img - y_ref).max(initial=0.0))
        return VerifyResult(layer, len(neurons), buf.nbytes, diff, rows_equal and np.array_equal(y_img, y_ref))

    def _as_image_dtype(self, w: np.ndarray) -> np.ndarray:
        return w.astype(self.np_dtype).astype(np.float32)


def ffn_rows(
    layout: BaseLayout, layer: int, buf: ReadBuffer, neurons: np.ndarray, dtype: type, placement: tuple | None = None
) -> dict[str, np.ndarray]:
    """op -> [k, d_model] rows (image ``dtype``; down transposed) of ``neurons`` (sorted distinct) of ``layer`` from
    what was read (:func:`row_starts`, then :func:`rows_at`). ``placement``: ``layout.ffn_placement(layer)`` if the
    caller keeps it."""
    return rows_at(layout, buf, row_starts(layout, layer, buf, neurons, placement), dtype)


def row_starts(
    layout: BaseLayout, layer: int, buf: ReadBuffer, neurons: np.ndarray, placement: tuple | None = None
) -> np.ndarray:
    """[k, n_ops] where each FFN row of ``neurons`` starts in ``buf.flat``. A row is usable only if it lies entirely
    inside one read extent (any stored copy will do); a neuron with any row not read raises
    :class:`MissingExtentError`."""
    off, neuron, op_idx, _ = placement if placement is not None else layout.ffn_placement(layer)
    row = layout.row_bytes
    ends = buf.extents[:, 0] + buf.extents[:, 1]
    which = np.searchsorted(buf.extents[:, 0], off, side="right") - 1  # [P] extent that could hold each row
    usable = (which >= 0) & (off + row <= ends[np.maximum(which, 0)])
    where = np.full((layout.n_neurons, len(layout.ffn_ops)), -1, np.int64)  # usable placement row per (neuron, op)
    where[neuron[usable], op_idx[usable]] = np.flatnonzero(usable)
    p = where[neurons]  # [k, n_ops] placement rows
    missing = (p < 0).any(axis=1)
    if missing.any():
        raise MissingExtentError(
            f"layer {layer}: neuron {int(neurons[missing][0])} was used but its extent was not read "
            f"({int(missing.sum())} of {len(neurons)} neurons missing)"
        )
    return off[p] + (buf.starts - buf.extents[:, 0])[which[p]]


def rows_at(layout: BaseLayout, buf: ReadBuffer, start: np.ndarray, dtype: type) -> dict[str, np.ndarray]:
    """op -> [k, d] rows starting at ``start`` [k, n_ops] in ``buf.flat``: an op whose rows lie back to back is a
    view of the buffer (no copy), otherwise its rows are gathered."""
    row, d, k = layout.row_bytes, layout.model.d_model, start.shape[0]
    out = {}
    for j, op in enumerate(layout.ffn_ops):
        first = int(start[0, j]) if k else 0
        if k and start[-1, j] - first == row * (k - 1) and np.array_equal(start[:, j], first + row * np.arange(k)):
            out[op] = buf.flat[first : first + k * row].view(dtype).reshape(k, d)  # back to back: a view
        else:
            out[op] = sliding_window_view(buf.flat, row)[start[:, j]].view(dtype).reshape(k, d)  # a row gather
    return out
