"""`mnist-edge verify DIR`: hashes first, then each model's accuracy against the manifest (torch optional)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("verify", help="re-check an export folder against its manifest (hashes, then accuracy)")
    p.add_argument("folder", metavar="DIR", help="an export folder, e.g. exported/bn_cnn")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    p.add_argument("--hashes-only", action="store_true", help="check sizes and SHA-256 only (no MNIST needed)")
    p.add_argument("--tolerance", type=float, default=0.1, metavar="PP",
                   help="allowed accuracy difference from the manifest, percentage points (default 0.1)")
    p.add_argument("--no-torchscript", action="store_true", help="skip TorchScript even where torch is installed")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.errors import UsageError
    from mnist_edge.export.verify import verify_artifacts

    if not 0 <= args.tolerance <= 100:
        raise UsageError(f"--tolerance {args.tolerance} must be between 0 and 100 percentage points")
    report = verify_artifacts(args.folder, data_root=args.data, hashes_only=args.hashes_only,
                              tolerance_pp=args.tolerance, torchscript=False if args.no_torchscript else None)
    fmt = "{:<16} {:>9} {:>9}  {}"
    print(f"verified {report.model} in {report.folder}/")
    print(fmt.format("file", "accuracy", "manifest", "status"))
    order = ("checkpoint.pt", "model.pt", "model.onnx", "model.int8.onnx")
    for r in sorted(report.rows, key=lambda r: order.index(r["file"]) if r["file"] in order else len(order)):
        acc = f"{r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        exp = f"{r['expected']:.2f}%" if isinstance(r["expected"], (int, float)) else "-"
        print(fmt.format(r["file"], acc, exp, r["status"]))
    return 0
