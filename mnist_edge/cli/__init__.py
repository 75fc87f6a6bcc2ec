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
COMMANDS = ["list", "train", "export", "verify", "predict", "bench", "card", "demo"]


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
    from mnist_edge.io import forget_replaced

    parser = build_parser()
    args = parser.parse_args(argv)
    forget_replaced()
    try:
        result = args.func(args)
    except MnistEdgeError as e:
        if args.debug:
            raise
        print(f"mnist-edge {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file system failure no library call translated (disk full, I/O error)
        if args.debug:
            raise
        print(f"mnist-edge {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mnist-edge {args.command}: {interrupted_message()}", file=sys.stderr)
        return 130
    if argv is None:  # the real command line (tests pass argv and keep their own Ctrl-C)
        _finish_quietly()
    return int(result or 0)


def interrupted_message() -> str:
    """What is true after Ctrl-C: which files this command had already replaced (complete), if any."""
    from mnist_edge.io import replaced_paths

    done = replaced_paths()
    if not done:
        return "interrupted; earlier files are unchanged"
    return (f"interrupted after replacing {', '.join(done)} (complete and in place); "
            "files not named here are unchanged")


def _finish_quietly() -> None:
    """The command has finished and said so: a Ctrl-C during interpreter shutdown must not print a trace
    of an ignored exception over a successful exit."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
