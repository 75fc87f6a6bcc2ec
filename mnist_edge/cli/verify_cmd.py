"""`mnist-edge verify [DIR]`: hashes first, then each model's accuracy against the manifest (torch optional);
`--self-test`: the folder's own bundle of images and reference outputs instead (no MNIST, no torch)."""

from __future__ import annotations

from mnist_edge import artifacts as A
from mnist_edge.cli import add_command


def register(sub) -> None:
    from mnist_edge.artifacts import MODEL_HELP

    p = add_command(sub, "verify", "re-check an export folder against its manifest (hashes, then accuracy)",
                    "Checks every file's size and SHA-256 before anything is parsed, then measures each model's "
                    "accuracy on the 10,000 test images and compares it with the manifest. Works without torch "
                    "(TorchScript is then skipped). Exit status 1 when anything differs. Without DIR: the default "
                    "model (bn_cnn), where predict and bench find it.",
                    ["mnist-edge verify", "mnist-edge verify exported/mlp --hashes-only",
                     "mnist-edge verify exported/lenet5 --json verify.json"])
    p.add_argument("folder", metavar="MODEL", nargs="?", help=MODEL_HELP + "; or --model")
    p.add_argument("--model", dest="model_flag", metavar="NAME_OR_PATH", help="the same as MODEL")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    p.add_argument("--hashes-only", action="store_true", help="check sizes and SHA-256 only (no MNIST needed)")
    p.add_argument("--tolerance", type=float, default=0.1, metavar="PP",
                   help="allowed accuracy difference from the manifest, percentage points (default 0.1)")
    p.add_argument("--no-torchscript", action="store_true", help="skip TorchScript even where torch is installed")
    p.add_argument("--self-test", action="store_true",
                   help="run the folder's self-test bundle (selftest.bin: 100 images, reference outputs) on this "
                        "device instead of the test set: no MNIST files or torch needed")
    p.add_argument("--exact", action="store_true",
                   help="with --self-test: require int8 outputs bit-identical to the export machine's")
    p.add_argument("--device", default="cpu", help="with --self-test: cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="with --self-test: onnxruntime threads (default: its own)")
    p.add_argument("--strict-device", action="store_true",
                   help="with --self-test: fail when onnxruntime would run any node on the CPU although --device is a GPU")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", metavar="FILE",
                   help="also write the result as JSON (schema mnist-edge-verify/1, with --self-test "
                        "mnist-edge-selftest-report/1; '-': to stdout instead of the table); written on failure too")
    p.set_defaults(func=run)


def _progress(message: str) -> None:
    import sys

    print(f"  {message}", file=sys.stderr, flush=True)


def run(args) -> int:
    from mnist_edge.errors import MnistEdgeError, UsageError
    from mnist_edge.documents.commands import verify_document, write_document
    from mnist_edge.evaluate.verify import verify_artifacts

    if args.self_test:
        return _self_test(args)
    if args.device != "cpu" or args.threads is not None or args.exact or args.strict_device:
        raise UsageError("--device, --threads, --strict-device and --exact apply to --self-test only")
    if not 0 <= args.tolerance <= 100:
        raise UsageError(f"--tolerance {args.tolerance} must be between 0 and 100 percentage points")
    folder = _folder(args)
    try:
        report = verify_artifacts(folder, data_dir=args.data, hashes_only=args.hashes_only,
                                  tolerance_pp=args.tolerance, torchscript=False if args.no_torchscript else None,
                                  progress=None if args.quiet or args.json == "-" else _progress)
    except MnistEdgeError as e:
        if args.json:
            write_document(verify_document(folder=folder, error=str(e)), args.json)
        raise
    if args.json:
        write_document(verify_document(report), args.json)
        if args.json == "-":
            return 0
    fmt = "{:<17} {:>9} {:>9}  {}"
    print(f"verified {report.model} in {report.folder}/")
    print(fmt.format("file", "accuracy", "manifest", "status"))
    order = (A.CHECKPOINT, A.TORCHSCRIPT, A.ONNX, A.INT8)
    for r in sorted(report.rows, key=lambda r: order.index(r["file"]) if r["file"] in order else len(order)):
        acc = f"{r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        exp = f"{r['expected']:.2f}%" if isinstance(r["expected"], (int, float)) else "-"
        print(fmt.format(r["file"], acc, exp, r["status"]))
    if report.absent:
        print(f"note: {', '.join(report.absent)} listed in the manifest but left out of the installed package "
              "(only torch uses them); every file present passed")
    return 0


def _self_test(args) -> int:
    from mnist_edge.errors import UsageError
    from mnist_edge.evaluate.selftest import run_self_test

    if args.hashes_only or args.data or args.tolerance != 0.1:
        raise UsageError("--self-test uses the folder's own images and tolerances; drop --hashes-only, --data "
                         "and --tolerance")
    report = run_self_test(_folder(args), device=args.device, threads=args.threads,
                           torchscript=False if args.no_torchscript else None, exact=args.exact,
                           strict=args.strict_device)
    if args.json:
        from mnist_edge.documents.commands import write_document

        write_document(report.to_json(), args.json)
        if args.json == "-":
            return 0
    fmt = "{:<17} {:>10} {:>10} {:>8} {:>7}  {}"
    print(f"self-test of {report.model} in {report.folder}/ on {report.device}: {report.images} images, "
          f"{report.seconds * 1000:.0f} ms")
    print(fmt.format("file", "max |Δ|", "tolerance", "labels", "moved", "status"))
    for r in report.rows:
        diff = f"{r.max_abs_diff:.3g}" if r.max_abs_diff is not None else "-"
        tol = f"{r.tolerance.max_abs_diff:.3g}" if r.tolerance else "-"
        changed = "-" if r.label_changes is None else f"{r.label_changes} diff"
        moved = "-" if r.moved_images is None else str(r.moved_images)
        status = r.status + (" (bit-identical)" if r.exact else "") + (f" ({r.why})" if r.why else "")
        print(fmt.format(r.file, diff, tol, changed, moved, status))
    return 0


def _folder(args):
    """The artifact folder of MODEL or --model (one of them), by the rule every command uses."""
    from mnist_edge.artifacts import resolve
    from mnist_edge.errors import UsageError

    if args.folder is not None and args.model_flag is not None:
        raise UsageError("give the model once: MODEL or --model, not both")
    return resolve(args.folder if args.folder is not None else args.model_flag).folder
