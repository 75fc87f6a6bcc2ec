"""`mnist-edge export`: checkpoint -> TorchScript, ONNX and (with --quantize) int8 ONNX, each gated."""

from __future__ import annotations

import argparse
import sys

from mnist_edge import artifacts as A
from mnist_edge.cli import add_command

# The int8 flags: each one changes one field of the model's registered recipe (QuantizeOptions); unset
# flags leave the recipe's value. Plain names here so `--help` needs neither torch nor onnx.
_QUANT_FLAGS = ("calibration_samples", "calibration_method", "percentile", "per_channel", "quant_format",
                "activation_type", "weight_type", "reduce_range", "preprocess", "keep_float")


def register(sub) -> None:
    # choices and defaults from the library (numpy only at import: --help needs neither torch nor onnx)
    from mnist_edge.export.quantize import CALIBRATION_METHODS, QUANT_FORMATS, QUANT_TYPES
    from mnist_edge.export.quantize import QuantizeOptions as DEFAULTS
    p = add_command(sub, "export", "export a trained model to TorchScript, ONNX and int8 ONNX, checked against PyTorch",
                    "Every artifact is checked against PyTorch on the 10,000 test images at batch sizes 1, 7 and "
                    "64; the output folder is replaced only when every check passes, with a manifest.json of "
                    "every file's SHA-256.",
                    ["mnist-edge export --model bn_cnn --quantize",
                     "mnist-edge export --model lenet5 --checkpoint runs/lenet5/checkpoint.pt --out /tmp/lenet5",
                     "mnist-edge export --model mlp --quantize --calibration-method entropy --json export.json"])
    p.add_argument("--model", required=True, metavar="NAME", help="registry name (see: mnist-edge list)")
    p.add_argument("--checkpoint", metavar="PATH", help="default: exported/NAME/checkpoint.pt, relative to the working directory")
    p.add_argument("--out", metavar="DIR", help="output folder (default: exported/NAME/, relative to the working directory)")
    p.add_argument("--quantize", action="store_true", help="also write a static int8 ONNX file (model.int8.onnx)")
    p.add_argument("--opset", type=int, default=18, metavar="N",
                   help="ONNX opset (default 18; 16-17 for older runtimes where the model converts)")
    q = p.add_argument_group("int8 options (with --quantize; each changes one field of the model's recipe)")
    q.add_argument("--recipe", metavar="FILE",
                   help="int8 recipe file (default: the model's registered recipe, mnist_edge/int8_recipes/NAME.json, "
                        "found by `mnist-edge quantize --search`; without one, onnxruntime's defaults)")
    q.add_argument("--calibration-samples", type=int, metavar="N", help=f"class-balanced training images (default {DEFAULTS.calibration_samples})")
    q.add_argument("--calibration-method", choices=CALIBRATION_METHODS,
                   help=f"default {DEFAULTS.calibration_method}")
    q.add_argument("--percentile", type=float, metavar="P", help="with --calibration-method percentile (default 99.999)")
    q.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="per-channel weight scales (default: on)")
    q.add_argument("--quant-format", choices=QUANT_FORMATS, help=f"default {DEFAULTS.quant_format}")
    q.add_argument("--activation-type", choices=QUANT_TYPES, help=f"default {DEFAULTS.activation_type}")
    q.add_argument("--weight-type", choices=QUANT_TYPES, help=f"default {DEFAULTS.weight_type}")
    q.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                   help="7-bit weights, for CPUs without VNNI / dot product (default: off)")
    q.add_argument("--preprocess", action=argparse.BooleanOptionalAction, default=None,
                   help="run onnxruntime's quant_pre_process first (default: off)")
    q.add_argument("--keep-float", action="append", metavar="OP[i]",
                   help="keep this node in float, e.g. Conv[0] (the first Conv); repeat for more")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON (schema mnist-edge-export/1; "
                                                  "'-': to stdout instead of the table); written on failure too")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.errors import MnistEdgeError, UsageError
    from mnist_edge.export import export_model
    from mnist_edge.export.reports import export_document, write_document
    from mnist_edge.zoo import get_spec

    name = get_spec(args.model).name  # BN_CNN is bn_cnn
    given = {k: getattr(args, k) for k in _QUANT_FLAGS if getattr(args, k) is not None}
    if (given or args.recipe) and not args.quantize:
        flags = ", ".join("--" + k.replace("_", "-") for k in [*given, *(["recipe"] if args.recipe else [])])
        raise UsageError(f"{flags} only apply with --quantize")
    options = None
    if given:
        from mnist_edge.export.recipes import load_recipe

        if "keep_float" in given:
            given["keep_float"] = tuple(given["keep_float"])
        options = load_recipe(name, args.recipe).options.with_(**given)
    progress = None if args.quiet else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    try:
        result = export_model(name, checkpoint=args.checkpoint, out=args.out, quantize=args.quantize,
                              opset=args.opset, data_dir=args.data, progress=progress,
                              recipe=args.recipe, quantize_options=options)
    except MnistEdgeError as e:
        if args.json:
            write_document(export_document(model=name, out=args.out, error=str(e)), args.json)
        raise
    if args.json:
        write_document(export_document(result), args.json)
    if args.json != "-":
        print(format_result(result))
    return 0


def format_result(result) -> str:
    """The short table the command prints: files written, then the checks that passed."""
    m = result.manifest
    ev = m["evaluation"]
    from mnist_edge.files import format_size as _size

    lines = [f"exported {result.model} to {result.out}/ in {result.seconds:.1f} s "
             f"(opset {m['settings']['opset']}; checks on {ev['images']:,} test images at batch sizes "
             f"{', '.join(map(str, ev['batch_sizes']))}; PyTorch accuracy {m['pytorch']['accuracy']:.2f}%)"]
    fmt = "{:<16} {:>9} {:>9} {:>11} {:>10} {:>12}"
    lines.append(fmt.format("file", "size", "accuracy", "vs", "agreement", "max|Δlogits|"))
    order = (A.CHECKPOINT, A.TORCHSCRIPT, A.ONNX, A.INT8)
    files = sorted(m["files"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    for name, e in files:
        acc = f"{e['accuracy']:.2f}%" if e.get("accuracy") is not None else "-"
        agree = f"{e['agreement']:.2f}%" if e.get("agreement") is not None else "-"
        diff = f"{e['max_abs_diff']:.1e}" if e.get("max_abs_diff") is not None else "-"
        lines.append(fmt.format(name, _size(e["size"]), acc, e.get("reference", "-"), agree, diff))
    manifest_path = result.out / A.MANIFEST
    if manifest_path.is_file():
        lines.append(fmt.format(A.MANIFEST, _size(manifest_path.stat().st_size), "", "", "", ""))
    checks = result.checks
    lines.append(f"checks: {sum(c.passed for c in checks)}/{len(checks)} passed")
    by_artifact: dict = {}
    for c in checks:
        by_artifact.setdefault(c.artifact, []).append(c)
    for artifact, rows in by_artifact.items():
        worst: dict = {}
        for c in rows:
            w = worst.get(c.metric)
            if w is None or (c.value > w.value if c.op == "<=" else c.value < w.value):
                worst[c.metric] = c
        parts = ["contract ok" if c.metric == "contract" else c.brief() for c in worst.values()]
        lines.append(f"  {artifact:<16} worst of each: " + "; ".join(parts))
    t = m.get("temperature")
    if t:
        lines.append(f"temperature {t['temperature']:g}: probabilities = softmax(logits / T), fitted on "
                     f"{t['fitted_on']['split']}; test ECE {t['test']['ece_before']:.4f} -> {t['test']['ece_after']:.4f}")
    return "\n".join(lines + _int8_lines(m))


def _int8_lines(m: dict) -> list[str]:
    """The int8 recipe's source and verdict, and what onnxruntime's quantizer said."""
    rec = m.get("int8_recipe")
    if not rec:
        return []
    q = (m["files"].get(A.INT8) or {}).get("quantization") or {}
    lines = [f"int8 recipe: {rec['source']}; recommended file: {m['recommended']}"
             + (f" ({rec['summary']})" if rec.get("summary") else "")]
    lines += [f"onnxruntime: {msg}" for msg in q.get("onnxruntime_messages", [])]
    return lines
