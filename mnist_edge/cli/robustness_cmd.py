"""`mnist-edge robustness [MODEL]`: accuracy on the test digits shifted, rotated, scaled, thinned, thickened
and noisy (torch-free)."""

from __future__ import annotations

import shlex
import sys

from mnist_edge.cli import add_command


def register(sub) -> None:
    from mnist_edge.artifacts import MODEL_HELP, ONNX_FILES
    from mnist_edge.evaluate.robustness import CONDITIONS, NOISE_SIGMA, ROTATE_DEG, SCALES, SHIFT_PX

    p = add_command(sub, "robustness", "accuracy on test digits shifted, rotated, scaled, eroded, dilated or noisy",
                    f"Transforms the 10,000 MNIST test images into named conditions (shift by {SHIFT_PX} px in each "
                    f"direction, rotation by +-{ROTATE_DEG:g} degrees, "
                    f"scale {' and '.join(f'{s:g}x' for s in SCALES)}, "
                    f"strokes thinned and thickened by 1 px, Gaussian noise of sigma {NOISE_SIGMA:g} of 255) and "
                    "prints each ONNX file's accuracy per condition. Deterministic; numpy and onnxruntime only. "
                    f"Conditions: {', '.join(CONDITIONS)}.",
                    ["mnist-edge robustness", "mnist-edge robustness lenet5 --precision int8 --threads 1",
                     "mnist-edge robustness bn_cnn --json exported/bn_cnn/robustness.json"])
    p.add_argument("model", metavar="MODEL", nargs="?", help=MODEL_HELP)
    p.add_argument("--precision", metavar="P", help=f"{' or '.join(ONNX_FILES)}: one file of the folder (default: "
                                                   "every ONNX file its manifest lists)")
    p.add_argument("--conditions", nargs="+", metavar="NAME", help="only these conditions (default: all)")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    p.add_argument("--threads", type=int, metavar="N", help="onnxruntime threads (default: one per core)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON (schema mnist-edge-robustness/1)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def _command(args) -> str:
    """The command with the options that change the numbers (not --json, --data or --markdown)."""
    parts = ["mnist-edge", "robustness"] + ([args.model] if args.model else [])
    parts += ["--precision", args.precision] if args.precision else []
    parts += ["--conditions", *args.conditions] if args.conditions else []
    parts += ["--threads", str(args.threads)] if args.threads is not None else []
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    import json

    from mnist_edge.files import write_text_atomic
    from mnist_edge.evaluate.robustness import evaluate, render_table

    # One line per condition: the whole suite runs for tens of seconds (two files, 12 x 10,000 images).
    progress = None if args.quiet else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    report = evaluate(args.model, precision=args.precision, names=args.conditions, data_dir=args.data,
                      threads=args.threads, command=_command(args), progress=progress)
    print(render_table(report, markdown=args.markdown), end="")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0
