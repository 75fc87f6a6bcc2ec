"""`mnist-edge export`: checkpoint -> TorchScript, ONNX and (with --quantize) int8 ONNX, each gated."""

from __future__ import annotations

import argparse
import sys

from mnist_edge import artifacts as A
from mnist_edge.cli import add_command, distinct_notes
from mnist_edge.contract import MNIST_MEAN, MNIST_STD

# The int8 flags each change the field of the model's recipe (QuantizeOptions) of the same name;
# mnist_edge.exporter.options.int8_choice merges them onto the recipe.
INT8_GROUP = "int8 options (with --quantize; each changes one field of the model's recipe)"


def register(sub) -> None:
    p = add_command(sub, "export", "export a trained model to TorchScript, ONNX and int8 ONNX, checked against PyTorch",
                    "Every artifact is checked against PyTorch on the 10,000 test images at batch sizes 1, 7 and "
                    "64; the output folder is replaced only when every check passes, with a manifest.json of "
                    "every file's SHA-256.",
                    ["mnist-edge export --model bn_cnn --quantize",
                     "mnist-edge export --net my_model.py:MyNet --weights my_state.pt --name mynet --quantize --out DIR",
                     "mnist-edge export --torchscript my_model.pt --name mynet --labels A,B,C --quantize --out DIR"])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", metavar="NAME", help="a zoo model (see: mnist-edge list)")
    what.add_argument("--net", metavar="FILE.py:CLASS",
                      help="your own network class: FILE.py:CLASS or MODULE.PATH:CLASS. This RUNS your file (or "
                           "imports your module) in this process, as `python FILE.py` would; the weights are still "
                           "read weights-only")
    what.add_argument("--torchscript", metavar="FILE", help="your own TorchScript file (torch.jit.save): it is code, "
                                                          "loaded because you named it")
    what.add_argument("--onnx", metavar="FILE", help="your own float ONNX classifier (one input [batch, 1, S, S], logits "
                                                   "out), wrapped into the contract and gated against itself by "
                                                   "onnxruntime; no torch needed")
    p.add_argument("--checkpoint", metavar="PATH", help="with --model: default exported/NAME/checkpoint.pt, relative to the "
                                                         "working directory")
    u = p.add_argument_group("your own model (with --net, --torchscript or --onnx)")
    u.add_argument("--weights", metavar="FILE", help="with --net: a state_dict saved with torch.save(model.state_dict(), "
                                                     "FILE) (or a checkpoint holding one under 'state_dict')")
    u.add_argument("--net-args", metavar="JSON", help="with --net: constructor arguments, e.g. '{\"width\": 32}'")
    u.add_argument("--name", metavar="NAME", help="the model's name in its files (letters, digits, . _ -)")
    u.add_argument("--labels", metavar="A,B,...", help="class names, one per network output (default 0,1,...,9)")
    u.add_argument("--input-size", type=int, default=28, metavar="S",
                   help="the network's input size: the 28x28 digit is padded to SxS inside the graph (default 28)")
    u.add_argument("--mean", type=float, default=MNIST_MEAN, metavar="M",
                   help=f"normalization the network was trained with, of pixels in [0, 1] (default {MNIST_MEAN})")
    u.add_argument("--std", type=float, default=MNIST_STD, metavar="S", help=f"(default {MNIST_STD})")
    u.add_argument("--channels", type=int, default=1, metavar="C",
                   help="input channels the network takes: the graph puts the grey digit into each (default 1)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/export/NAME/, relative to the working "
                                                "directory; the committed zoo is regenerated with "
                                                "scripts/regenerate-exported.sh)")
    p.add_argument("--quantize", action="store_true", help="also write a static int8 ONNX file (model.int8.onnx) "
                                                           "and, with the litert extra, model.tflite and "
                                                           "model.int8.tflite (LiteRT)")
    p.add_argument("--litert", action=argparse.BooleanOptionalAction, default=None,
                   help="with --quantize: --litert requires the LiteRT files, --no-litert skips them (default: "
                        "written where the litert extra is installed, unless MNIST_EDGE_LITERT=0)")
    p.add_argument("--opset", type=int, default=18, metavar="N",
                   help="ONNX opset (default 18; 16-17 for older runtimes where the model converts)")
    _int8_flags(p)
    p.add_argument("--data", metavar="PATH", help="MNIST folder (default: $MNIST_EDGE_DATA or the cache); for your own "
                                                 "model also any MNIST-format IDX folder, an .npz (x, y) or a folder "
                                                 "with train/ and test/ class folders")
    p.add_argument("--eval-limit", type=int, metavar="N", help="gate on the first N test images (default: all; recorded)")
    p.add_argument("--thresholds", metavar="JSON", help="the gates' limits instead of the defaults, as JSON with the keys "
                   "torchscript, onnx and int8 (see the manifest's settings.thresholds); recorded in the manifest")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON (schema mnist-edge-export/1; "
                                                  "'-': to stdout instead of the table); written on failure too")
    p.set_defaults(func=run)


def _int8_flags(p) -> None:
    """The int8 group: --recipe and one flag per QuantizeOptions field (choices and defaults from the library,
    numpy only at import: --help needs neither torch nor onnx)."""
    from mnist_edge.int8.quantize import CALIBRATION_METHODS, QUANT_FORMATS, QUANT_TYPES
    from mnist_edge.int8.quantize import QuantizeOptions as DEFAULTS

    q = p.add_argument_group(INT8_GROUP)
    q.add_argument("--recipe", metavar="FILE",
                   help="int8 recipe file, e.g. the int8_recipe.json `mnist-edge quantize --search` wrote (default: a zoo "
                        "model's registered recipe, mnist_edge/zoo/int8_recipes.json; without one, onnxruntime's "
                        "defaults)")
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


def run(args) -> int:
    from mnist_edge.documents.commands import export_document, write_document
    from mnist_edge.errors import MnistEdgeError

    user = args.net or args.torchscript or args.onnx
    _check_flags(args, user)
    name = args.name if user else _zoo_name(args.model)
    out = args.out or A.export_folder(name)
    progress = None if args.quiet else _say
    try:
        result = _export(args, user, name, out, progress)
    except MnistEdgeError as e:
        if args.json:
            write_document(export_document(model=name, out=out, error=str(e)), args.json)
        raise
    if args.json:
        write_document(export_document(result), args.json)
    if args.json != "-":
        print(format_result(result))
    return 0


def _say(msg: str) -> None:
    if not msg.startswith("onnxruntime: "):  # what the quantizer said is shown once, in the summary
        print(f"  {msg}", file=sys.stderr, flush=True)


def _export(args, user, name: str, out, progress):
    from mnist_edge.exporter import entry

    entry.preflight_all(out, torch=not args.onnx)  # the extra and the output folder, before anything is loaded
    options = export_options(args, name)
    if not user:
        return entry.export_zoo(name, checkpoint=args.checkpoint, data_dir=args.data, options=options, out=out,
                                progress=progress)
    model = entry.UserModel(name=name, net=args.net, weights=args.weights, net_args=args.net_args,
                            torchscript=args.torchscript, onnx=args.onnx, labels=tuple(args.labels.split(",")) if args.labels else None,
                            input_size=args.input_size, mean=args.mean, std=args.std, channels=args.channels)
    return entry.export_user(model, data_ref=args.data, options=options, out=out, progress=progress)


def _zoo_name(model: str) -> str:
    from mnist_edge.zoo.registry import get_spec

    return get_spec(model).name  # BN_CNN is bn_cnn


def _check_flags(args, user) -> None:
    """Which flags go with which source, in one line each."""
    from mnist_edge.errors import UsageError

    if user and not args.name:
        which = "--net" if args.net else "--torchscript" if args.torchscript else "--onnx"
        raise UsageError(f"{which} needs --name NAME: the model's name in its files")
    if user and args.checkpoint:
        raise UsageError("--checkpoint is for a zoo model (--model); your own network's weights go in --weights")
    if args.weights and not args.net:
        raise UsageError("--weights goes with --net FILE.py:CLASS (a TorchScript file carries its own weights)")
    if args.net and not args.weights:
        raise UsageError("--net needs --weights FILE (a state_dict): an untrained network is not worth exporting")
    own = [f for f in ("name", "labels", "net_args") if getattr(args, f)]
    if not user and own:
        raise UsageError(f"--{own[0].replace('_', '-')} describes your own network: use it with --net, --torchscript "
                         "or --onnx")


def export_options(args, name: str):
    """The ExportOptions the flags ask for: the int8 recipe (file or registered, with the int8 flags on top)
    resolved by the library, the opset, the gates' image count and limits."""
    import json
    from dataclasses import fields

    from mnist_edge.errors import UsageError
    from mnist_edge.exporter import ExportOptions, int8_choice
    from mnist_edge.int8.quantize import QuantizeOptions

    given = {f.name: getattr(args, f.name) for f in fields(QuantizeOptions) if getattr(args, f.name, None) is not None}
    if (given or args.recipe) and not args.quantize:
        flags = ", ".join("--" + k.replace("_", "-") for k in [*given, *(["recipe"] if args.recipe else [])])
        raise UsageError(f"{flags} only apply with --quantize")
    if args.litert and not args.quantize:
        raise UsageError("--litert only applies with --quantize (the LiteRT files come with the int8 file)")
    thresholds = None
    if args.thresholds:
        try:
            thresholds = json.loads(args.thresholds)
        except ValueError as e:
            raise UsageError(f"--thresholds is not JSON: {e}") from None
    return ExportOptions(int8=int8_choice(name, args.recipe, given) if args.quantize else None, opset=args.opset,
                         eval_limit=args.eval_limit, thresholds=thresholds, litert=args.litert).validated()


def _reference_accuracy(m: dict) -> str:
    if "pytorch" in m:
        return f"PyTorch accuracy {m['pytorch']['accuracy']:.2f}%"
    return f"your ONNX file's accuracy {m['source.onnx']['accuracy']:.2f}%"


def format_result(result) -> str:
    """The short table the command prints: files written, then the checks that passed."""
    m = result.manifest
    ev = m["evaluation"]
    from mnist_edge.files import format_size as _size

    lines = [f"exported {result.model} to {result.out}/ in {result.seconds:.1f} s "
             f"(opset {m['settings']['opset']}; checks on {ev['images']:,} test images at batch sizes "
             f"{', '.join(map(str, ev['batch_sizes']))}; " + _reference_accuracy(m) + ")"]
    fmt = "{:<17} {:>9} {:>9} {:>11} {:>10} {:>12}"
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
        lines.append(f"  {artifact:<17} worst of each: " + "; ".join(parts))
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
    lines = [f"int8 recipe: {rec['source']}" + (f" ({rec['summary']})" if rec.get("summary") else "")]
    lines += [f"onnxruntime: {msg}" for msg in distinct_notes(q.get("onnxruntime_messages", []))]
    litert = m.get("litert") or {}
    if litert.get("skipped"):
        lines.append(f"LiteRT: skipped ({litert['skipped']})")
    elif litert.get("why"):
        lines.append(f"LiteRT int8: {litert['why']}")
    fastest = (m.get("fastest") or {}).get("by_batch")
    if fastest:  # every runtime file raced here: the recommendation is the fastest at batch 1
        def one(batch: str) -> str:
            w = fastest[batch]["winner"]
            margin = f", {w['runner_up']} {w['margin'][0]:.2f}x its p50" if w.get("runner_up") else ""
            return f"batch {batch}: {w['file']} ({w['p50_ms'] * 1000:.0f} us{margin})"
        lines.append(f"recommended file: {m['recommended']}, the fastest of every runtime file here, 1 thread ("
                     + "; ".join(one(b) for b in fastest) + ")")
    else:
        lines.append(f"recommended file: {m['recommended']} (the int8 recipe's verdict)")
    return lines
