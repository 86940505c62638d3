"""Write model weights into a flash image laid out by a :class:`~sim.layout.BaseLayout`.

The file is exactly ``layout.total_bytes`` long. Embeddings and attention ops are stored whole, as the loader
gives them (``[out, in]``, row-major); every FFN row goes where ``layout.ffn_placement`` says: gate row i, up
row i and down COLUMN i (stored as a row) are each ``row_bytes`` of ``d_model`` values. Only unquantised dtypes
are written (``fp32``, ``fp16``): weights are the loader's dequantised float32 values, cast.

The manifest (``PATH.json``) records the model profile, layout name, dtype, sizes and, for the co-activation
layout, the friends array (``PATH.friends.npy``), so :class:`~sim.lab.flash_image.reader.FlashImage` can rebuild
the identical layout. Norm weights and RoPE frequencies are not part of the profile (a few KB, resident in any
real run): when the writer is given the model's :class:`ModelConfig` they go to ``PATH.small.npz`` and the config to
the manifest, so that the image alone can run the model (:mod:`sim.real.executor`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from sim.errors import SimError
from sim.lab.kernels.model import ModelConfig, Weights
from sim.layout import EMBEDDINGS, BaseLayout, CoactivationLayout
from sim.models.profile import ModelProfile

IMAGE_DTYPES = {"fp32": np.float32, "fp16": np.float16}
FORMAT = "sparse-llm-sim flash image v1"


def manifest_path(path: str | Path) -> Path:
    return Path(f"{path}.json")


def _check(weights: Weights, profile: ModelProfile, layout: BaseLayout, dtype: str) -> None:
    if dtype not in IMAGE_DTYPES:
        raise ValueError(f"flash image dtype must be one of {', '.join(IMAGE_DTYPES)} (got {dtype!r})")
    if layout.dtype != dtype or layout.model != profile:
        raise ValueError(f"layout is for {layout.model.name}/{layout.dtype}, image for {profile.name}/{dtype}")
    if len(weights.layers) != profile.n_layers or weights.layers[0].up.shape != (profile.d_ff, profile.d_model):
        raise ValueError(f"weights do not match profile {profile.name} (layers, d_ff, d_model)")
    if weights.layers[0].bq is not None:
        raise ValueError("flash images hold no q/k/v biases (a qwen2-style model)")
    if profile.n_experts != 1 or profile.max_positions_learned or not profile.gated:
        raise ValueError(f"flash images hold dense gated Llama-family models only (got {profile.name})")


def _put(img: np.memmap, offset: int, array: np.ndarray, dt: type) -> None:
    raw = np.ascontiguousarray(array, dtype=dt).view(np.uint8).reshape(-1)
    img[offset : offset + raw.size] = raw


def _ffn_rows(layer, op: str) -> np.ndarray:
    return {"gate": layer.gate, "up": layer.up, "down": layer.down.T}[op]  # [F, d]: row i = neuron i


def _write_layer(img: np.memmap, layout: BaseLayout, weights: Weights, i: int, dt: type) -> None:
    lw = weights.layers[i]
    for op, w in (("q", lw.wq), ("k", lw.wk), ("v", lw.wv), ("o", lw.wo)):
        ((off, _),) = layout.op_extents(i, [op])
        _put(img, int(off), w, dt)
    off, neuron, op_idx, _ = layout.ffn_placement(i)
    row = layout.row_bytes
    for j, op in enumerate(layout.ffn_ops):  # rows of one matrix, scattered in one vectorised assignment
        sel = op_idx == j
        data = np.ascontiguousarray(_ffn_rows(lw, op)[neuron[sel]], dtype=dt).view(np.uint8)  # [P, row]
        img[off[sel][:, None] + np.arange(row)] = data


def write_image(
    weights: Weights, profile: ModelProfile, layout: BaseLayout, path: str | Path, dtype: str,
    config: ModelConfig | None = None, random_seed: int | None = None,
) -> dict:  # fmt: skip
    """Write the image and its manifest atomically (temporary names, then rename); returns the manifest.
    ``config``: also store the config and the small tensors (norms, RoPE) so the image can be executed;
    ``random_seed``: the weights are :func:`random_weights` of this seed (recorded, so a reference can rebuild them)."""
    _check(weights, profile, layout, dtype)
    path, dt = Path(path), IMAGE_DTYPES[dtype]
    refuse_foreign(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(layout.total_bytes,))
    ((emb_off, _),) = layout.op_extents(EMBEDDINGS, ["embed"])
    _put(img, int(emb_off), weights.tok_embd, dt)
    if not profile.tied_embeddings:
        ((head_off, _),) = layout.op_extents(EMBEDDINGS, ["lm_head"])
        _put(img, int(head_off), weights.output, dt)
    for i in range(profile.n_layers):
        _write_layer(img, layout, weights, i, dt)
    img.flush()
    del img
    manifest = _manifest(profile, layout, dtype, path)
    manifest["random_seed"] = random_seed
    if config is not None:
        manifest["config"] = dataclasses.asdict(config)
        manifest["small_file"] = _write_small(weights, path)
    os.replace(tmp, path)
    manifest_path(path).write_text(json.dumps(manifest, indent=1))
    return manifest


def refuse_foreign(path: Path) -> None:
    """Never replace a file this tool did not write: an existing ``path`` must be an image with our manifest."""
    if path.is_dir():
        raise SimError(f"{path}: is a folder; give the image file's path")
    if not path.exists():
        return
    try:
        ours = json.loads(manifest_path(path).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise SimError(f"{path}: exists and is not a flash image written by this tool; refusing to overwrite it")


def random_weights(profile: ModelProfile, seed: int) -> tuple[ModelConfig, Weights]:
    """Random weights of a profile's shapes (a Llama-family block: SwiGLU, RMSNorm, RoPE theta 1e4, tied embeddings),
    normal with standard deviation 1/sqrt(d_model) so activations stay in range; the same seed, the same weights.
    For shapes no model file exists for: what a real run of them reads and computes is real, their outputs are not
    language."""
    if not profile.gated or profile.n_experts != 1 or profile.max_positions_learned:
        raise ValueError(f"random weights are for dense gated Llama-family shapes (got {profile.name})")
    cfg = ModelConfig("llama", profile.n_layers, profile.d_model, profile.d_ff, profile.n_heads, profile.n_kv_heads,
                      profile.head_dim, profile.vocab_size, 4096, tied_embeddings=True, name=profile.name)  # fmt: skip
    return cfg, Weights.random(cfg, np.random.default_rng(seed), scale=profile.d_model**-0.5)


def small_path(path: str | Path) -> Path:
    return Path(f"{path}.small.npz")


def _write_small(weights: Weights, path: Path) -> str:
    """Norms [L, d] x 2, the final norm [d] and RoPE inverse frequencies [hd/2], float32."""
    small = {
        "attn_norm": np.stack([lw.attn_norm for lw in weights.layers]),
        "ffn_norm": np.stack([lw.ffn_norm for lw in weights.layers]),
        "output_norm": weights.output_norm,
        "inv_freq": weights.inv_freq,
    }
    tmp = path.with_name(path.name + ".small.tmp.npz")
    np.savez(tmp, **small)
    os.replace(tmp, small_path(path))
    return small_path(path).name


def _manifest(profile: ModelProfile, layout: BaseLayout, dtype: str, path: Path) -> dict:
    friends_file = None
    if isinstance(layout, CoactivationLayout):
        friends_file = f"{path.name}.friends.npy"
        np.save(path.with_name(friends_file), layout.friends)
    return {
        "format": FORMAT,
        "model": profile.model_dump(),
        "layout": layout.name,
        "dtype": dtype,
        "total_bytes": layout.total_bytes,
        "row_bytes": layout.row_bytes,
        "neuron_bytes": layout.neuron_bytes,
        "ffn_ops": list(layout.ffn_ops),
        "down_stored_transposed": True,
        "friends_file": friends_file,
    }
