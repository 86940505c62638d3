"""``python -m sim predictor train ...`` (low-rank predictor on the real model) and ``predictor info FILE``."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("predictor", help="train and inspect low-rank activation predictors (LLM in a Flash)")
    sub = p.add_subparsers(dest="predictor_command", required=True, parser_class=type(p))
    tr = sub.add_parser("train", help="capture the model's FFN inputs/activations on corpus text and train")
    tr.add_argument("--model", default="smollm2-135m", help="known model name or GGUF path")
    tr.add_argument("--rank", type=int, default=32)
    tr.add_argument("--tokens", type=int, default=3072, help="training tokens (corpus split 'trace')")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--rule", default="threshold:0.9", help="what counts as active: threshold:S or topk:S")
    tr.add_argument("--recall-targets", default="0.8,0.9,0.95,0.99", help="one threshold row per target")
    tr.add_argument("--heldout-tokens", type=int, default=512, help="evaluation tokens (corpus split 'heldout')")
    tr.add_argument("--skip-tokens", type=int, default=64, help="leading tokens per context not trained on")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-progress", action="store_true")
    tr.add_argument("--out", required=True, help="predictor file (.npz)")
    tr.set_defaults(func=_train)
    info = sub.add_parser("info", help="print a predictor file's metadata and held-out quality")
    info.add_argument("file")
    info.set_defaults(func=_info)


def _train(args: argparse.Namespace) -> int:
    from sim.errors import ConfigError
    from sim.lab.lif.train import TrainSpec, train_predictor

    try:
        targets = tuple(float(r) for r in args.recall_targets.split(","))
    except ValueError:
        reason = "expected numbers like 0.9,0.95"
        raise ConfigError("<command line>", "--recall-targets", reason, args.recall_targets) from None
    bad = [r for r in targets if not 0 < r <= 1]
    if bad:
        raise ConfigError("<command line>", "--recall-targets", "each target must be in (0, 1]", bad[0])
    for flag in ("rank", "tokens", "epochs", "heldout_tokens"):
        if getattr(args, flag) < 1:
            raise ConfigError("<command line>", f"--{flag.replace('_', '-')}", "must be >= 1", getattr(args, flag))
    spec = TrainSpec(model=args.model, rank=args.rank, tokens=args.tokens, epochs=args.epochs, rule=args.rule,
                     recall_targets=targets, heldout_tokens=args.heldout_tokens, skip_tokens=args.skip_tokens,
                     seed=args.seed)  # fmt: skip
    train_predictor(spec, args.out, progress=not args.no_progress)
    return 0


def _info(args: argparse.Namespace) -> int:
    import numpy as np

    from sim.errors import ConfigError

    try:
        with np.load(args.file) as f:
            meta, ranks, shape = json.loads(str(f["meta"])), f["ranks"], f["shape"].tolist()
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(args.file, "", f"not a predictor file ({type(err).__name__})") from None
    print(f"file       {args.file}\nshape      layers={shape[0]} d_model={shape[1]} d_ff={shape[2]}")
    print(f"ranks      {sorted(set(ranks.tolist()))}\nrule       {meta['rule']}\ncommand    {meta['command']}")
    for target, q in meta["heldout_quality"].items():
        print(f"recall target {target}: held-out precision {q['precision']:.3f} recall {q['recall']:.3f} "
              f"FN {q['fn_rate']:.3f} predicted {q['predicted_fraction']:.3f}")  # fmt: skip
    return 0
