"""Every reader of a file the tool reads, in one table: what a reader must hold to (bounded, regular files
only, a typed one-line error for anything malformed) is tested against this list, and every entry must have
a fuzz target in tests/test_fuzz.py and scripts/fuzz.py (tests/test_readers.py checks both).

Each entry names its function as ``"package.module:qualified.name"``, a string resolved only by the tests:
this package is the bottom layer and imports none of the readers' packages. A new file format adds its
reader here, and then its fuzz target.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reader:
    """One reader: the function that opens the file, and the file it reads."""

    function: str  # "package.module:qualified.name"
    file: str  # the file's name in an export folder, or what it is
    folder: bool = False  # the function is given the folder that holds ``file``, not the file


READERS: dict[str, Reader] = {
    "manifest": Reader("mnist_edge.manifest:read_manifest", "manifest.json", folder=True),
    "checkpoint": Reader("mnist_edge.training.checkpoint:read_checkpoint", "checkpoint.pt"),
    "int8_recipe": Reader("mnist_edge.int8.recipes:read_recipe_file", "a --recipe file (one recipe or a registry)"),
    "int8_search": Reader("mnist_edge.int8.result:SearchResult.from_json", "int8_recipe.json"),
    "int8_report": Reader("mnist_edge.cards.folder:load_int8_report", "int8_report.json"),
    "bench": Reader("mnist_edge.bench.document:BenchReport.from_json", "bench.json"),
    "robustness": Reader("mnist_edge.evaluate.robustness:read_report", "robustness.json"),
    "selftest_bundle": Reader("mnist_edge.evaluate.bundle:read_bundle", "selftest.bin", folder=True),
    "selftest_report": Reader("mnist_edge.evaluate.selftest:SelfTestReport.from_json",
                              "a `verify --self-test --json` report"),
    "idx": Reader("mnist_edge.data.mnist:read_capped", "an MNIST IDX file (.gz or not)"),
    "image": Reader("mnist_edge.runtime.images:load_image", "a digit image (PNG, JPEG, ...)"),
    "onnx": Reader("mnist_edge.runtime.classifier:load", "model.onnx, model.int8.onnx"),
    "tflite": Reader("mnist_edge.runtime.classifier:load", "model.tflite, model.int8.tflite (LiteRT)"),
}
