"""`mnist-edge card`: write model cards (exported/NAME/README.md) and the zoo index from the artifacts."""

from __future__ import annotations

from pathlib import Path

from mnist_edge.cli import add_command


def register(sub) -> None:
    p = add_command(sub, "card", "write model cards and exported/README.md from manifests, checkpoints, bench",
                    "Every number in a card comes from a file in the model's folder: accuracy and sizes from "
                    "manifest.json, recipe and training from checkpoint.pt, latency from bench.json and accuracy per "
                    "robustness condition from robustness.json (each marked when its hashes no longer match the files). Also draws the confusion matrices, the gallery of "
                    "misclassified test digits and the zoo's accuracy-against-latency plot (needs torch, "
                    "matplotlib and the MNIST test set).",
                    ["mnist-edge card", "mnist-edge card --model bn_cnn lenet5",
                     "mnist-edge card --folder runs/export/mynet"])
    p.add_argument("--model", nargs="+", dest="models", help="zoo names (default: every exported folder)")
    p.add_argument("--folder", type=Path, help="write the card of this one export folder (any model, your own "
                                               "too) into FOLDER/README.md, and nothing else")
    p.add_argument("--exported", type=Path, default=Path("exported"), help="the exported/ folder")
    p.add_argument("--data", type=Path, help="MNIST folder for the pictures (default: $MNIST_EDGE_DATA, the cache)")
    p.add_argument("--no-pictures", action="store_true",
                   help="only the text: no confusion matrices, galleries or zoo plot (no MNIST needed)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.folder:
        from mnist_edge.cards.card import write_card

        print(write_card(args.folder))
        return 0
    from mnist_edge.cards.card import write_cards
    from mnist_edge.zoo.registry import get_spec

    names = [get_spec(n).name for n in args.models] if args.models else None
    import sys

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    for path in write_cards(args.exported, names, pictures=not args.no_pictures, data_dir=args.data,
                            progress=None if args.quiet else progress):
        print(path)
    return 0
