"""What an export records about itself: the ONNX metadata, the manifest (checks, measurements, settings,
the int8 recipe and the recommended file) and its reproducible time; no wall clock, no machine path."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.contract import CONTRACT_VERSION, INPUT_DTYPE, INPUT_NAME, INPUT_SHAPE, META_KEYS, OUTPUT_NAMES
from mnist_edge.errors import ExportError, UsageError
from mnist_edge.evaluate import gates as G
from mnist_edge.exporter.onnx_export import metadata_json
from mnist_edge.documents import SCHEMAS
from mnist_edge.manifest import file_record


def versions(torch: bool = True) -> dict:
    """The versions the files were made with (``torch``: of torch and onnxscript too, which an export of a
    float ONNX file does not use)."""
    import onnx
    import onnxruntime

    from mnist_edge.version import __version__

    made = {"mnist_edge": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "python": platform.python_version()}
    if torch:
        import onnxscript
        import torch as torch_module

        made.update(torch=torch_module.__version__, onnxscript=onnxscript.__version__)
    return made


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


def normalization_record(c) -> dict:
    """The metadata's normalization: scale, mean, std, input size and padding (and, for a network that takes
    more than one channel, how many: the key is absent for one, so the zoo's files keep their bytes)."""
    record = {"scale": 1 / 255, "mean": c.mean, "std": c.std, "input_size": c.input_size, "pad": c.pad,
              "formula": "(pad(image / 255, pad) - mean) / std, inside the graph"}
    if c.channels != 1:
        record.update(channels=c.channels, formula="(repeat(pad(image / 255, pad), channels) - mean) / std, "
                                                   "inside the graph")
    return record


def onnx_metadata(source, ckpt_sha: str, vers: dict, temperature: dict | None = None) -> dict[str, str]:
    """The ``metadata_props`` every file of ``source`` (a ModelSource) carries."""
    c = source.contract
    values = {
        "contract": CONTRACT_VERSION,
        "model": source.name,
        "labels": metadata_json(list(c.labels)),
        "input": metadata_json({"name": INPUT_NAME, "dtype": INPUT_DTYPE, "shape": list(INPUT_SHAPE),
                                "range": [0, 255], "pixels": "MNIST: 0 background, 255 ink"}),
        "outputs": metadata_json(list(OUTPUT_NAMES)),
        "normalization": metadata_json(normalization_record(c)),
        "seed_file": source.seed_file,
        "checkpoint_sha256": ckpt_sha,
        "versions": metadata_json(vers),
        "precision": "fp32",
    }
    if temperature is not None:  # mnist_edge.exporter.temperature.metadata_record
        values["temperature"] = metadata_json(temperature)
    return {META_KEYS[k]: v for k, v in values.items()}


def build_manifest(plan, folder: Path, checks, measured) -> dict:
    """The manifest of the export ``plan`` (a pipeline.Plan) whose files are in ``folder``."""
    source, ckpt, ckpt_sha = plan.source, plan.source.record, plan.checkpoint_sha
    files = {}
    if (folder / A.CHECKPOINT).is_file():  # not for a float ONNX source: its sha256 is the source file's
        files[A.CHECKPOINT] = dict(file_record(folder / A.CHECKPOINT), kind="checkpoint",
                                   format=ckpt.get("format", SCHEMAS["checkpoint"]),
                                   test_accuracy=(ckpt.get("metrics") or {}).get("test_accuracy"))
        if files[A.CHECKPOINT]["sha256"] != ckpt_sha:
            raise ExportError("the checkpoint copy changed during the export")
    files.update(_model_entries(plan, folder, checks, measured))
    c, opts = source.contract, plan.options
    return {
        "model": source.name,
        "created": created_time(ckpt),
        "contract": {"version": CONTRACT_VERSION,
                     "input": {"name": INPUT_NAME, "dtype": INPUT_DTYPE, "shape": list(INPUT_SHAPE), "range": [0, 255]},
                     "outputs": list(OUTPUT_NAMES), "labels": list(c.labels)},
        "evaluation": _evaluation(plan),
        "versions": plan.versions,
        "settings": {"opset": opts.opset, "input_scaling": plan.input_scaling, "quantize": plan.quantization is not None,
                     "quantization": plan.quantization, "thresholds": opts.thresholds,
                     "seed_file": source.seed_file, "checkpoint_sha256": ckpt_sha,
                     "normalization": {"mean": c.mean, "std": c.std, "input_size": c.input_size,
                                       **({"channels": c.channels} if c.channels != 1 else {})}},
        # the reference's accuracy: "pytorch", or "source.onnx" for a float ONNX file made elsewhere
        plan.reference.name: {"accuracy": measured[plan.reference.name]["accuracy"]},
        "checks": [ch.to_dict() for ch in checks],
        "files": files,
    }


def _evaluation(plan) -> dict:
    """What the gates ran on; for data other than MNIST also its hash (verify then asks for that data)."""
    from mnist_edge.data.mnist import DATASET_SHA256
    from mnist_edge.training.checkpoint import digits_sha256

    opts = plan.options
    record = {"split": "test", "images": plan.n_eval, "batch_sizes": list(opts.batch_sizes), "threads": 1}
    sha = digits_sha256(plan.data)
    return record if sha == DATASET_SHA256 else dict(record, data_sha256=sha)


def _model_entries(plan, folder: Path, checks, measured) -> dict:
    """The manifest's entry of each model file the gates measured: hash, size, format, what it measured."""
    out = {}
    kinds = {f.name: (f.format, f.precision) for f in A.LAYOUT.values() if f.kind == "model"}  # the layout's table
    for name, (fmt, precision) in kinds.items():
        if name not in measured:
            continue
        summary = G.summarize(checks, name)
        entry = dict(file_record(folder / name), kind="model", format=fmt, precision=precision, **measured[name],
                     label_mismatches=summary["worst"].get("label_mismatches"),
                     by_batch=summary["by_batch"])
        if fmt == "onnx":
            entry.update(opset=plan.onnx_info["opset"], ir_version=plan.onnx_info["ir_version"])
        if precision == "int8":
            entry["accuracy_drop_pp"] = summary["worst"].get("accuracy_drop_pp")
            entry["quantization"] = plan.quantization if fmt == "onnx" else \
                {"recipe": plan.litert["int8"], "tool": "tf.lite.TFLiteConverter", **plan.litert["versions"]}
        if fmt == "tflite":
            entry["layout"] = "NHWC"  # LiteRT's: the file's input is [batch, height, width, channels]
        out[name] = entry
    return out
