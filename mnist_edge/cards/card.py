"""Model cards: `exported/NAME/README.md` and the zoo index `exported/README.md`, drawn from the files.

Every number in a card comes from an artifact, never typed by hand: accuracy, agreement, differences
and sizes from `manifest.json`; recipe, history, training time and hardware from `checkpoint.pt`;
latency from `bench.json` (a `mnist-edge bench --json` report, schema mnist-edge-bench/1) and accuracy
under the robustness suite from `robustness.json` (`mnist-edge robustness --json`, mnist-edge-robustness/1),
each marked stale when the SHA-256 it recorded for a file is not that of the file beside it now. The pictures
(`confusion.png`, `misclassified.png`, `misclassified_int8.png`, and `zoo.png` for the index) come from
running the ONNX files on the 10,000 test images with the torch-free runtime. Every file is read and
checked first (:mod:`mnist_edge.cards.folder`); the card code reads what that load vouched for.
"""

from __future__ import annotations


from dataclasses import MISSING, asdict, fields
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.cards.folder import CardFolder, load_card_folder, stale_formats
from mnist_edge.cards.int8 import format_name, int8_lines, int8_verdict
from mnist_edge.cards.reliability import confidence_lines, confidence_table, robustness_index, robustness_lines
from mnist_edge.cards.runtimes import race_lines, runtime_choice_lines
from mnist_edge.errors import ArtifactError
from mnist_edge.files import format_size, write_text_atomic
from mnist_edge.zoo.registry import MODELS, get_spec

FORMATS = (("eager", "PyTorch eager"), ("torchscript", "TorchScript"), ("onnx", "ONNX fp32"),
           ("int8", "ONNX int8"), ("tflite", "LiteRT fp32"), ("tflite-int8", "LiteRT int8"))
FILES = {A.TORCHSCRIPT: "TorchScript", A.ONNX: "ONNX fp32", A.INT8: "ONNX int8",  # int8: + its format
         A.TFLITE: "LiteRT fp32", A.TFLITE_INT8: "LiteRT int8"}


def _ms(row, key="p50_ms") -> str:
    return f"{getattr(row, key):.3f}" if row else "-"


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def model_pictures(folder: Path, data_dir=None) -> list[Path]:
    """confusion.png (fp32, and int8 beside it when its predictions differ), misclassified.png (the fp32
    model's errors) and misclassified_int8.png (the digits where int8's label differs from fp32's), from
    the ONNX files on the 10,000 test images. Needs matplotlib and the MNIST test set."""
    from mnist_edge import plots
    from mnist_edge.data.mnist import load_mnist
    from mnist_edge.runtime import load

    x, y = load_mnist("test", data_dir)
    preds = {}
    for precision, fname in (("fp32", A.ONNX), ("int8", A.INT8)):
        if (folder / fname).is_file():
            preds[precision] = load(folder, precision=precision, threads=1).predict(x)
    if not preds:
        raise ArtifactError(f"{folder} holds neither model.onnx nor model.int8.onnx: no pictures to draw")
    name = folder.name
    first = next(iter(preds))
    same = len(preds) == 2 and (preds["fp32"].labels == preds["int8"].labels).all()
    shown = {first: preds[first]} if same or len(preds) == 1 else preds
    matrices = {(f"{p} = int8" if same else p): plots.confusion_matrix(y, q.labels) for p, q in shown.items()}
    written = [plots.plot_confusion(matrices, folder / "confusion.png", title=f"{name}: confusion matrix")]

    def gallery(idx, pred, path, title, caption, legend):
        idx = idx[np.argsort(-pred.probabilities[idx, pred.labels[idx]], kind="stable")]  # most confident first
        more = f", the {plots.GALLERY_MAX} most confident shown" if len(idx) > plots.GALLERY_MAX else ""
        return plots.plot_gallery(x[idx[:plots.GALLERY_MAX]], [caption(i) for i in idx[:plots.GALLERY_MAX]], path,
                                  f"{title} ({len(idx)}{more}); caption: {legend}")

    p = preds[first]
    written.append(gallery(np.flatnonzero(p.labels != y), p, folder / "misclassified.png",
                           f"{name} {first}: misclassified test digits",
                           lambda i: f"{y[i]}→{p.labels[i]} ({p.probabilities[i, p.labels[i]]:.2f})",
                           "true→predicted (probability)"))
    if len(preds) == 2 and not same:
        a, b = preds["fp32"], preds["int8"]
        written.append(gallery(np.flatnonzero(a.labels != b.labels), b, folder / "misclassified_int8.png",
                               f"{name}: test digits where int8's label differs from fp32's",
                               lambda i: (f"{y[i]}: {a.labels[i]} | {b.labels[i]} "
                                          f"({b.probabilities[i, b.labels[i]]:.2f})"),
                               "true: fp32 | int8 (int8's probability)"))
    else:
        (folder / "misclassified_int8.png").unlink(missing_ok=True)  # from an earlier export that differed
    return written

def zoo_points(cards: list[CardFolder]) -> list[dict]:
    """The zoo plot's points: ONNX fp32 and int8 of each model with a bench report (batch 1, 1 thread)."""
    points = []
    for c in cards:
        for fmt, fname, label in (("onnx", A.ONNX, "ONNX fp32"), ("int8", A.INT8, "ONNX int8")):
            row, f = c.bench.row(fmt, 1) if c.bench else None, c.files.get(fname)
            if row and f and f.accuracy is not None:
                points.append({"model": c.name, "format": label, "latency_ms": row.p50_ms,
                               "accuracy": f.accuracy, "size_bytes": f.size})
    return points


def reproduce(name: str) -> str:
    return (f"mnist-edge train --model {name} --out runs/{name}/checkpoint.pt\n"
            f"mnist-edge quantize --model {name} --search --out exported/{name} "
            f"--register mnist_edge/zoo/int8_recipes.json  # measures this machine\n"
            f"mnist-edge export --model {name} --checkpoint runs/{name}/checkpoint.pt --quantize --out exported/{name}\n"
            f"mnist-edge bench --model exported/{name} --threads 1 --json exported/{name}/bench.json\n"
            f"mnist-edge robustness {name} --threads 1 --json exported/{name}/robustness.json\n"
            f"mnist-edge card --model {name}")


def _recipe_notes(recipe: dict, spec) -> str:
    """The checkpoint's recipe notes, or the registry's when the checkpoint was trained by the registered
    recipe (its notes were written before an option such as --epochs was overridden, then registered); any
    setting that differs from the registry's is named."""
    registered = asdict(spec.recipe)
    defaults = {f.name: f.default for f in fields(spec.recipe) if f.default is not MISSING}
    trained = {**defaults, **recipe}  # a setting newer than the checkpoint had its default value then
    differs = [f"{k} {trained.get(k)} (registry: {registered[k]})" for k in registered
               if k != "notes" and trained.get(k) != registered[k]]
    notes = recipe.get("notes") if isinstance(recipe.get("notes"), str) else None
    if not differs:
        return spec.recipe.notes or notes or ""
    return (notes or spec.recipe.notes) + " Trained with settings that differ from the registered " \
        "recipe: " + ", ".join(differs) + "."


def _summary_rows(c: CardFolder, spec) -> list[str]:
    """The card's table: size of the network, input, accuracies and, when the checkpoint records it, training."""
    from mnist_edge.zoo.networks import build_net, count_macs, count_params

    net = build_net(spec.name)
    m, t = c.training.metrics, c.training
    doc = f"{spec.documented_accuracy:.2f}%" if spec.documented_accuracy else "not documented"
    rows = [
        "| | |", "|---|---|",
        f"| parameters | {count_params(net):,}"
        + (f" (seed: {spec.documented_params:,})" if spec.documented_params else "") + " |",
        f"| multiply-accumulates per image | {count_macs(net, spec.input_size):,} |",
        f"| input | uint8 [batch, 1, 28, 28], raw MNIST pixels; the graph scales by 1/255, normalizes with "
        f"mean {spec.mean}, std {spec.std}" + (", pads to 32x32" if spec.input_size == 32 else "") + " |",
        f"| documented accuracy | {doc} |",
    ]
    if m.test_accuracy is not None:
        chosen = f" (model chosen: {m.selected})" if m.selected else ""
        rows.append(f"| achieved accuracy (PyTorch, 10,000 test images) | {m.test_accuracy:.2f}%{chosen} |")
    if t.history:  # Training.validate: a history comes with the fields this row shows
        rows.append(f"| training | {len(t.history)} epochs, {m.train_seconds:.0f} s ({t.epoch_seconds:.1f} s/epoch) on "
                    f"{m.device} ({m.device_name}, {m.threads} thread{'s' if m.threads != 1 else ''}), seed {m.seed} |")
    return rows + _restat_rows(m.reestimate_bn)


def _parity_lines(c: CardFolder) -> list[str]:
    lines = ["## Accuracy and parity per format", "",
             "Measured by `mnist-edge export` on the full test set at batch sizes 1, 7 and 64.", "",
             "| file | format | size | accuracy | agreement with reference | max abs Δ logits | reference |",
             "|---|---|---|---|---|---|---|"]
    q = (c.manifest.get("settings") or {}).get("quantization")
    for fname, label in FILES.items():
        f = c.files.get(fname)
        if f:
            if fname == A.INT8 and q:
                label += f" ({format_name(q)})"
            litert = c.manifest.get("litert")
            if fname == A.TFLITE_INT8 and isinstance(litert, dict) and isinstance(litert.get("int8"), str):
                label += f" ({litert['int8']})"
            lines.append(f"| `{fname}` | {label} | {format_size(f.size)} | {_pct(f.accuracy)} | "
                         f"{_pct(f.agreement)} | {_num(f.max_abs_diff, '.2e')} | {f.reference} |")
    return lines + runtime_choice_lines(c.manifest)


def _latency_lines(c: CardFolder) -> list[str]:
    lines = ["", "## Latency", ""]
    bench = c.bench
    if not bench:
        return lines + ["Not measured yet: run `mnist-edge bench` (see below)."]
    env = bench.environment
    lines += [f"`{bench.command}` on {env.cpu.model} ({env.cpu.usable_cores} usable cores), "
              f"onnxruntime {env.versions.get('onnxruntime')}, torch {env.versions.get('torch')}; "
              "1 thread, milliseconds per call.", "",
              "| format | batch 1 p50 | batch 1 p99 | batch 64 p50 | batch 64 p99 |", "|---|---|---|---|---|"]
    for fmt, label in FORMATS:
        b1, b64 = bench.row(fmt, 1), bench.row(fmt, 64)
        if not b1 and not b64 and fmt.startswith("tflite"):
            continue  # a folder without LiteRT files
        mark = " (stale)" if fmt in c.stale else ""
        lines.append(f"| {label}{mark} | {_ms(b1)} | {_ms(b1, 'p99_ms')} | {_ms(b64)} | {_ms(b64, 'p99_ms')} |")
    if bench.paired_rows:
        lines += ["", "Each p50 above times one file in its own process, one file after the other; the int8/fp32 "
                      "ratios below time both files interleaved in one process, as `mnist-edge quantize --search` "
                      "does, so a change of load on the machine falls on both."]
    lines += race_lines(bench) + ["", bench.advice.line]
    if c.stale:
        lines += ["", "**Stale:** " + "; ".join(f"{fmt}: {why}" for fmt, why in c.stale.items())
                  + ". These timings describe other files; run the bench command below again."]
    return lines


def _files_lines(name: str, pictures: tuple) -> list[str]:
    lines = ["## Files", "", "`checkpoint.pt` (weights-only, rebuilds its model), `model.pt`, `model.onnx`, "
             "`model.int8.onnx`, `model.tflite` and `model.int8.tflite` (LiteRT, NHWC input: docs/litert.md), "
             "`manifest.json` (SHA-256 of every file; check with `mnist-edge verify "
             f"exported/{name}`), `training_curves.png`, `bench.json`, `robustness.json`.", "",
             "![training curves](training_curves.png)", ""]
    if pictures:
        lines += ["## Errors on the test set", "",
                  "The ONNX files on the 10,000 test images, run by the torch-free runtime (`mnist-edge card`).", ""]
        captions = {"confusion.png": "confusion matrix", "misclassified.png": "misclassified test digits",
                    "misclassified_int8.png": "digits where int8's label differs from fp32's"}
        lines += [f"![{captions[p]}]({p})\n" for p in captions if p in pictures]
    return lines


def model_card(c: CardFolder, *, pictures: tuple = ()) -> str:
    """The card's markdown for a loaded folder (:func:`mnist_edge.cards.folder.load_card_folder`);
    ``pictures``: the names of the picture files present in the folder."""
    spec = MODELS.get(c.name)
    if spec is None:
        return user_card(c, pictures=pictures)
    name = spec.name
    lines = [f"# `{name}`", "",
             f"{spec.description}. " + (f"Seed document: `{spec.seed_file}`." if spec.seed_file else
                                        "Not from a seed: our own design. What was tried and what each change "
                                        "bought: [docs/edge-model.md](../../docs/edge-model.md)."), ""]
    lines += _summary_rows(c, spec) + [""]
    if spec.reading:
        lines += [("**Our reading of the seed.** " if spec.seed_file else "**Design.** ") + spec.reading, ""]
    recipe = c.training.recipe
    if recipe:  # a checkpoint trained elsewhere records no recipe
        lines += ["## Recipe", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in recipe.items() if k != "notes"]
        lines += ["", _recipe_notes(recipe, spec), ""]
    lines += _parity_lines(c)
    lines += int8_lines(c.manifest, c.int8_report, c.search)
    lines += confidence_lines(c.temperature)
    lines += _latency_lines(c)
    lines += [""] + robustness_lines(name, c.robustness, c.robustness_stale)
    lines += _files_lines(name, pictures)
    lines += ["## Reproduce", "", "```bash", reproduce(name), "```", ""]
    return "\n".join(lines)


def user_card(c: CardFolder, *, pictures: tuple = ()) -> str:
    """The card of a network of the user's own (no registry entry): what the folder's files say."""
    norm = (c.manifest.get("settings") or {}).get("normalization") or {}
    labels = (c.manifest.get("contract") or {}).get("labels") or []
    size = norm.get("input_size", 28)
    rows = ["| | |", "|---|---|",
            f"| parameters | {_parameters(c.folder):,} |",
            f"| input | uint8 [batch, 1, 28, 28], raw pixels; the graph scales by 1/255, normalizes with mean "
            f"{norm.get('mean')}, std {norm.get('std')}" + (f", pads to {size}x{size}" if size != 28 else "")
            + (f", repeats the grey channel {norm['channels']} times" if norm.get("channels", 1) != 1 else "") + " |",
            f"| classes | {len(labels)}: {', '.join(labels[:12])}{', ...' if len(labels) > 12 else ''} |"]
    if c.training.metrics.test_accuracy is not None:
        rows.append(f"| accuracy when trained (PyTorch) | {c.training.metrics.test_accuracy:.2f}% |")
    lines = [f"# `{c.name}`", "", "A network of your own, exported and gated by mnist-edge.", ""] + rows + [""]
    if c.training.recipe:
        lines += ["## Recipe", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in c.training.recipe.items() if k != "notes"] + [""]
    lines += _parity_lines(c)
    lines += int8_lines(c.manifest, c.int8_report, c.search)
    lines += confidence_lines(c.temperature)
    lines += _latency_lines(c)
    if c.robustness:
        lines += [""] + robustness_lines(c.name, c.robustness, c.robustness_stale)
    return "\n".join(lines) + "\n"


def _parameters(folder: Path) -> int:
    """Trainable parameters of the folder's checkpoint: its tensors less batch-norm's running statistics."""
    from mnist_edge.training.checkpoint import read_checkpoint

    state = read_checkpoint(folder / A.CHECKPOINT)["state_dict"]
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(int(t.numel()) for k, t in state.items() if not k.endswith(skip))


def write_card(folder: str | Path) -> Path:
    """Write ``folder/README.md``, the card of one export folder (a zoo model's or a network of your own)."""
    from mnist_edge.system.extras import require

    require("train", "writing model cards (they read the checkpoints)", ("torch",))
    folder = Path(folder)
    from mnist_edge.manifest import read_manifest

    card = load_card_folder(folder, read_manifest(folder)["model"])
    have = tuple(p for p in PICTURES if (folder / p).is_file())
    write_text_atomic(folder / "README.md", model_card(card, pictures=have))
    return folder / "README.md"


def _restat_rows(record) -> list[str]:
    """The card's row for the recipe's ``reestimate_bn`` step (none when the checkpoint did not take it)."""
    if not record:
        return []
    how = f" ({record.applied})" if record.applied else ""
    val = (f"; validation loss {record.val_loss_before:.4f} -> {record.val_loss:.4f}, accuracy "
           f"{record.val_acc_before:.2f}% -> {record.val_acc:.2f}%" if record.validated else "")
    return [f"| batch-norm statistics | re-estimated on {record.images:,} clean training images after the final "
            f"epoch{how}{val} |"]


INDEX_INTRO = ("Every model of the zoo, trained by its seed's recipe (`edge_cnn`, ours, by its own: "
               "[docs/edge-model.md](../docs/edge-model.md)), exported and gated by `mnist-edge export "
               "--quantize`, verified by the test suite (`tests/test_exported.py`). Accuracy on the full "
               "10,000-image test set; latency p50 in ms at batch 1, 1 thread (`mnist-edge bench`, see each card "
               "for the machine). Training time is the wall clock recorded in each checkpoint; several models were "
               "trained while the 2-core machine also ran other jobs, so those times overstate a quiet machine's.")


def _index_row(c: CardFolder) -> str:
    spec, m = get_spec(c.name), c.training.metrics
    fp32, int8 = c.files.get(A.ONNX), c.files.get(A.INT8)
    doc = f"{spec.documented_accuracy:.2f}%" if spec.documented_accuracy else "-"
    lat = [_ms(c.bench.row(fmt, 1) if c.bench else None) for fmt, _ in FORMATS]
    train = f"{m.train_seconds / 60:.1f} min, {m.device}" if m.train_seconds is not None else "-"
    cells = [f"[`{c.name}`]({c.name}/README.md)", doc, _pct(m.test_accuracy), _pct(fp32 and fp32.accuracy),
             _pct(int8 and int8.accuracy), _pct(int8 and int8.agreement), format_size(fp32.size if fp32 else None),
             format_size(int8.size if int8 else None), *lat, train, int8_verdict(c.manifest, c.search)]
    return "| " + " | ".join(cells) + " |"


def zoo_index(cards: list[CardFolder], plot: str | None = None, robustness: bool = True) -> str:
    """The index's markdown over loaded folders; ``robustness``: with the robustness table."""
    lines = ["# Exported models", "", INDEX_INTRO, "",
             "| model | documented | PyTorch | ONNX fp32 | ONNX int8 | int8 agreement | fp32 size | int8 size | "
             "eager | TorchScript | ONNX fp32 | ONNX int8 | training | int8 verdict (int8/fp32 p50, batch 1 / 64) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_index_row(c) for c in cards]
    if plot:
        lines += ["", f"![accuracy against batch-1 latency; marker area: file size]({plot})", "",
                  "Accuracy against batch-1 latency (p50, 1 thread, from each `bench.json`) for the ONNX fp32 and "
                  "int8 file of every model; a marker's area is the file's size."]
    if robustness:
        rows = [(c.name, c.robustness, c.robustness_stale) for c in cards]
        lines += [""] + robustness_index(rows)[:-1]
    lines += ["", "## Confidence you can act on", "",
              "Each model's `probabilities` are softmax(logits / T), T fitted at export (see each card). Per "
              "threshold P of `predict --min-confidence P`: share of the test set's errors answered \"unsure\" / "
              "share of its correct digits answered \"unsure\" (PyTorch, 10,000 test images).", "",
              *confidence_table([(c.name, c.manifest) for c in cards])]
    lines += ["", "## Reproduce a row", "", "```bash", reproduce("NAME"), "```", ""]
    return "\n".join(lines)


PICTURES = ("confusion.png", "misclassified.png", "misclassified_int8.png")


def write_cards(exported: str | Path = "exported", models: list[str] | None = None, *, pictures: bool = True,
                data_dir=None, progress=None) -> list[Path]:
    """Write the card of each model folder present (or of ``models``) and the index over all present.

    A folder without artifacts (no manifest.json) is refused, and so is an ``exported`` folder holding no
    model folder at all: no card or index is written from nothing, and every folder is read and checked
    before anything is written. ``pictures``: also draw each card's pictures and the index's zoo.png (needs
    matplotlib and the MNIST test set, ``data_dir``). ``progress(message)``: called before each card (with
    pictures each takes a few seconds: every ONNX file runs on the 10,000 test images).
    """
    from mnist_edge import plots
    from mnist_edge.system.extras import require

    require("train", "writing model cards (they read the checkpoints)", ("torch", "matplotlib"))
    exported = Path(exported)
    if not exported.is_dir():
        raise ArtifactError(f"{exported} is not a folder: nothing to write cards for")
    present = [n for n in MODELS if (exported / n / A.MANIFEST).is_file()]
    if not present and not models:
        raise ArtifactError(f"{exported} holds no exported model (no NAME/manifest.json, NAME one of "
                            f"{', '.join(MODELS)}): nothing to write; run `mnist-edge export --model NAME` first")
    wanted = [get_spec(n).name for n in models or present]
    loaded = {n: load_card_folder(exported / n, n) for n in dict.fromkeys(wanted + present)}
    written = []
    for i, name in enumerate(wanted, 1):
        folder = exported / name
        if progress is not None:
            progress(f"card {i}/{len(wanted)}: {name}" + (" (pictures: the ONNX files on the test set)" if pictures else ""))
        if pictures:
            written += model_pictures(folder, data_dir)
        have = tuple(p for p in PICTURES if (folder / p).is_file())
        write_text_atomic(folder / "README.md", model_card(loaded[name], pictures=have))
        written.append(folder / "README.md")
    index = [loaded[n] for n in present]
    points = zoo_points(index)
    if pictures and points:
        written.append(plots.plot_zoo(points, exported / "zoo.png",
                                      title="The zoo: accuracy against batch-1 latency (marker area: file size)"))
    plot = "zoo.png" if (exported / "zoo.png").is_file() else None
    write_text_atomic(exported / "README.md", zoo_index(index, plot))
    return written + [exported / "README.md"]
