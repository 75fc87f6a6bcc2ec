"""`mnist-edge quantize`: search the int8 recipe for a model on this machine, or check one, and say why."""

from __future__ import annotations

import sys


def register(sub) -> None:
    from mnist_edge.cli import add_command

    p = add_command(
        sub, "quantize", "search the int8 recipe that is fastest here and passes the accuracy gates",
        "Quantize a model's fp32 ONNX file with a series of recipes, gate each one for accuracy as the export "
        "does, time the passing ones against fp32 at batch 1 and 64 (interleaved, repeated, 1 thread) and write "
        "the chosen recipe with the evidence. Needs onnx and onnxruntime only (the [quantize] extra). --register "
        "records the result as the model's recipe for `mnist-edge export --quantize`.",
        ["mnist-edge quantize --model cnn_small --search --report",
         "mnist-edge quantize --model bn_cnn --search --register --out exported/bn_cnn",
         "mnist-edge quantize --model bn_cnn --calibration-class 1 --keep-failed /tmp/failed"])
    p.add_argument("--model", required=True, metavar="NAME", help="registry name (see: mnist-edge list)")
    p.add_argument("--onnx", metavar="FILE", help="the fp32 ONNX file (default: exported/NAME/model.onnx)")
    p.add_argument("--search", action="store_true",
                   help="search the recipe space (default: check the starting recipe only, with the fallback)")
    p.add_argument("--recipe", metavar="FILE", help="starting recipe file (default: onnxruntime's defaults with --search, "
                   "else the model's registered recipe)")
    p.add_argument("--out", metavar="DIR", help="where int8_recipe.json and int8_search.png go (default: runs/NAME, relative to the working directory)")
    p.add_argument("--register", action="store_true",
                   help="also record the result as the model's recipe (mnist_edge/int8_recipes/NAME.json)")
    p.add_argument("--report", action="store_true",
                   help="diagnose the chosen recipe: per-tensor SQNR, per-op time, Q/DQ/Transpose left after "
                        "optimization (also written to int8_report.json)")
    p.add_argument("--keep-failed", metavar="DIR", help="keep each candidate that failed the gate here")
    p.add_argument("--calibration-class", type=int, metavar="D",
                   help="calibrate on training images of digit D only (a deliberately bad set: shows the "
                        "gate failing and the fallback)")
    p.add_argument("--eval-limit", type=int, metavar="N", help="gate on the first N test images (default: all)")
    p.add_argument("--repeats", type=int, default=8, metavar="N", help="timing repeats per batch size (default 8)")
    p.add_argument("--calls", type=int, default=10, metavar="N", help="timed calls per block (default 10)")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.export.tune import quantize_model

    progress = None if args.quiet else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    result = quantize_model(args.model, fp32=args.onnx, search=args.search, recipe=args.recipe, out=args.out,
                            register=args.register, report=args.report, keep_failed=args.keep_failed,
                            calibration_class=args.calibration_class, eval_limit=args.eval_limit,
                            repeats=args.repeats, calls=args.calls, data_dir=args.data, progress=progress)
    print(format_result(result))
    return 0


def format_result(result) -> str:
    from mnist_edge.export import ratio as R
    from mnist_edge.export.quantize import QuantizeOptions

    doc = result.document
    lines = [f"{doc['model']}: {doc['summary']}",
             f"machine: {doc['machine']['cpu']} ({doc['machine']['int8_instructions']}), load average "
             f"{doc['machine']['load_average']}, onnxruntime {doc['machine']['onnxruntime']}, 1 thread",
             f"{doc['search']['trials']} trials in {doc['search']['seconds']:.0f} s "
             f"(gates on {doc['search']['eval_images']:,} test images):"]
    fmt = "  {:<34} {:>6} {:>8} {:>8}  {:<22} {:<22}"
    lines.append(fmt.format("trial", "gate", "agree", "drop", "int8/fp32 batch 1", "batch 64"))
    for t in doc["trials"]:
        r = {b: R.format_ratio(v) for b, v in t["ratios"].items()}
        agree = f"{t['agreement']:.2f}%" if t["agreement"] is not None else "-"
        drop = f"{t['accuracy_drop_pp']:+.2f}" if t["accuracy_drop_pp"] is not None else "-"
        lines.append(fmt.format(t["name"][:34], "pass" if t["passed"] else "FAIL", agree, drop,
                                r.get("1", "-"), r.get("64", "-")))
    for t in doc["trials"]:
        if not t["passed"]:
            lines.append(f"  {t['name']} failed: {t['error']}" + (f" (kept: {t['kept']})" if t["kept"] else ""))
    changes = QuantizeOptions.from_dict(doc["options"]).differences()
    lines.append(f"chosen options: {changes or 'the defaults'}; recommended file: {doc['recommended']}")
    messages = sorted({m for t in doc["trials"] for m in t["onnxruntime_messages"]})
    lines += [f"onnxruntime said: {m}" for m in messages]
    if result.diagnosis is not None:
        from mnist_edge.export.diagnose import format_diagnosis

        lines.append(format_diagnosis(result.diagnosis))
    lines += [f"wrote {f}" for f in result.files]
    return "\n".join(lines)

