"""``python -m sim trace {capture,stats,info,accuracy}``: make traces, look at them, measure accuracy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("trace", help="capture activation traces and compute their statistics")
    sub = p.add_subparsers(dest="trace_command", required=True, parser_class=type(p))

    cap = sub.add_parser("capture", help="run corpus prompts through the numpy model and record a trace")
    cap.add_argument("--model", default="smollm2-135m", help="known model name or GGUF path")
    cap.add_argument("--tasks", default=None, help="comma-separated tasks (code,docs,legal,literature); all if omitted")
    cap.add_argument("--contexts-per-task", type=int, default=None)
    cap.add_argument("--tokens", type=int, default=1024, help="total tokens, split evenly over the contexts")
    cap.add_argument("--fields", default="ffn_act,mlp_in", help="ffn_act,gate_neg,mlp_in,attn_in,q,k")
    cap.add_argument("--split", default="trace", choices=["trace", "heldout"])
    cap.add_argument("--chunk-tokens", type=int, default=256)
    cap.add_argument("--encode", action="append", default=[], metavar="FIELD=ENC",
                     help="storage encoding, e.g. ffn_act=log8:keep_top=0.2,steps=8 or mlp_in=int8c")  # fmt: skip
    cap.add_argument("--no-progress", action="store_true")
    cap.add_argument("--out", required=True)
    cap.set_defaults(func=_capture)

    st = sub.add_parser("stats", help="density, neuron use vs window, cross-layer overlap, hot-weight reuse")
    st.add_argument("trace")
    st.add_argument("--rule", action="append", default=None, help="threshold:S, topk:S, gate (repeatable)")
    st.add_argument("--max-k", type=int, default=16)
    st.add_argument("--channel-density", type=float, default=0.1, help="top-k fraction of mlp_in/attn_in channels")
    st.add_argument("--out", required=True)
    st.add_argument("--no-plots", action="store_true", help="skip experiments/plots/trace_stats.py")
    st.set_defaults(func=_stats)

    fit = sub.add_parser("statistics", help="measure a trace's activation statistics into a file projections use")
    fit.add_argument("trace")
    fit.add_argument("--rule", default="threshold:0.9", help="sparsity rule making masks (threshold:S, topk:S, gate)")
    fit.add_argument("--name", required=True, help="the statistics' name (activations.density: NAME)")
    fit.add_argument("--window-k", type=int, default=5, help="the window length the file states (1-8)")
    fit.add_argument("--predictor", help="a trained predictor file (predictors/): the file states its held-out quality")
    fit.add_argument("--predictor-recall", type=float, default=0.95, help="its recall target to state (default 0.95)")
    fit.add_argument("--out", required=True, help="the .yaml file to write (refused if it exists)")
    fit.set_defaults(func=_statistics)

    info = sub.add_parser("info", help="print a trace's manifest summary")
    info.add_argument("trace")
    info.set_defaults(func=_info)

    acc = sub.add_parser("accuracy", help="perplexity and greedy agreement vs FFN sparsity (experiment YAML)")
    acc.add_argument("experiment")
    acc.add_argument("--out", required=True)
    acc.set_defaults(func=_accuracy)


def _capture(args: argparse.Namespace) -> int:
    from sim.errors import ConfigError
    from sim.lab.capture import CaptureSpec, capture, parse_encoding

    encodings = {}
    for item in args.encode:
        name, _, enc = item.partition("=")
        try:
            encodings[name] = parse_encoding(enc)
        except (ValueError, TypeError) as err:
            raise ConfigError("<command line>", "--encode", str(err), item) from None
    spec = CaptureSpec(model=args.model, tokens=args.tokens, contexts_per_task=args.contexts_per_task,
                       tasks=tuple(args.tasks.split(",")) if args.tasks else None,
                       fields=tuple(args.fields.split(",")), split=args.split, chunk_tokens=args.chunk_tokens,
                       encodings=encodings)  # fmt: skip
    capture(spec, args.out, progress=not args.no_progress)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from sim.traces.format import TraceReader
    from sim.traces.report import write_stats

    rules = [_rule(r) for r in (args.rule or ["threshold:0.9"])]
    with TraceReader(args.trace) as reader:
        out = write_stats(reader, rules, Path(args.out), list(range(1, args.max_k + 1)), args.channel_density)
    if not args.no_plots:
        from sim.runner import PLOTS_DIR, run_plot

        run_plot(PLOTS_DIR / "trace_stats.py", Path(out))
    print(f"wrote {out}")
    return 0


def _rule(text: str):
    """A sparsity rule from the command line; a bad one is a one-line error."""
    from sim.errors import ConfigError
    from sim.traces.sparsity import SparsityRule

    try:
        return SparsityRule.parse(text)
    except ValueError as err:
        raise ConfigError("<command line>", "--rule", str(err), text) from None


def _statistics(args: argparse.Namespace) -> int:
    import shlex

    from sim.errors import ConfigError
    from sim.traces.source import TraceSource
    from sim.traces.statistics import fit_statistics, predictor_quality, write_statistics

    out = Path(args.out)
    if out.exists():
        raise ConfigError("<command line>", "--out", "exists; statistics files are never overwritten", str(out))
    if not 1 <= args.window_k <= 8:
        raise ConfigError("<command line>", "--window-k", "must be 1..8", str(args.window_k))
    rule = _rule(args.rule)
    quality = (
        predictor_quality(Path(args.predictor), args.predictor_recall, rule.describe()) if args.predictor else None
    )
    source = TraceSource(args.trace, rule)
    parts = [args.trace, "--rule", args.rule, "--name", args.name, "--window-k", str(args.window_k), "--out", args.out]
    if args.predictor:
        parts[-2:-2] = ["--predictor", args.predictor, "--predictor-recall", f"{args.predictor_recall:g}"]
    command = "python -m sim trace statistics " + " ".join(shlex.quote(a) for a in parts)
    model = source.reader.manifest.get("model", {})
    model_name = model.get("name", "?") if isinstance(model, dict) else str(model)
    stats = fit_statistics(source, args.name, model_name, command, args.window_k)
    if quality is not None:
        predictor, said = quality
        stats = stats.model_copy(update={"predictor": predictor, "source": f"{stats.source}; {said}"})
    write_statistics(out, stats)
    print(
        f"wrote {out}: mean density {sum(stats.density.points.values()) / len(stats.density.points):.2%}, "
        f"window k={stats.window.k}: {stats.window.fresh_fraction:.2%} fresh, {stats.window.held_fraction:.1%} held"
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from sim.traces.format import TraceReader

    with TraceReader(args.trace) as r:
        m = r.manifest
        summary = {k: m.get(k) for k in ("format_version", "model", "n_tokens", "chunk_tokens", "tasks", "command")}
        summary["fields"] = {f: v["encoding"] for f, v in m["fields"].items()}
        summary["contexts"] = [
            f"{c['id']}: {c.get('task', c['task_id'])}/{c.get('context', '?')} ({c['n_tokens']} tok)"
            for c in m.get("contexts", [])  # manifest.py types id, task_id and n_tokens; the rest is provenance
        ]
    print(json.dumps(summary, indent=1))
    return 0


def _accuracy(args: argparse.Namespace) -> int:
    from sim.lab.accuracy import run_accuracy

    run_accuracy(args.experiment, Path(args.out))
    return 0
