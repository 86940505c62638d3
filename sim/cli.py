"""``python -m sim COMMAND ...``: each command lives in ``sim/commands/NAME.py``, is listed in ``COMMANDS`` and
provides ``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.

User errors (:class:`sim.errors.SimError`) print as one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys

from sim.commands import calibrate, execute, flash_image, model, predictor, profiles, run, trace
from sim.errors import SimError

COMMANDS = (
    calibrate,
    execute,
    flash_image,
    model,
    predictor,
    profiles,
    run,
    trace,
)  # in the order `python -m sim --help` lists them


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints usage; keep one line
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m sim",
        description="Discrete-event simulator of storage and memory hierarchies for sparse LLM inference.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def _terminate(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: partial results folders are removed on the way out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `python -m sim profiles | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
