"""ActiveFlow's channel layouts as a real flash file: every input channel (column) of every op of every layer
placed where :class:`~sim.activeflow.channels.ChannelLayout` says, so a group preload of k channels is k reads of
``group x column_bytes`` -- the extents the simulator charges are the bytes this file serves.

A channel of op W [out, in] is column c, ``out`` values, stored contiguously (``column_bytes``); ops are q, k, v,
o, gate, up, down of the loader's float32 weights (down [d, d_ff]: its channels are the FFN neurons), cast to the
image dtype. The manifest (``PATH.json``) records the model profile, dtype, group and layout so
:meth:`ChannelImage.open` rebuilds the identical layout; :meth:`ChannelImage.verify_group` reads a group's
extents for chosen channels of every op and checks each layer's columns and the active-weights product
W[:, kept] @ x[kept] against the dense weights, bit for bit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.activeflow.channels import ChannelLayout, in_out
from sim.errors import SimError
from sim.lab.flash_image.reader import MissingExtentError
from sim.lab.flash_image.writer import FORMAT, IMAGE_DTYPES, manifest_path, refuse_foreign
from sim.lab.kernels.model import LayerWeights, Weights
from sim.layout import coalesce
from sim.models.profile import ModelProfile

CHANNEL_LAYOUTS = ("op_channel_layer", "layer_channel")
WEIGHT = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "gate", "up": "up", "down": "down"}


def op_weight(lw: LayerWeights, op: str) -> np.ndarray:
    """[out, in] the op's matrix: channel c is column c."""
    return getattr(lw, WEIGHT[op])


def channel_layout(profile: ModelProfile, dtype: str, name: str, group: int) -> ChannelLayout:
    if name not in CHANNEL_LAYOUTS:
        raise ValueError(f"channel layout must be one of {', '.join(CHANNEL_LAYOUTS)} (got {name!r})")
    return ChannelLayout(profile, dtype, group, grouped=name == "op_channel_layer")


def write_channel_image(weights: Weights, profile: ModelProfile, name: str, group: int, path: str | Path,
                        dtype: str) -> dict:  # fmt: skip
    """Write the image and its manifest atomically (temporary name, then rename); returns the manifest."""
    if dtype not in IMAGE_DTYPES:
        raise ValueError(f"flash image dtype must be one of {', '.join(IMAGE_DTYPES)} (got {dtype!r})")
    if len(weights.layers) != profile.n_layers or weights.layers[0].up.shape != (profile.d_ff, profile.d_model):
        raise ValueError(f"weights do not match profile {profile.name} (layers, d_ff, d_model)")
    layout, dt, path = channel_layout(profile, dtype, name, group), IMAGE_DTYPES[dtype], Path(path)
    refuse_foreign(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(layout.total_bytes,))
    for layer, lw in enumerate(weights.layers):
        for op in layout.ops:
            columns = np.ascontiguousarray(op_weight(lw, op).T, dtype=dt).view(np.uint8)  # [in, column_bytes]
            starts = layout.layer_extents(op, layer, np.arange(in_out(profile, op)[0]))[:, 0]
            img[starts[:, None] + np.arange(columns.shape[1])] = columns
    img.flush()
    del img
    manifest = {"format": FORMAT, "kind": "channels", "model": profile.model_dump(), "layout": name, "group": group,
                "dtype": dtype, "total_bytes": layout.total_bytes, "column_bytes": layout.column_bytes}  # fmt: skip
    os.replace(tmp, path)
    manifest_path(path).write_text(json.dumps(manifest, indent=1))
    return manifest


@dataclass(frozen=True)
class GroupCheck:
    first_layer: int
    n_reads: int  # one per channel per op (a grouped layout's extents hold the whole group)
    bytes_read: int
    bit_exact: bool


class ChannelImage:
    def __init__(self, path: Path, manifest: dict, layout: ChannelLayout):
        self.path, self.manifest, self.layout = path, manifest, layout
        self.np_dtype = IMAGE_DTYPES[manifest["dtype"]]

    @staticmethod
    def open(path: str | Path) -> ChannelImage:
        path, mpath = Path(path), manifest_path(path)
        if not path.is_file() or not mpath.is_file():
            raise SimError(f"{path}: flash image or its manifest {mpath.name} is missing")
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != FORMAT or manifest.get("kind") != "channels":
            raise SimError(f"{mpath}: not a channel-layout flash image manifest")
        profile = ModelProfile.model_validate(manifest["model"])
        layout = channel_layout(profile, manifest["dtype"], manifest["layout"], int(manifest["group"]))
        if path.stat().st_size != layout.total_bytes:
            raise SimError(f"{path}: size {path.stat().st_size} does not match its manifest ({layout.total_bytes})")
        return ChannelImage(path, manifest, layout)

    def read(self, extents: np.ndarray) -> dict[int, bytes]:
        """offset -> bytes of each extent, read one pread per merged range."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            merged = coalesce(extents)
            data = {int(o): os.pread(fd, int(n), int(o)) for o, n in merged}
        finally:
            os.close(fd)
        return data

    def columns(self, data: dict[int, bytes], op: str, layer: int, channels: np.ndarray) -> np.ndarray:
        """[out, k] float32 columns ``channels`` of ``op`` at ``layer`` from what was read (MissingExtentError if an
        extent was not)."""
        starts = sorted(data)
        out = []
        for off, length in self.layout.layer_extents(op, layer, channels):
            i = int(np.searchsorted(starts, off, side="right")) - 1
            if i < 0 or off + length > starts[i] + len(data[starts[i]]):
                raise MissingExtentError(f"channel extent [{off}, {off + length}) of {op} layer {layer} was not read")
            raw = data[starts[i]][off - starts[i] : off - starts[i] + length]
            out.append(np.frombuffer(raw, self.np_dtype))
        return np.stack(out, axis=1).astype(np.float32)  # [out, k]

    def verify_group(self, weights: Weights, first_layer: int, kept: dict[str, np.ndarray], x: dict[str, np.ndarray]
                     ) -> GroupCheck:  # fmt: skip
        """Read the group extents of ``kept[op]`` channels of every op; compare each layer's columns and the product
        W[:, kept] @ x[kept] (x[op]: [in]) with the dense weights at image precision."""
        lay = self.layout
        extents = np.concatenate([lay.group_extents(op, first_layer, kept[op]) for op in lay.ops])
        data = self.read(extents)
        exact = True
        for layer in range(first_layer, min(first_layer + lay.group, lay.model.n_layers)):
            for op in lay.ops:
                ch = kept[op]
                got = self.columns(data, op, layer, ch)
                ref = op_weight(weights.layers[layer], op)[:, ch].astype(self.np_dtype).astype(np.float32)
                ref = np.ascontiguousarray(ref)  # the same memory order as the columns read: the same BLAS sums
                exact &= np.array_equal(got, ref) and np.array_equal(got @ x[op][ch], ref @ x[op][ch])
        return GroupCheck(first_layer, len(extents), int(extents[:, 1].sum()), bool(exact))
