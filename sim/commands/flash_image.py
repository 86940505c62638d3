"""``python -m sim flash-image write|verify``: lay a real model out in a flash file; check the charged extents.

write   --model smollm2-135m --layout bundled --dtype fp16 --out PATH [--trace T --rule topk:0.9]
        --layout op_channel_layer --group 4 (ActiveFlow's channel layouts: op_channel_layer, layer_channel)
verify  --image PATH [--model smollm2-135m] [--density 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sim.activeflow.channels import in_out
from sim.config.profiles import load_model as load_profile
from sim.errors import ConfigError
from sim.lab.flash_image import (
    CHANNEL_LAYOUTS,
    IMAGE_DTYPES,
    ChannelImage,
    FlashImage,
    manifest_path,
    random_weights,
    write_channel_image,
    write_image,
)
from sim.layout import LAYOUT_NAMES, build_layout


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("flash-image", help="write a real model into a flash image; verify reads")
    sub = parser.add_subparsers(dest="flash_image_command", required=True)
    w = sub.add_parser("write", help="lay the model's (dequantised) weights out in a file in a layout")
    w.add_argument("--model", default="smollm2-135m", help="known model name (profile and GGUF)")
    w.add_argument("--layout", choices=[*LAYOUT_NAMES, *CHANNEL_LAYOUTS], default="bundled")
    w.add_argument("--group", type=int, default=4, help="layers per group of the channel layouts")
    w.add_argument("--dtype", choices=sorted(IMAGE_DTYPES), default="fp16")
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--trace", type=Path, help="trace for the coactivation layout's friends")
    w.add_argument("--rule", default="topk:0.9", help="sparsity rule for --trace (e.g. topk:0.9, gate)")
    w.add_argument("--trace-tokens", type=int, default=2048, help="trace tokens used for friends")
    w.add_argument("--random-seed", type=int, help="random weights of the --model profile's shapes (no model file)")
    w.set_defaults(func=_write)
    v = sub.add_parser("verify", help="read random neurons' extents back and compare bit for bit")
    v.add_argument("--image", type=Path, required=True)
    v.add_argument("--model", default="smollm2-135m", help="GGUF the image was written from")
    v.add_argument("--density", type=float, default=0.1, help="fraction of each layer's neurons (channels) read")
    v.add_argument("--seed", type=int, default=0)
    v.set_defaults(func=_verify)


def _load(model: str):
    from sim.lab.modelfile.gguf_load import load_model

    cfg, weights = load_model(model)
    return cfg, weights


def _friend_masks(args: argparse.Namespace) -> np.ndarray:
    from sim.traces.format import TraceReader
    from sim.traces.report import fit_rule
    from sim.traces.sparsity import SparsityRule

    if args.trace is None:
        raise ConfigError("--layout", "coactivation", "needs --trace to compute co-activation friends")
    with TraceReader(args.trace) as reader:
        fitted = fit_rule(reader, SparsityRule.parse(args.rule))
        return fitted.mask(reader.read(fitted.rule.field, 0, args.trace_tokens))  # [T, L, F]


def _write(args: argparse.Namespace) -> int:
    profile = load_profile(args.model, "--model", "model")
    if args.random_seed is not None:
        if args.random_seed < 0:
            raise ConfigError("--random-seed", "", "must be >= 0", args.random_seed)
        try:
            cfg, weights = random_weights(profile, args.random_seed)
        except ValueError as err:
            raise ConfigError("--model", "model", str(err), args.model) from None
    else:
        cfg, weights = _load(args.model)
    if (cfg.n_layers, cfg.d_model, cfg.d_ff) != (profile.n_layers, profile.d_model, profile.d_ff):
        raise ConfigError("--model", "model", "GGUF shapes differ from the profile", args.model)
    if args.layout in CHANNEL_LAYOUTS:
        if not 1 <= args.group <= profile.n_layers:
            raise ConfigError("--group", "", f"must be 1 to {profile.n_layers} layers", args.group)
        manifest = write_channel_image(weights, profile, args.layout, args.group, args.out, args.dtype)
        sizes = ", ".join(f"{op} {n * (args.group if args.layout == 'op_channel_layer' else 1)} B"
                          for op, n in manifest["column_bytes"].items())  # fmt: skip
        print(f"wrote {args.out}: {manifest['total_bytes']} bytes, layout {args.layout}, group {args.group}")
        print(f"a channel's group read: {sizes}; manifest {args.out}.json")
        return 0
    options = {"masks": _friend_masks(args)} if args.layout == "coactivation" else {}
    layout = build_layout(args.layout, profile, args.dtype, **options)
    manifest = write_image(weights, profile, layout, args.out, args.dtype, cfg, args.random_seed)
    print(f"wrote {args.out}: {manifest['total_bytes']} bytes, layout {args.layout}, dtype {args.dtype}")
    print(f"row {manifest['row_bytes']} B, neuron bundle {manifest['neuron_bytes']} B; manifest {args.out}.json")
    return 0


def _verify(args: argparse.Namespace) -> int:
    if _is_channel_image(args.image):
        return _verify_channels(args)
    img = FlashImage.open(args.image)
    _, weights = _load(args.model)
    rng = np.random.default_rng(args.seed)
    lay = img.layout
    ok = True
    for layer in range(lay.model.n_layers):
        neurons = np.flatnonzero(rng.random(lay.n_neurons) < args.density)
        x = rng.standard_normal(lay.model.d_model).astype(np.float32)
        res = img.verify_layer(weights, layer, neurons, x)
        ok &= res.bit_exact
        print(f"layer {layer:3d}  neurons {res.n_neurons:5d}  {res.bytes_read:10d} B  bit_exact {res.bit_exact}")
    print(f"{'OK' if ok else 'MISMATCH'}: {img.bytes_read} bytes read of {lay.total_bytes}")
    return 0 if ok else 1


def _is_channel_image(path: Path) -> bool:
    try:
        return json.loads(manifest_path(path).read_text()).get("kind") == "channels"
    except (OSError, ValueError, AttributeError):
        return False  # FlashImage.open says what is wrong


def _verify_channels(args: argparse.Namespace) -> int:
    """Per group: ``density`` of every op's channels (ActiveFlow's kept channels), read as the group's extents."""
    img = ChannelImage.open(args.image)
    _, weights = _load(args.model)
    rng, lay, ok, total = np.random.default_rng(args.seed), img.layout, True, 0
    for first in range(0, lay.model.n_layers, lay.group):
        kept, x = {}, {}
        for op in lay.ops:
            n_in = in_out(lay.model, op)[0]
            kept[op] = np.sort(rng.choice(n_in, max(1, int(args.density * n_in)), replace=False))
            x[op] = rng.standard_normal(n_in).astype(np.float32)
        res = img.verify_group(weights, first, kept, x)
        ok &= res.bit_exact
        total += res.bytes_read
        print(
            f"group at layer {first:3d}  reads {res.n_reads:6d}  read {res.bytes_read:10d} B  bit_exact {res.bit_exact}"
        )
    print(f"{'OK' if ok else 'MISMATCH'}: {total} bytes read of {lay.total_bytes}")
    return 0 if ok else 1
