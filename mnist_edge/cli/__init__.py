"""The `mnist-edge` command: a thin argparse layer; each subcommand lives in its own module here.

Each command module defines ``register(subparsers)`` which adds its parser (through :func:`add_command`:
a one-line purpose, a description and one to three examples) and sets ``func`` to a function taking the
parsed namespace; that function calls one library function with keyword arguments. Modules here must
not import torch at import time (``--help`` works without it).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
import textwrap

from mnist_edge.version import __version__
from mnist_edge.errors import MnistEdgeError
from mnist_edge.system.extras import COMMAND_EXTRAS, EXTRAS, install_hint

# command name -> module in mnist_edge.cli (order is the order in --help)
COMMANDS = ["list", "data", "train", "export", "quantize", "verify", "predict", "bench", "robustness", "card",
            "demo"]
# Needs no extra but files that only a source checkout has (the wheel does not carry them).
CHECKOUT_ONLY = {"demo": "a source checkout (examples/web, after npm ci there)"}
EPILOG = ("A runtime-only install (numpy + onnxruntime) runs list, verify, bench, robustness and, with the 'images' extra "
          "(Pillow), predict; quantize needs the 'quantize' extra (onnx); train, export and card need the 'train' "
          "extra (torch, onnx, onnxscript). "
          "See docs/install.md.")


class _MarkedCommands:
    """What each command module's ``register`` receives: the subparsers, with the help of a command that
    needs an extra (or a checkout) marked, so --help says so before anyone runs it."""

    def __init__(self, sub):
        self._sub = sub

    def __getattr__(self, attr):  # choices, ... of the real subparsers action
        return getattr(self._sub, attr)

    def add_parser(self, name, **kwargs):
        if name in COMMAND_EXTRAS:
            extra = COMMAND_EXTRAS[name]
            note = f"needs the '{extra}' extra"
            more = (f"Needs the '{extra}' extra ({', '.join(p for _, p in EXTRAS[extra])}): "
                    f"{install_hint(extra)}.")
        elif name in CHECKOUT_ONLY:
            note = f"needs {CHECKOUT_ONLY[name]}"
            more = f"Needs {CHECKOUT_ONLY[name]}."
        else:
            return self._sub.add_parser(name, **kwargs)
        kwargs["help"] = f"{kwargs['help']} [{note}]" if kwargs.get("help") else f"[{note}]"
        kwargs["description"] = (kwargs.get("description") or "") + "\n\n" + textwrap.fill(more, 100)
        return self._sub.add_parser(name, **kwargs)


DESCRIPTION = """Train MNIST digit classifiers by their published recipes, export them to TorchScript, ONNX and
int8 ONNX (every file checked against PyTorch), and classify digits with only numpy and onnxruntime.

Start with one of these (run `mnist-edge COMMAND --help` for a command's options and examples):
  mnist-edge predict my_digit.png              classify an image with the committed bn_cnn model
  mnist-edge list                              the models you can train and export
  mnist-edge export --model bn_cnn --quantize  re-export a model, every check against PyTorch
"""


class Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean" for a mistyped option (``--quantise`` -> ``--quantize``)."""

    def parse_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message):
        bad = re.match(r"unrecognized arguments: (.*)", message)
        commands = getattr(self, "_command_parsers", {})
        given = next((commands[a] for a in getattr(self, "_argv", []) if a in commands), None)
        if bad:
            options = set(self._option_string_actions) | set(given._option_string_actions if given else ())
            for arg in bad.group(1).split():
                flag = arg.split("=", 1)[0]
                close = (difflib.get_close_matches(flag, sorted(options), n=1, cutoff=0.6)
                         if flag.startswith("-") else [])
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        if bad and given is not None:  # the command's usage line, not the top-level one
            given.print_usage(sys.stderr)
            self.exit(2, f"{given.prog}: error: {message}\n")
        super().error(message)


def add_command(sub, name: str, purpose: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """A subcommand's parser: ``purpose`` in the command list, ``description`` and ``examples`` in its --help."""
    text = f"{purpose[0].upper()}{purpose[1:]}. {description}"
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n"
    return sub.add_parser(name, help=purpose, description=textwrap.fill(text, 100), epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mnist-edge", description=DESCRIPTION, epilog=textwrap.fill(EPILOG, 100),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mnist-edge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = _MarkedCommands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mnist_edge.cli.{name}_cmd")
        except ModuleNotFoundError as e:  # a command whose module is not written yet
            if e.name != f"mnist_edge.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    parser._command_parsers = dict(sub.choices)  # for "did you mean" on a subcommand's options
    return parser


def main(argv: list[str] | None = None) -> int:
    from mnist_edge.files import forget_replaced

    from mnist_edge.torchrun import bounded_openmp_spin

    parser = build_parser()
    args = parser.parse_args(argv)
    bounded_openmp_spin()  # before any command imports torch: OpenMP threads that spin only briefly
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
    from mnist_edge.files import replaced_paths

    done = replaced_paths()
    if not done:
        return "interrupted; earlier files are unchanged"
    return (f"interrupted after replacing {', '.join(done)} (complete and in place); "
            "files not named here are unchanged")


# onnxruntime.quantization gives one piece of advice in two wordings, as quantize_static starts ("Please
# consider to run pre-processing before quantization. Refer to example: URL") and as it ends ("Please consider
# pre-processing before quantization. See URL"): the user should read it once.
_SAME_ADVICE = re.compile(r"please consider (?:to run )?pre-processing before quantization", re.IGNORECASE)


def distinct_notes(messages) -> list[str]:
    """``messages`` (what a library logged, e.g. the quantizer's) each once, in order of first appearance: an
    exact repeat, or the same advice in another wording, is left out."""
    seen: set[str] = set()
    out = []
    for message in messages:
        key = "pre-processing advice" if _SAME_ADVICE.search(message) else message.strip()
        if key not in seen:
            seen.add(key)
            out.append(message)
    return out


def _finish_quietly() -> None:
    """The command has finished and said so: a Ctrl-C during interpreter shutdown must not print a trace
    of an ignored exception over a successful exit."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
