"""Model cards: `exported/NAME/README.md` and the zoo index `exported/README.md`, drawn from the files.

Every number in a card comes from an artifact, never typed by hand: accuracy, agreement, differences
and sizes from `manifest.json`; recipe, history, training time and hardware from `checkpoint.pt`;
latency from `bench.json` (a `mnist-edge bench --json` report, schema mnist-edge-bench/1).
"""

from __future__ import annotations

from pathlib import Path

from mnist_edge.errors import ArtifactError, UsageError
from mnist_edge.io import write_text_atomic
from mnist_edge.zoo import MODELS, get_spec

FORMATS = (("eager", "PyTorch eager"), ("torchscript", "TorchScript"), ("onnx", "ONNX fp32"),
           ("int8", "ONNX int8"))
FILES = {"model.pt": "TorchScript", "model.onnx": "ONNX fp32", "model.int8.onnx": "ONNX int8 (QDQ)"}


def _latency(bench: dict | None, fmt: str, batch: int, threads: int = 1):
    for r in (bench or {}).get("results", []):
        if r["format"] == fmt and r["batch"] == batch and r["threads"] == threads:
            return r
    return None


def _ms(row, key="p50_ms") -> str:
    return f"{row[key]:.3f}" if row else "-"


def reproduce(name: str) -> str:
    return (f"mnist-edge train --model {name} --out runs/{name}/checkpoint.pt\n"
            f"mnist-edge export --model {name} --checkpoint runs/{name}/checkpoint.pt --quantize\n"
            f"mnist-edge bench --model exported/{name} --threads 1 --json exported/{name}/bench.json\n"
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
    return read_manifest(folder), read_checkpoint(folder / "checkpoint.pt"), bench


def _render(folder, fn, *args) -> str:
    """``fn(*args)``; a field missing or of the wrong type in a file we did not write is an ArtifactError."""
    try:
        return fn(*args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
        raise ArtifactError(f"cannot make the card of '{folder}': its manifest, checkpoint or bench.json lacks "
                            f"a field the card needs or holds a wrong type ({type(e).__name__}: {e})") from None


def model_card(name: str, manifest: dict, ckpt: dict, bench: dict | None) -> str:
    from mnist_edge.models import build_net, count_macs, count_params

    spec = get_spec(name)
    net = build_net(name)
    files, m, recipe = manifest["files"], ckpt["metrics"], ckpt["recipe"]
    doc = f"{spec.documented_accuracy:.2f}%" if spec.documented_accuracy else "not documented"
    epoch_s = sum(h["seconds"] for h in ckpt["history"]) / len(ckpt["history"])
    lines = [
        f"# `{name}`", "",
        f"{spec.description}. Seed document: `{spec.seed_file}`.", "",
        "| | |", "|---|---|",
        f"| parameters | {count_params(net):,}" + (f" (seed: {spec.documented_params:,})" if spec.documented_params else "") + " |",
        f"| multiply-accumulates per image | {count_macs(net, spec.input_size):,} |",
        f"| input | uint8 [batch, 1, 28, 28], raw MNIST pixels; the graph scales by 1/255, normalizes with "
        f"mean {spec.mean}, std {spec.std}" + (", pads to 32x32" if spec.input_size == 32 else "") + " |",
        f"| documented accuracy | {doc} |",
        f"| achieved accuracy (PyTorch, 10,000 test images) | {m['test_accuracy']:.2f}% (model chosen: {m['selected']}) |",
        f"| training | {len(ckpt['history'])} epochs, {m['train_seconds']:.0f} s ({epoch_s:.1f} s/epoch) on "
        f"{m['device']} ({m['device_name']}, {m['threads']} threads), seed {m['seed']} |",
        "",
    ]
    if spec.reading:
        lines += ["**Our reading of the seed.** " + spec.reading, ""]
    lines += ["## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in recipe.items() if k != "notes"]
    lines += ["", spec.recipe.notes, "", "## Accuracy and parity per format", "",
              "Measured by `mnist-edge export` on the full test set at batch sizes 1, 7 and 64.", "",
              "| file | format | size | accuracy | agreement with reference | max abs Δ logits | reference |",
              "|---|---|---|---|---|---|---|"]
    for fname, label in FILES.items():
        f = files.get(fname)
        if f:
            lines.append(f"| `{fname}` | {label} | {f['size'] / 1024:.1f} KiB | {f['accuracy']:.2f}% | "
                         f"{f['agreement']:.2f}% | {f['max_abs_diff']:.2e} | {f['reference']} |")
    q = manifest["settings"].get("quantization")
    if q:
        src = q["calibration_source"]
        lines += ["", f"int8: `{q['tool']}`, {q['quant_format'].upper()}, {q['calibration_method']} calibration on "
                      f"{src['images']} class-balanced training images ({src['split']} split, seed {src['seed']}), "
                      f"weights {q['weight_type']} {'per channel' if q['per_channel'] else 'per tensor'}, "
                      f"activations {q['activation_type']}."]
    lines += ["", "## Latency", ""]
    if bench:
        env = bench["environment"]
        lines += [f"`{bench['command']}` on {env['cpu']['model']} ({env['cpu'].get('usable_cores')} usable cores), "
                  f"onnxruntime {env['versions'].get('onnxruntime')}, torch {env['versions'].get('torch')}; "
                  "1 thread, milliseconds per call.", "",
                  "| format | batch 1 p50 | batch 1 p99 | batch 64 p50 | batch 64 p99 |", "|---|---|---|---|---|"]
        for fmt, label in FORMATS:
            b1, b64 = _latency(bench, fmt, 1), _latency(bench, fmt, 64)
            lines.append(f"| {label} | {_ms(b1)} | {_ms(b1, 'p99_ms')} | {_ms(b64)} | {_ms(b64, 'p99_ms')} |")
        lines += ["", bench["advice"]["line"]]
    else:
        lines.append("Not measured yet: run `mnist-edge bench` (see below).")
    lines += ["", "## Files", "", "`checkpoint.pt` (weights-only, rebuilds its model), `model.pt`, `model.onnx`, "
              "`model.int8.onnx`, `manifest.json` (SHA-256 of every file; check with `mnist-edge verify "
              f"exported/{name}`), `training_curves.png`, `bench.json`.", "",
              "![training curves](training_curves.png)", "", "## Reproduce", "", "```bash", reproduce(name), "```", ""]
    return "\n".join(lines)


def zoo_index(rows: list[tuple[str, dict, dict, dict | None]]) -> str:
    lines = ["# Exported models", "",
             "Every model of the zoo, trained by its seed's recipe, exported and gated by `mnist-edge export "
             "--quantize`, verified by the test suite (`tests/test_exported.py`). Accuracy on the full "
             "10,000-image test set; latency p50 in ms at batch 1, 1 thread (`mnist-edge bench`, see each card "
             "for the machine). Training time is the wall clock recorded in each checkpoint; several models were "
             "trained while the 2-core machine also ran other jobs, so those times overstate a quiet machine's.", "",
             "| model | documented | PyTorch | ONNX fp32 | ONNX int8 | int8 agreement | fp32 size | int8 size | "
             "eager | TorchScript | ONNX fp32 | ONNX int8 | training |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, man, ckpt, bench in rows:
        spec, f, m = get_spec(name), man["files"], ckpt["metrics"]
        doc = f"{spec.documented_accuracy:.2f}%" if spec.documented_accuracy else "-"
        lat = [_ms(_latency(bench, fmt, 1)) for fmt, _ in FORMATS]
        lines.append(
            f"| [`{name}`]({name}/README.md) | {doc} | {m['test_accuracy']:.2f}% | {f['model.onnx']['accuracy']:.2f}% | "
            f"{f['model.int8.onnx']['accuracy']:.2f}% | {f['model.int8.onnx']['agreement']:.2f}% | "
            f"{f['model.onnx']['size'] / 1024:.0f} KiB | {f['model.int8.onnx']['size'] / 1024:.0f} KiB | "
            + " | ".join(lat) + f" | {m['train_seconds'] / 60:.1f} min, {m['device']} |")
    lines += ["", "## Reproduce a row", "", "```bash", reproduce("NAME"), "```", ""]
    return "\n".join(lines)


def write_cards(exported: str | Path = "exported", models: list[str] | None = None) -> list[Path]:
    """Write the card of each model folder present (or of ``models``) and the index over all present."""
    exported = Path(exported)
    written = []
    for name in models or [n for n in MODELS if (exported / n / "manifest.json").is_file()]:
        folder = exported / get_spec(name).name
        manifest, ckpt, bench = load_folder(folder)
        write_text_atomic(folder / "README.md", _render(folder, model_card, name, manifest, ckpt, bench))
        written.append(folder / "README.md")
    rows = [(n, *load_folder(exported / n)) for n in MODELS if (exported / n / "manifest.json").is_file()]
    write_text_atomic(exported / "README.md", _render(exported, zoo_index, rows))
    return written + [exported / "README.md"]
