"""Model cards: `exported/NAME/README.md` and the zoo index `exported/README.md`, drawn from the files.

Every number in a card comes from an artifact, never typed by hand: accuracy, agreement, differences
and sizes from `manifest.json`; recipe, history, training time and hardware from `checkpoint.pt`;
latency from `bench.json` (a `mnist-edge bench --json` report, schema mnist-edge-bench/1) and accuracy
under the robustness suite from `robustness.json` (`mnist-edge robustness --json`, mnist-edge-robustness/1),
each marked stale when the SHA-256 it recorded for a file is not that of the file beside it now. The pictures
(`confusion.png`, `misclassified.png`, `misclassified_int8.png`, and `zoo.png` for the index) come from
running the ONNX files on the 10,000 test images with the torch-free runtime.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.cards_int8 import format_name, int8_lines, int8_verdict
from mnist_edge.card_reliability import (confidence_lines, confidence_table, load_robustness, robustness_index,
                                         robustness_lines)
from mnist_edge.errors import ArtifactError, UsageError
from mnist_edge.files import format_size, sha256_file, write_text_atomic
from mnist_edge.zoo import MODELS, get_spec

FORMATS = (("eager", "PyTorch eager"), ("torchscript", "TorchScript"), ("onnx", "ONNX fp32"),
           ("int8", "ONNX int8"))
FILES = {A.TORCHSCRIPT: "TorchScript", A.ONNX: "ONNX fp32", A.INT8: "ONNX int8"}  # int8: + its format


def _latency(bench: dict | None, fmt: str, batch: int, threads: int = 1):
    for r in (bench or {}).get("results", []):
        if r["format"] == fmt and r["batch"] == batch and r["threads"] == threads:
            return r
    return None


def _ms(row, key="p50_ms") -> str:
    return f"{row[key]:.3f}" if row else "-"


def stale_formats(folder: Path, bench: dict | None) -> dict[str, str]:
    """{format: why} for each benchmarked format whose file is gone or has other bytes than were timed."""
    out = {}
    for e in (bench or {}).get("formats", []):
        if e.get("status") != "ok" or not e.get("file") or not e.get("sha256"):
            continue
        path = folder / Path(e["file"]).name
        if not path.is_file():
            out[e["format"]] = f"{path.name} is gone"
        elif sha256_file(path) != e["sha256"]:
            out[e["format"]] = f"{path.name} changed since it was timed"
    return out


def model_pictures(folder: Path, data_dir=None) -> list[Path]:
    """confusion.png (fp32, and int8 beside it when its predictions differ), misclassified.png (the fp32
    model's errors) and misclassified_int8.png (the digits where int8's label differs from fp32's), from
    the ONNX files on the 10,000 test images. Needs matplotlib and the MNIST test set."""
    from mnist_edge import plots
    from mnist_edge.data import load_mnist
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


def zoo_points(rows) -> list[dict]:
    """The zoo plot's points: ONNX fp32 and int8 of each model with a bench report (batch 1, 1 thread)."""
    points = []
    for name, man, _ckpt, bench in rows:
        for fmt, fname, label in (("onnx", A.ONNX, "ONNX fp32"), ("int8", A.INT8, "ONNX int8")):
            row, f = _latency(bench, fmt, 1), man["files"].get(fname)
            if row and f and f.get("accuracy") is not None:
                points.append({"model": name, "format": label, "latency_ms": row["p50_ms"],
                               "accuracy": f["accuracy"], "size_bytes": f["size"]})
    return points


def reproduce(name: str) -> str:
    return (f"mnist-edge train --model {name} --out runs/{name}/checkpoint.pt\n"
            f"mnist-edge quantize --model {name} --search --register --out exported/{name}  # measures this machine\n"
            f"mnist-edge export --model {name} --checkpoint runs/{name}/checkpoint.pt --quantize\n"
            f"mnist-edge bench --model exported/{name} --threads 1 --json exported/{name}/bench.json\n"
            f"mnist-edge robustness {name} --threads 1 --json exported/{name}/robustness.json\n"
            f"mnist-edge card --model {name}")


def load_folder(folder: Path) -> tuple[dict, dict, dict | None]:
    """(manifest, checkpoint, bench report or None) of an exported folder; each read and validated."""
    from mnist_edge.bench.report import load_report
    from mnist_edge.checkpoint import read_checkpoint
    from mnist_edge.manifest import read_manifest

    bench_path = folder / "bench.json"
    try:
        bench = load_report(bench_path) if bench_path.exists() else None
    except UsageError as e:
        raise ArtifactError(f"cannot make the card of '{folder}': {e}") from None
    return read_manifest(folder), read_checkpoint(folder / A.CHECKPOINT), bench


def load_int8_report(folder: Path) -> dict | None:
    """The folder's int8 diagnosis (``mnist-edge quantize --report``), None when it has none."""
    path = folder / "int8_report.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot make the card of '{folder}': int8_report.json is not readable JSON ({e})") from None
    return data if isinstance(data, dict) else None


def _render(folder, fn, *args) -> str:
    """``fn(*args)``; a field missing or of the wrong type in a file we did not write is an ArtifactError."""
    try:
        return fn(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
        raise ArtifactError(f"cannot make the card of '{folder}': its manifest, checkpoint or bench.json lacks "
                            f"a field the card needs or holds a wrong type ({type(e).__name__}: {e})") from None


def _recipe_notes(recipe: dict, spec) -> str:
    """The checkpoint's recipe notes, or the registry's when the checkpoint was trained by the registered
    recipe (its notes were written before an option such as --epochs was overridden, then registered); any
    setting that differs from the registry's is named."""
    registered = asdict(spec.recipe)
    defaults = {f.name: f.default for f in fields(spec.recipe) if f.default is not MISSING}
    trained = {**defaults, **recipe}  # a setting newer than the checkpoint had its default value then
    differs = [f"{k} {trained[k]} (registry: {registered[k]})" for k in registered
               if k != "notes" and trained[k] != registered[k]]
    if not differs:
        return spec.recipe.notes or recipe.get("notes") or ""
    return (recipe.get("notes") or spec.recipe.notes) + " Trained with settings that differ from the registered " \
        "recipe: " + ", ".join(differs) + "."


def model_card(name: str, manifest: dict, ckpt: dict, bench: dict | None, *, stale: dict | None = None,
               pictures: tuple = (), robustness: dict | None = None, robustness_stale: dict | None = None,
               int8_report: dict | None = None) -> str:
    """The card's markdown. ``stale``: {format: why} from :func:`stale_formats`; ``pictures``: the names
    of the picture files present in the folder; ``robustness``: its robustness report, with
    ``robustness_stale`` from :func:`mnist_edge.robustness.stale_files`."""
    from mnist_edge.models import build_net, count_macs, count_params

    spec = get_spec(name)
    net = build_net(name)
    files, m, recipe = manifest["files"], ckpt["metrics"], ckpt["recipe"]
    doc = f"{spec.documented_accuracy:.2f}%" if spec.documented_accuracy else "not documented"
    epoch_s = sum(h["seconds"] for h in ckpt["history"]) / len(ckpt["history"])
    lines = [
        f"# `{name}`", "",
        f"{spec.description}. " + (f"Seed document: `{spec.seed_file}`." if spec.seed_file else
                                   "Not from a seed: our own design. What was tried and what each change bought: "
                                   "[docs/edge-model.md](../../docs/edge-model.md)."), "",
        "| | |", "|---|---|",
        f"| parameters | {count_params(net):,}" + (f" (seed: {spec.documented_params:,})" if spec.documented_params else "") + " |",
        f"| multiply-accumulates per image | {count_macs(net, spec.input_size):,} |",
        f"| input | uint8 [batch, 1, 28, 28], raw MNIST pixels; the graph scales by 1/255, normalizes with "
        f"mean {spec.mean}, std {spec.std}" + (", pads to 32x32" if spec.input_size == 32 else "") + " |",
        f"| documented accuracy | {doc} |",
        f"| achieved accuracy (PyTorch, 10,000 test images) | {m['test_accuracy']:.2f}% (model chosen: {m['selected']}) |",
        f"| training | {len(ckpt['history'])} epochs, {m['train_seconds']:.0f} s ({epoch_s:.1f} s/epoch) on "
        f"{m['device']} ({m['device_name']}, {m['threads']} thread{'s' if m['threads'] != 1 else ''}), seed {m['seed']} |",
        *_restat_rows(m.get("reestimate_bn")),
        "",
    ]
    if spec.reading:
        lines += [("**Our reading of the seed.** " if spec.seed_file else "**Design.** ") + spec.reading, ""]
    lines += ["## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in recipe.items() if k != "notes"]
    lines += ["", _recipe_notes(recipe, spec), "", "## Accuracy and parity per format", "",
              "Measured by `mnist-edge export` on the full test set at batch sizes 1, 7 and 64.", "",
              "| file | format | size | accuracy | agreement with reference | max abs Δ logits | reference |",
              "|---|---|---|---|---|---|---|"]
    q = manifest["settings"].get("quantization")
    for fname, label in FILES.items():
        f = files.get(fname)
        if f:
            if fname == A.INT8 and q:
                label += f" ({format_name(q)})"
            lines.append(f"| `{fname}` | {label} | {format_size(f['size'])} | {f['accuracy']:.2f}% | "
                         f"{f['agreement']:.2f}% | {f['max_abs_diff']:.2e} | {f['reference']} |")
    lines += int8_lines(manifest, int8_report)
    lines += confidence_lines(manifest)
    lines += ["", "## Latency", ""]
    if bench:
        env = bench["environment"]
        lines += [f"`{bench['command']}` on {env['cpu']['model']} ({env['cpu'].get('usable_cores')} usable cores), "
                  f"onnxruntime {env['versions'].get('onnxruntime')}, torch {env['versions'].get('torch')}; "
                  "1 thread, milliseconds per call.", "",
                  "| format | batch 1 p50 | batch 1 p99 | batch 64 p50 | batch 64 p99 |", "|---|---|---|---|---|"]
        stale = stale or {}
        for fmt, label in FORMATS:
            b1, b64 = _latency(bench, fmt, 1), _latency(bench, fmt, 64)
            mark = " (stale)" if fmt in stale else ""
            lines.append(f"| {label}{mark} | {_ms(b1)} | {_ms(b1, 'p99_ms')} | {_ms(b64)} | {_ms(b64, 'p99_ms')} |")
        if (bench.get("int8_vs_fp32") or {}).get("rows"):
            lines += ["", "Each p50 above times one file in its own process, one file after the other; the int8/fp32 "
                          "ratios below time both files interleaved in one process, as `mnist-edge quantize --search` "
                          "does, so a change of load on the machine falls on both."]
        lines += ["", bench["advice"]["line"]]
        if stale:
            lines += ["", "**Stale:** " + "; ".join(f"{fmt}: {why}" for fmt, why in stale.items())
                      + ". These timings describe other files; run the bench command below again."]
    else:
        lines.append("Not measured yet: run `mnist-edge bench` (see below).")
    lines += [""] + robustness_lines(name, robustness, robustness_stale)
    lines += ["## Files", "", "`checkpoint.pt` (weights-only, rebuilds its model), `model.pt`, `model.onnx`, "
              "`model.int8.onnx`, `manifest.json` (SHA-256 of every file; check with `mnist-edge verify "
              f"exported/{name}`), `training_curves.png`, `bench.json`, `robustness.json`.", "",
              "![training curves](training_curves.png)", ""]
    if pictures:
        lines += ["## Errors on the test set", "",
                  "The ONNX files on the 10,000 test images, run by the torch-free runtime (`mnist-edge card`).", ""]
        captions = {"confusion.png": "confusion matrix", "misclassified.png": "misclassified test digits",
                    "misclassified_int8.png": "digits where int8's label differs from fp32's"}
        lines += [f"![{captions[p]}]({p})\n" for p in captions if p in pictures]
    lines += ["## Reproduce", "", "```bash", reproduce(name), "```", ""]
    return "\n".join(lines)


def _restat_rows(record: dict | None) -> list[str]:
    """The card's row for the recipe's ``reestimate_bn`` step (none when the checkpoint did not take it)."""
    if not record:
        return []
    how = f" ({record['applied']})" if record.get("applied") else ""
    val = (f"; validation loss {record['val_loss_before']:.4f} -> {record['val_loss']:.4f}, accuracy "
           f"{record['val_acc_before']:.2f}% -> {record['val_acc']:.2f}%" if "val_loss" in record else "")
    return [f"| batch-norm statistics | re-estimated on {record['images']:,} clean training images after the final "
            f"epoch{how}{val} |"]


def zoo_index(rows: list[tuple[str, dict, dict, dict | None]], plot: str | None = None,
              robustness: list[tuple[str, dict | None, dict]] | None = None) -> str:
    """The index's markdown; ``robustness``: rows for :func:`robustness_index` (None: no such section)."""
    lines = ["# Exported models", "",
             "Every model of the zoo, trained by its seed's recipe (`edge_cnn`, ours, by its own: "
             "[docs/edge-model.md](../docs/edge-model.md)), exported and gated by `mnist-edge export "
             "--quantize`, verified by the test suite (`tests/test_exported.py`). Accuracy on the full "
             "10,000-image test set; latency p50 in ms at batch 1, 1 thread (`mnist-edge bench`, see each card "
             "for the machine). Training time is the wall clock recorded in each checkpoint; several models were "
             "trained while the 2-core machine also ran other jobs, so those times overstate a quiet machine's.", "",
             "| model | documented | PyTorch | ONNX fp32 | ONNX int8 | int8 agreement | fp32 size | int8 size | "
             "eager | TorchScript | ONNX fp32 | ONNX int8 | training | int8 verdict (int8/fp32 p50, batch 1 / 64) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, man, ckpt, bench in rows:
        spec, f, m = get_spec(name), man["files"], ckpt["metrics"]
        doc = f"{spec.documented_accuracy:.2f}%" if spec.documented_accuracy else "-"
        lat = [_ms(_latency(bench, fmt, 1)) for fmt, _ in FORMATS]
        lines.append(
            f"| [`{name}`]({name}/README.md) | {doc} | {m['test_accuracy']:.2f}% | {f['model.onnx']['accuracy']:.2f}% | "
            f"{f['model.int8.onnx']['accuracy']:.2f}% | {f['model.int8.onnx']['agreement']:.2f}% | "
            f"{format_size(f['model.onnx']['size'])} | {format_size(f['model.int8.onnx']['size'])} | "
            + " | ".join(lat) + f" | {m['train_seconds'] / 60:.1f} min, {m['device']} | {int8_verdict(man)} |")
    if plot:
        lines += ["", f"![accuracy against batch-1 latency; marker area: file size]({plot})", "",
                  "Accuracy against batch-1 latency (p50, 1 thread, from each `bench.json`) for the ONNX fp32 and "
                  "int8 file of every model; a marker's area is the file's size."]
    if robustness is not None:
        lines += [""] + robustness_index(robustness)[:-1]
    lines += ["", "## Confidence you can act on", "",
              "Each model's `probabilities` are softmax(logits / T), T fitted at export (see each card). Per "
              "threshold P of `predict --min-confidence P`: share of the test set's errors answered \"unsure\" / "
              "share of its correct digits answered \"unsure\" (PyTorch, 10,000 test images).", "",
              *confidence_table(rows)]
    lines += ["", "## Reproduce a row", "", "```bash", reproduce("NAME"), "```", ""]
    return "\n".join(lines)


PICTURES = ("confusion.png", "misclassified.png", "misclassified_int8.png")


def write_cards(exported: str | Path = "exported", models: list[str] | None = None, *, pictures: bool = True,
                data_dir=None) -> list[Path]:
    """Write the card of each model folder present (or of ``models``) and the index over all present.

    A folder without artifacts (no manifest.json) is refused, and so is an ``exported`` folder holding no
    model folder at all: no card or index is written from nothing. ``pictures``: also draw each card's
    pictures and the index's zoo.png (needs matplotlib and the MNIST test set, ``data_dir``).
    """
    from mnist_edge import plots
    from mnist_edge.extras import require
    from mnist_edge.robustness import stale_files

    require("train", "writing model cards (they read the checkpoints)", ("torch", "matplotlib"))

    exported = Path(exported)
    present = [n for n in MODELS if (exported / n / A.MANIFEST).is_file()]
    if not exported.is_dir():
        raise ArtifactError(f"{exported} is not a folder: nothing to write cards for")
    if not present and not models:
        raise ArtifactError(f"{exported} holds no exported model (no NAME/manifest.json, NAME one of "
                            f"{', '.join(MODELS)}): nothing to write; run `mnist-edge export --model NAME` first")
    written = []
    for name in models or present:
        folder = exported / get_spec(name).name
        manifest, ckpt, bench = load_folder(folder)  # ArtifactError naming a folder without a manifest
        robust = load_robustness(folder)
        if pictures:
            written += model_pictures(folder, data_dir)
        have = tuple(p for p in PICTURES if (folder / p).is_file())
        card = _render(folder, lambda: model_card(get_spec(name).name, manifest, ckpt, bench,
                                                  stale=stale_formats(folder, bench), pictures=have,
                                                  robustness=robust,
                                                  robustness_stale=stale_files(folder, robust),
                                                  int8_report=load_int8_report(folder)))
        write_text_atomic(folder / "README.md", card)
        written.append(folder / "README.md")
    rows = [(n, *load_folder(exported / n)) for n in present]
    plot = None
    points = zoo_points(rows)
    if pictures and points:
        written.append(plots.plot_zoo(points, exported / "zoo.png",
                                      title="The zoo: accuracy against batch-1 latency (marker area: file size)"))
    if (exported / "zoo.png").is_file():
        plot = "zoo.png"
    robust_rows = [(n, r, stale_files(exported / n, r)) for n in present
                   for r in (load_robustness(exported / n),)]
    write_text_atomic(exported / "README.md", _render(exported, zoo_index, rows, plot, robust_rows))
    return written + [exported / "README.md"]
