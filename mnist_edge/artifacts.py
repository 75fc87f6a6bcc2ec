"""The artifact layout (one table: file, kind, precision, how it loads) and one resolver from what a user types
(a zoo name, a folder, a file) to an artifact. Standard library only: the runtime, the CLI and the build use it.

Every command that takes a model (``predict``, ``verify``, ``bench``, ``demo``, ``export --out``'s default)
resolves it here, by one rule:

1. an existing file: that file, in its folder;
2. an existing folder: that artifact folder;
3. a zoo name (any case): ``exported/NAME`` relative to the working directory, else the copy installed
   with the package (the wheel carries the default model; an editable install's copy is its checkout's
   ``exported/``, see :mod:`mnist_edge.packaged`);
4. anything else: an error naming what was tried, with the zoo's names and the closest one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mnist_edge.errors import ArtifactError, UsageError


@dataclass(frozen=True)
class FileKind:
    """One file of an artifact folder."""

    name: str  # file name inside the folder
    kind: str  # "checkpoint", "model", "selftest" or "manifest" (the manifest's ``kind`` field)
    format: str  # "checkpoint", "torchscript", "onnx", "selftest", "manifest"
    precision: str | None  # "fp32" or "int8" for model files
    loads_with: str  # how it is opened, and what must hold first
    needs_torch: bool


# role -> file; the roles are the names commands and code use for each file
LAYOUT: dict[str, FileKind] = {
    "checkpoint": FileKind("checkpoint.pt", "checkpoint", "checkpoint", "fp32",
                           "torch.load(weights_only=True); anything needing pickled code is refused", True),
    "torchscript": FileKind("model.pt", "model", "torchscript", "fp32",
                            "torch.jit.load, only after its SHA-256 matched the manifest (it is code)", True),
    "onnx": FileKind("model.onnx", "model", "onnx", "fp32",
                     "onnxruntime, from the hash-checked bytes (mnist_edge.runtime)", False),
    "int8": FileKind("model.int8.onnx", "model", "onnx", "int8",
                     "onnxruntime, from the hash-checked bytes (mnist_edge.runtime)", False),
    "tflite": FileKind("model.tflite", "model", "tflite", "fp32",
                       "ai-edge-litert (LiteRT), from the hash-checked bytes (mnist_edge.runtime.litert)", False),
    "tflite_int8": FileKind("model.int8.tflite", "model", "tflite", "int8",
                            "ai-edge-litert (LiteRT), from the hash-checked bytes (mnist_edge.runtime.litert)", False),
    "selftest": FileKind("selftest.bin", "selftest", "selftest", None,
                         "numpy: images and reference outputs (mnist_edge.evaluate.selftest)", False),
    "manifest": FileKind("manifest.json", "manifest", "manifest", None,
                         "json: strict, size-capped, digest-checked (mnist_edge.manifest)", False),
}
CHECKPOINT = LAYOUT["checkpoint"].name
TORCHSCRIPT = LAYOUT["torchscript"].name
ONNX = LAYOUT["onnx"].name
INT8 = LAYOUT["int8"].name
SELFTEST = LAYOUT["selftest"].name
MANIFEST = LAYOUT["manifest"].name
TFLITE = LAYOUT["tflite"].name
TFLITE_INT8 = LAYOUT["tflite_int8"].name
ONNX_FILES = {"fp32": ONNX, "int8": INT8}  # precision -> ONNX file: what the runtime loads by default
TFLITE_FILES = {"fp32": TFLITE, "int8": TFLITE_INT8}  # precision -> LiteRT file (export --quantize, [litert])
RUNTIMES = {"onnxruntime": ONNX_FILES, "litert": TFLITE_FILES}  # runtime -> its files, by precision
MODEL_FILES = (TORCHSCRIPT, ONNX, INT8, TFLITE, TFLITE_INT8)  # in export order
RUNTIME_FILES = (ONNX, INT8, TFLITE, TFLITE_INT8)  # the files the torch-free runtime loads
EXPORTED = Path("exported")  # relative to the working directory
RUNS = Path("runs")  # where `mnist-edge train` and `quantize` write by default (relative too)
EXPORT_RUNS = RUNS / "export"  # where `mnist-edge export` writes by default: never into the committed exported/
DEFAULT_MODEL = "bn_cnn"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a model or file name: no folders, no '..'



def by_name(name: str) -> FileKind | None:
    """The layout entry of file ``name`` (None for a file that is not ours, e.g. README.md)."""
    return next((f for f in LAYOUT.values() if f.name == name), None)


@dataclass(frozen=True)
class Artifact:
    """What a user's model reference resolved to."""

    folder: Path  # the artifact folder
    file: Path | None  # the file named, when a file was given
    found: str  # how: "file", "folder", "exported/NAME in the working directory", "installed with the package"


def default_folder(model: str) -> Path:
    """Where a zoo name's artifact folder is looked up first: ``exported/NAME`` here (the committed zoo)."""
    return EXPORTED / model


def export_folder(name: str) -> Path:
    """Where ``mnist-edge export`` writes model ``name`` without ``--out``: ``runs/export/NAME`` here."""
    return EXPORT_RUNS / name


def resolve(ref: str | os.PathLike | None = None) -> Artifact:
    """Turn a zoo name, a folder or a file into an :class:`Artifact` (see the module docstring's rule)."""
    from mnist_edge.zoo.registry import MODELS, get_spec

    text = DEFAULT_MODEL if ref is None else os.fspath(ref)
    if not text.strip():
        raise UsageError(f"model path {text!r} is empty: give a zoo name (e.g. bn_cnn), an artifact folder or a "
                         "model file")
    path = Path(text).expanduser()
    if path.is_dir():
        return Artifact(path, None, "folder")
    if path.exists():  # a file, or something else a reader refuses by name (a FIFO, a device)
        return Artifact(path.parent, path, "file")
    if text.lower() in MODELS or text in MODELS:
        name = get_spec(text).name
        here = Path.cwd() / default_folder(name)
        if here.is_dir():
            return Artifact(here, None, "exported/NAME in the working directory")
        from mnist_edge.packaged import installed_model_dir

        installed = installed_model_dir(name)
        if installed is not None:
            return Artifact(installed, None, "installed with the package")
        raise ArtifactError(f"no {default_folder(name)}/ in {Path.cwd()} (zoo names are looked up relative to the working "
                            f"directory) and no '{name}' installed with the package; export it with "
                            f"`mnist-edge export --model {name} --quantize`, or pass --model DIR")
    if os.sep in text or "/" in text or text.startswith(".") or path.suffix:
        raise ArtifactError(f"model {text} does not exist (no such file or folder)")
    get_spec(text)  # UnknownModelError: the zoo's names and the closest one
    raise ArtifactError(f"model {text!r} does not exist")  # not reached


# The --model help of every command that takes one: the same words for the same rule.
MODEL_HELP = ("a zoo name (exported/NAME relative to the working directory, else the copy installed with the "
              "package), an artifact folder, or a model file in one (default: bn_cnn)")
