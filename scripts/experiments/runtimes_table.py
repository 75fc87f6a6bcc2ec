"""Our artifacts against the runtimes' own defaults, timed side by side in one process per model: docs/litert.md's table.

Per model (an exported folder with LiteRT files: `export --quantize --litert`), in one process, 1 thread:
- ours: model.onnx, model.int8.onnx (onnxruntime), model.tflite, model.int8.tflite (LiteRT, XNNPACK);
- LiteRT default: TensorFlow's default full-integer recipe (per-channel, everything int8 including Softmax)
  on 500 random training images, converted from model.onnx the way the export does (onnx2tf);
- ORT default: onnxruntime.quantization.quantize_static with its defaults (QDQ, MinMax, int8 weights and
  uint8 activations, per tensor) on the same 500 images;
- ORT floor: a one-node graph (uint8 image -> Cast) in onnxruntime: the per-call cost below which no ONNX
  Runtime model can go.
Every candidate's accuracy on all 10,000 test images; timing: mnist_edge.bench.race (blocks of calls in a
seeded shuffled order, repeats; each p50 over the fastest's with a 95% bootstrap interval) at batch 1 and 64.

    python scripts/experiments/runtimes_table.py exported/bn_cnn exported/edge_cnn exported/cnn_small \\
        exported/mlp exported/cnn --json docs/runtimes.json --markdown docs/runtimes.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.bench.race import race_files
from mnist_edge.data.mnist import load_mnist
from mnist_edge.evaluate.ort_eval import make_session, ort_logits
from mnist_edge.files import write_text_atomic
from mnist_edge.system.machine import collect_environment

OURS = {"ORT fp32": A.ONNX, "ours ORT int8": A.INT8, "LiteRT fp32": A.TFLITE, "ours LiteRT int8": A.TFLITE_INT8}


def baselines(folder: Path, train: np.ndarray, work: Path) -> dict[str, Path]:
    """The LiteRT default and ORT default int8 files of ``folder``'s model.onnx, and the ORT floor graph."""
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime.quantization import quantize_static

    from mnist_edge.exporter.litert import convert
    from mnist_edge.int8.quantize import ImageCalibrationReader

    images = train[np.random.default_rng(0).choice(len(train), 500, replace=False)]
    meta = json.loads(json.dumps({"mnist_edge.model": folder.name}))
    files, _ = convert(folder / A.ONNX, images[:, None], {"tf-default": meta}, work)
    out = {"LiteRT default int8": work / "tf-default.tflite"}
    out["LiteRT default int8"].write_bytes(files["tf-default"])
    quantize_static(str(folder / A.ONNX), str(work / "ort-default.onnx"), ImageCalibrationReader(images))
    out["ORT default int8"] = work / "ort-default.onnx"
    node = helper.make_node("Cast", ["image"], ["logits"], to=TensorProto.FLOAT)
    graph = helper.make_graph([node], "floor", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["b", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 1, 28, 28])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, work / "floor.onnx")
    out["ORT floor"] = work / "floor.onnx"
    return out


def one_model(folder: Path, x, y, train, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mnist-edge-runtimes-") as tmp:
        files = {label: folder / name for label, name in OURS.items() if (folder / name).is_file()}
        files.update(baselines(folder, train, Path(tmp)))
        sessions = {label: make_session(path) for label, path in files.items()}
        accuracy = {label: round(float((ort_logits(s, x, 100).argmax(1) == y).mean() * 100), 2)
                    for label, s in sessions.items() if label != "ORT floor"}
        race = race_files(sessions, x, ((1, 50), (64, 5)), repeats=repeats)["by_batch"]
        timing = {batch: v["rows"] for batch, v in race.items()}
        for batch in timing:
            print(f"{folder.name} batch {batch}: " + ", ".join(f"{r['file']} {r['p50_ms'] * 1000:.1f} us"
                                                             for r in timing[str(batch)]), file=sys.stderr)
    manifest = json.loads((folder / A.MANIFEST).read_text())
    return {"model": folder.name, "recommended": manifest.get("recommended"),
            "fastest": {b: v["winner"]["file"] for b, v in manifest.get("fastest", {}).get("by_batch", {}).items()},
            "accuracy": accuracy, "timing": timing}


def markdown(rows: list, cpu: str) -> str:
    labels = ["ORT floor", "ORT fp32", "ORT default int8", "ours ORT int8", "LiteRT fp32", "LiteRT default int8",
              "ours LiteRT int8"]
    out = [f"p50 in microseconds at batch 1 (batch 64 below), 1 thread, {cpu}; accuracy on the 10,000 test images "
           "in brackets; last column: our recommended file at that batch size over the fastest correct file (any "
           "row whose accuracy is within 0.3 points of ORT fp32), ratio of p50s.", ""]
    for batch in ("1", "64"):
        out += [f"**batch {batch}**", "", "| model | " + " | ".join(labels) + " | recommended / fastest correct |",
                "|---|" + "---|" * (len(labels) + 1)]
        for r in rows:
            t = {row["file"]: row for row in r["timing"][batch]}
            correct = [row for row in r["timing"][batch] if row["file"] != "ORT floor" and
                       r["accuracy"].get(row["file"], 0) >= r["accuracy"]["ORT fp32"] - 0.3]
            best = min(correct, key=lambda row: row["p50_ms"])
            cells = []
            for label in labels:
                if label not in t:
                    cells.append("-")
                    continue
                acc = f" ({r['accuracy'][label]:.2f}%)" if label in r["accuracy"] else ""
                cells.append(f"{t[label]['p50_ms'] * 1000:.1f}{acc}")
            ours = {A.ONNX: "ORT fp32", A.INT8: "ours ORT int8", A.TFLITE: "LiteRT fp32",
                    A.TFLITE_INT8: "ours LiteRT int8"}[r["fastest"].get(batch, r["recommended"])]
            ratio = t[ours]["p50_ms"] / best["p50_ms"]
            out.append(f"| {r['model']} | " + " | ".join(cells) + f" | {ours} / {best['file']}: {ratio:.2f}x |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer "consider pre-processing" warnings
    x, y = load_mnist("test")
    train, _ = load_mnist("train")
    x = np.ascontiguousarray(x[:, None])
    rows = [one_model(f, x, y.astype(np.int64), train, args.repeats) for f in args.folders]
    env = collect_environment()
    cpu = env["cpu"]["model"] or "unknown CPU"
    record = {"command": "python scripts/experiments/runtimes_table.py " + " ".join(f"exported/{f.name}" for f in args.folders),
              "cpu": cpu, "threads": 1, "load_average": env["load_average"], "versions": env.get("versions"), "rows": rows}
    text = markdown(rows, cpu)
    print(text)
    for path, content in ((args.json, json.dumps(record, indent=1) + "\n"), (args.markdown, text + "\n")):
        if path:
            write_text_atomic(path, content)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
