"""The `mnist-edge` command: a thin argparse layer; each subcommand lives in its own module here.

Each command module defines ``register(subparsers)`` which adds its parser and sets ``func`` to a
function taking the parsed namespace; that function calls one library function with keyword
arguments. Modules here must not import torch at import time (``--help`` works without it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mnist_edge import __version__
from mnist_edge.errors import MnistEdgeError

# command name -> module in mnist_edge.cli (order is the order in --help)
COMMANDS = ["list", "train", "export", "quantize", "verify", "predict", "bench", "card", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-edge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mnist-edge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mnist_edge.cli.{name}_cmd")
        except ModuleNotFoundError as e:  # a command whose module is not written yet
            if e.name != f"mnist_edge.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except MnistEdgeError as e:
        if args.debug:
            raise
        print(f"mnist-edge {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mnist-edge {args.command}: interrupted; earlier files are unchanged", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
