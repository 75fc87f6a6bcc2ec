"""`mnist-edge card`: write model cards (exported/NAME/README.md) and the zoo index from the artifacts."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("card", help="write model cards and exported/README.md from manifests, checkpoints, bench")
    p.add_argument("--model", nargs="+", dest="models", help="zoo names (default: every exported folder)")
    p.add_argument("--exported", type=Path, default=Path("exported"), help="the exported/ folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.cards import write_cards
    from mnist_edge.zoo import get_spec

    names = [get_spec(n).name for n in args.models] if args.models else None
    for path in write_cards(args.exported, names):
        print(path)
    return 0
