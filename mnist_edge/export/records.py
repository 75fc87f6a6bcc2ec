"""What an export records about itself: the ONNX metadata, the manifest (checks, measurements, settings,
the int8 recipe and the recommended file) and its reproducible time; no wall clock, no machine path."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.contract import CONTRACT_VERSION, INPUT_DTYPE, INPUT_NAME, INPUT_SHAPE, LABELS, META_KEYS, OUTPUT_NAMES
from mnist_edge.errors import ExportError, UsageError
from mnist_edge.export import gates as G
from mnist_edge.export.onnx_export import metadata_json
from mnist_edge.export.quantize import QuantizeOptions
from mnist_edge.manifest import file_record

def versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    from mnist_edge import __version__

    return {"mnist_edge": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def created_time(ckpt: dict) -> str | None:
    """The manifest's ``created``: ``$SOURCE_DATE_EPOCH`` when set, else when the checkpoint's training
    finished (its own record), else None. Never the export's wall clock: the same checkpoint exported
    with the same versions gives the same bytes, wherever and whenever it is exported."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        if not epoch.isdigit():
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} must be a whole number of seconds since 1970")
        return datetime.fromtimestamp(int(epoch), timezone.utc).isoformat(timespec="seconds")
    finished = (ckpt.get("metrics") or {}).get("finished_utc")
    return finished if isinstance(finished, str) else None


def recommendation(int8_recipe, qopts: QuantizeOptions) -> dict:
    """Manifest keys: the file to ship (fp32 when the recipe's search found int8 does not pay) and why."""
    record = int8_recipe.record()
    if qopts != int8_recipe.options:
        record.update(source=f"{record['source']}, options changed on the command line", verdict=None,
                      recommended=A.INT8)
        for key in ("summary", "chosen", "search", "trials"):
            record.pop(key, None)  # evidence about other options
    return {"recommended": record["recommended"], "int8_recipe": record}


def onnx_metadata(spec, ckpt_sha: str, vers: dict, temperature: dict | None = None) -> dict[str, str]:
    pad = (spec.input_size - 28) // 2
    values = {
        "contract": CONTRACT_VERSION,
        "model": spec.name,
        "labels": metadata_json(list(LABELS)),
        "input": metadata_json({"name": INPUT_NAME, "dtype": INPUT_DTYPE, "shape": list(INPUT_SHAPE),
                                "range": [0, 255], "pixels": "MNIST: 0 background, 255 ink"}),
        "outputs": metadata_json(list(OUTPUT_NAMES)),
        "normalization": metadata_json({"scale": 1 / 255, "mean": spec.mean, "std": spec.std,
                                        "input_size": spec.input_size, "pad": pad,
                                        "formula": "(pad(image / 255, pad) - mean) / std, inside the graph"}),
        "seed_file": spec.seed_file,
        "checkpoint_sha256": ckpt_sha,
        "versions": metadata_json(vers),
        "precision": "fp32",
    }
    if temperature is not None:  # mnist_edge.export.calibrate.metadata_record
        values["temperature"] = metadata_json(temperature)
    return {META_KEYS[k]: v for k, v in values.items()}


def build_manifest(spec, ckpt, ckpt_sha, folder: Path, checks, measured, vers, onnx_info, opset, recipe,
              n_eval, batch_sizes, thresholds) -> dict:
    files = {A.CHECKPOINT: dict(file_record(folder / A.CHECKPOINT), kind="checkpoint", format=ckpt["format"],
                                   test_accuracy=(ckpt.get("metrics") or {}).get("test_accuracy"))}
    if files[A.CHECKPOINT]["sha256"] != ckpt_sha:
        raise ExportError("the checkpoint copy changed during the export")
    kinds = {f.name: (f.format, f.precision) for f in A.LAYOUT.values() if f.kind == "model"}  # the layout's table
    for name, (fmt, precision) in kinds.items():
        if name not in measured:
            continue
        summary = G.summarize(checks, name)
        entry = dict(file_record(folder / name), kind="model", format=fmt, precision=precision, **measured[name],
                     label_mismatches=summary["worst"].get("label_mismatches"),
                     by_batch=summary["by_batch"])
        if fmt == "onnx":
            entry.update(opset=onnx_info["opset"], ir_version=onnx_info["ir_version"])
        if precision == "int8":
            entry["accuracy_drop_pp"] = summary["worst"].get("accuracy_drop_pp")
            entry["quantization"] = recipe
        files[name] = entry
    return {
        "model": spec.name,
        "created": created_time(ckpt),
        "contract": {"version": CONTRACT_VERSION,
                     "input": {"name": INPUT_NAME, "dtype": INPUT_DTYPE, "shape": list(INPUT_SHAPE), "range": [0, 255]},
                     "outputs": list(OUTPUT_NAMES), "labels": list(LABELS)},
        "evaluation": {"split": "test", "images": n_eval, "batch_sizes": list(batch_sizes), "threads": 1},
        "versions": vers,
        "settings": {"opset": opset, "quantize": recipe is not None, "quantization": recipe,
                     "thresholds": thresholds, "seed_file": spec.seed_file,
                     "checkpoint_sha256": ckpt_sha, "normalization": {"mean": spec.mean, "std": spec.std,
                                                                      "input_size": spec.input_size}},
        "pytorch": {"accuracy": measured["pytorch"]["accuracy"]},
        "checks": [c.to_dict() for c in checks],
        "files": files,
    }
