"""``rlvr-lens`` command line: thin layers over the library, one module per command.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` to a function ``(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rlvr_lens import __version__
from rlvr_lens.cli.common import run_guarded

#: Command modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "rlvr_lens.cli.demo",
    "rlvr_lens.cli.audit",
    "rlvr_lens.cli.perplexity",
    "rlvr_lens.cli.contamination",
    "rlvr_lens.cli.tokens",
    "rlvr_lens.cli.weights",
    "rlvr_lens.cli.circuits",
    "rlvr_lens.cli.steer",
    "rlvr_lens.cli.scoreboard",
    "rlvr_lens.cli.train",
    "rlvr_lens.cli.organism",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlvr-lens",
        description="What did RL with verifiable rewards change inside a language model, "
        "and is the gain reasoning or memorization?",
    )
    parser.add_argument("--version", action="version", version=f"rlvr-lens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rlvr_lens.cli.config import parse_command_line
    from rlvr_lens.errors import UserError

    parser = build_parser()
    try:
        args = parse_command_line(parser, sys.argv[1:] if argv is None else list(argv))
    except UserError as error:  # a bad --config file
        print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
