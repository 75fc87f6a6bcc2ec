"""`mnist-edge verify DIR`: hashes first, then each model's accuracy against the manifest (torch optional)."""

from __future__ import annotations

from mnist_edge.cli import add_command


def register(sub) -> None:
    p = add_command(sub, "verify", "re-check an export folder against its manifest (hashes, then accuracy)",
                    "Checks every file's size and SHA-256 before anything is parsed, then measures each model's "
                    "accuracy on the 10,000 test images and compares it with the manifest. Works without torch "
                    "(TorchScript is then skipped). Exit status 1 when anything differs.",
                    ["mnist-edge verify exported/bn_cnn", "mnist-edge verify exported/mlp --hashes-only",
                     "mnist-edge verify exported/lenet5 --json verify.json"])
    p.add_argument("folder", metavar="DIR", help="an export folder, e.g. exported/bn_cnn")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    p.add_argument("--hashes-only", action="store_true", help="check sizes and SHA-256 only (no MNIST needed)")
    p.add_argument("--tolerance", type=float, default=0.1, metavar="PP",
                   help="allowed accuracy difference from the manifest, percentage points (default 0.1)")
    p.add_argument("--no-torchscript", action="store_true", help="skip TorchScript even where torch is installed")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON (schema mnist-edge-verify/1; "
                                                  "'-': to stdout instead of the table); written on failure too")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.errors import MnistEdgeError, UsageError
    from mnist_edge.export.reports import verify_document, write_document
    from mnist_edge.export.verify import verify_artifacts

    if not 0 <= args.tolerance <= 100:
        raise UsageError(f"--tolerance {args.tolerance} must be between 0 and 100 percentage points")
    try:
        report = verify_artifacts(args.folder, data_root=args.data, hashes_only=args.hashes_only,
                                  tolerance_pp=args.tolerance, torchscript=False if args.no_torchscript else None)
    except MnistEdgeError as e:
        if args.json:
            write_document(verify_document(folder=args.folder, error=str(e)), args.json)
        raise
    if args.json:
        write_document(verify_document(report), args.json)
        if args.json == "-":
            return 0
    fmt = "{:<16} {:>9} {:>9}  {}"
    print(f"verified {report.model} in {report.folder}/")
    print(fmt.format("file", "accuracy", "manifest", "status"))
    order = ("checkpoint.pt", "model.pt", "model.onnx", "model.int8.onnx")
    for r in sorted(report.rows, key=lambda r: order.index(r["file"]) if r["file"] in order else len(order)):
        acc = f"{r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        exp = f"{r['expected']:.2f}%" if isinstance(r["expected"], (int, float)) else "-"
        print(fmt.format(r["file"], acc, exp, r["status"]))
    return 0
