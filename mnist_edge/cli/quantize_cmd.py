"""`mnist-edge quantize`: search the int8 recipe for a model on this machine, or check one, and say why."""

from __future__ import annotations

import sys
from pathlib import Path

ZOO_REGISTRY = "mnist_edge/zoo/int8_recipes.json"  # the zoo's registry, as a checkout names it


def register(sub) -> None:
    from mnist_edge.cli import add_command

    p = add_command(
        sub, "quantize", "search the int8 recipe that is fastest here and passes the accuracy gates",
        "Quantize a model's fp32 ONNX file with a series of recipes, gate each one for accuracy as the export "
        "does, time the passing ones against fp32 at batch 1 and 64 (interleaved, repeated, 1 thread) and write "
        "the chosen recipe with the evidence (int8_recipe.json). Needs onnx and onnxruntime only (the [quantize] "
        f"extra). --register FILE records the chosen options and verdict as the model's entry in that registry "
        f"file, which `mnist-edge export --quantize --recipe FILE` reads; the zoo's registry is {ZOO_REGISTRY} "
        "in a checkout (read-only once installed: nothing is written into the installed package).",
        ["mnist-edge quantize --model cnn_small --search --report",
         f"mnist-edge quantize --model bn_cnn --search --out exported/bn_cnn --register {ZOO_REGISTRY}",
         "mnist-edge quantize --model bn_cnn --calibration-class 1 --keep-failed /tmp/failed"])
    p.add_argument("--model", required=True, metavar="NAME|DIR",
                   help="registry name (see: mnist-edge list) or an exported folder (its name labels the result)")
    p.add_argument("--onnx", metavar="FILE",
                   help="the fp32 ONNX file (default: exported/NAME/model.onnx, or DIR/model.onnx)")
    p.add_argument("--search", action="store_true",
                   help="search the recipe space (default: check the starting recipe only, with the fallback)")
    p.add_argument("--recipe", metavar="FILE", help="starting recipe: an int8_recipe.json, an entry or a registry "
                   "file (default: onnxruntime's defaults with --search, else the model's registered recipe)")
    p.add_argument("--out", metavar="DIR", help="where int8_recipe.json and int8_search.png go (default: runs/NAME, relative to the working directory)")
    p.add_argument("--register", nargs="?", const="", metavar="FILE",
                   help=f"also record the chosen options and verdict as the model's entry in registry FILE "
                        f"(created when absent; the zoo's: {ZOO_REGISTRY})")
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
    from mnist_edge import artifacts as A
    from mnist_edge.data.dataset import load_digits
    from mnist_edge.errors import UsageError
    from mnist_edge.int8.recipes import starting_options
    from mnist_edge.int8.settings import SearchSettings
    from mnist_edge.int8.tune import quantize_model
    from mnist_edge.system.lock import hold

    if args.register == "":
        raise UsageError(f"--register needs the registry file to write this model's entry into (the zoo's: "
                         f"--register {ZOO_REGISTRY}); nothing is written into the installed package")
    name, fp32 = resolve_model(args.model, args.onnx)
    settings = SearchSettings(search=args.search, repeats=args.repeats, calls=args.calls, eval_limit=args.eval_limit,
                              keep_failed=args.keep_failed, calibration_class=args.calibration_class,
                              report=args.report, register=args.register).validate()
    options = starting_options(name, args.recipe, search=args.search).validate()
    progress = None if args.quiet else (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    out = args.out or A.RUNS / name
    with hold(out, flag="--out"):  # before loading anything: a second run into --out stops at once
        if progress:
            progress("loading MNIST")
        data = load_digits(args.data)
        result = quantize_model(fp32, data, options, settings, out, name=name, progress=progress)
    print(format_result(result))
    return 0


def resolve_model(text: str, onnx: str | None) -> tuple[str, Path]:
    """(label, fp32 file) for ``--model``: a zoo name (``exported/NAME/model.onnx`` in the working
    directory) or an exported folder (``DIR/model.onnx``, labelled by the folder's name); ``--onnx`` wins."""
    from mnist_edge import artifacts as A
    from mnist_edge.zoo.registry import MODELS, get_spec

    folder = Path(text).expanduser()
    if folder.is_dir() and text not in MODELS and text.lower() not in MODELS:
        return folder.resolve().name, Path(onnx) if onnx else folder / A.ONNX
    name = get_spec(text).name  # UnknownModelError: the zoo's names and the closest one
    return name, Path(onnx) if onnx else A.default_folder(name) / A.ONNX


def format_result(result) -> str:
    doc = result.document
    from mnist_edge.cli import distinct_notes
    from mnist_edge.int8.table import trial_rows

    m, info = doc.machine, doc.search
    lines = [f"{doc.model}: {doc.summary}",
             f"machine: {m.cpu} ({m.int8_instructions}), load average {m.load_average}, onnxruntime "
             f"{m.onnxruntime}, 1 thread",
             f"{info.trials} trials in {info.seconds:.0f} s (gates on {info.eval_images:,} test images):"]
    fmt = "  {:<34} {:>6} {:>8} {:>8}  {:<22} {:<22}"
    lines.append(fmt.format("trial", "gate", "agree", "drop", "int8/fp32 batch 1", "batch 64"))
    for t in doc.trials:
        r = {b: v.text() for b, v in t.ratios.items()}
        agree = f"{t.agreement:.2f}%" if t.agreement is not None else "-"
        drop = f"{t.accuracy_drop_pp:+.2f}" if t.accuracy_drop_pp is not None else "-"
        lines += trial_rows(fmt, t.name, "pass" if t.passed else "FAIL", agree, drop, r.get(1, "-"), r.get(64, "-"))
    for t in doc.trials:
        if not t.passed:
            lines.append(f"  {t.name} failed: {t.error}" + (f" (kept: {t.kept})" if t.kept else ""))
    lines.append(f"chosen options: {doc.options.differences() or 'the defaults'}; recommended file: {doc.recommended}")
    messages = distinct_notes(msg for t in doc.trials for msg in t.messages)
    lines += [f"onnxruntime said: {msg}" for msg in messages]
    if result.diagnosis is not None:
        from mnist_edge.int8.diagnose import format_diagnosis

        lines.append(format_diagnosis(result.diagnosis))
    lines += [f"wrote {f}" for f in result.files]
    return "\n".join(lines)
