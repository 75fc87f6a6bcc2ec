"""``quantize_model``, what ``mnist-edge quantize`` runs: search (or check one recipe), diagnose, register.

Loads the MNIST images (training images calibrate, test images gate), runs :func:`search_int8` on a
model's fp32 ONNX file, writes the recipe document and its plot into ``out``, and with ``register``
copies the document into the registry that ``mnist-edge export --quantize`` reads. ``report`` adds the
diagnosis (:mod:`mnist_edge.export.diagnose`) of the chosen recipe. Needs onnx and onnxruntime, no torch.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.errors import ArtifactError, UsageError
from mnist_edge.export.quantize import QuantizeOptions

RECIPE_NAME, PLOT_NAME, REPORT_NAME = "int8_recipe.json", "int8_search.png", "int8_report.json"


@dataclass
class QuantizeResult:
    document: dict  # the recipe document (see recipes.py)
    files: list  # paths written
    diagnosis: dict | None = None


def calibration_set(options: QuantizeOptions, *, data_dir=None, only_class: int | None = None):
    """(images, source): the class-balanced training images, or (to show what bad calibration does) the
    first ``calibration_samples`` training images of one digit."""
    from mnist_edge.export.quantize import custom_source, training_calibration_images

    if only_class is None:
        return training_calibration_images(options.calibration_samples, options.seed, data_dir)
    if isinstance(only_class, bool) or not isinstance(only_class, int) or not 0 <= only_class <= 9:
        raise UsageError(f"--calibration-class {only_class!r} must be a digit 0-9")
    from mnist_edge.data import load_mnist

    images, labels = load_mnist("train", data_dir=data_dir)
    chosen = images[labels == only_class][:options.calibration_samples]
    return chosen, dict(custom_source(chosen), split="train", only_class=only_class,
                        note="deliberately one class only")


def quantize_model(model: str, *, fp32=None, search: bool = True, recipe=None, options: QuantizeOptions | None = None,
                   out=None, register: bool = False, report: bool = False, keep_failed=None,
                   calibration_class: int | None = None, eval_limit: int | None = None, repeats: int = 8,
                   calls: int = 10, data_dir=None, progress=None) -> QuantizeResult:
    """Search ``model``'s int8 recipe (``search``) or check one recipe with the fallback, and write it.

    ``fp32`` defaults to ``exported/MODEL/model.onnx``; the starting recipe is ``options``, else
    ``recipe`` (a file), else the defaults for a search and the model's registered recipe for a check. ``out`` (default ``runs/MODEL``) receives
    int8_recipe.json, int8_search.png (with matplotlib) and, with ``report``, int8_report.json.
    """
    from mnist_edge.data import load_mnist
    from mnist_edge.export.pipeline import ONNX_NAME, default_out
    from mnist_edge.export.recipes import load_recipe, registered_path, write_json
    from mnist_edge.export.search import plot_search, search_int8
    from mnist_edge.zoo import get_spec

    get_spec(model)
    if register and calibration_class is not None:
        raise UsageError("--calibration-class is a demonstration of bad calibration; its result cannot be "
                         "registered (export calibrates on class-balanced images)")
    fp32 = Path(fp32) if fp32 is not None else default_out(model) / ONNX_NAME
    if not fp32.is_file():
        raise ArtifactError(f"no fp32 ONNX file at '{fp32}'; export one first: mnist-edge export --model {model}")
    # A search starts from onnxruntime's defaults (not from the recipe an earlier search registered, which
    # would bias it) unless told otherwise; checking one recipe starts from the registered one.
    if options is None:
        options = load_recipe(model, recipe).options if (recipe is not None or not search) else QuantizeOptions()
    base = options.validate()
    if eval_limit is not None and (isinstance(eval_limit, bool) or not isinstance(eval_limit, int)
                                   or not 1 <= eval_limit <= 10_000):
        raise UsageError(f"--eval-limit {eval_limit!r} must be an integer from 1 to 10000")
    out = Path(out) if out is not None else A.RUNS / model
    say = progress or (lambda msg: None)
    say("loading MNIST")
    cal, source = calibration_set(base, data_dir=data_dir, only_class=calibration_class)
    x, y = load_mnist("test", data_dir=data_dir)
    n = eval_limit or len(x)
    document = search_int8(fp32, model=model, calibration_images=cal, calibration_source=source,
                           x_eval=x[:n, None], y_eval=y[:n], base=base, full=search, repeats=repeats, calls=calls,
                           keep_failed=keep_failed, progress=say)
    files = [write_json(document, out / RECIPE_NAME)]
    plot = plot_search(document, out / PLOT_NAME)
    if plot is not None:
        files.append(plot)
    diagnosis = None
    if report and document["chosen"] is not None:
        say("diagnosis of the chosen recipe")
        diagnosis = diagnose_recipe(fp32, QuantizeOptions.from_dict(document["options"]), cal, source, x[:n, None])
        files.append(write_json(diagnosis, out / REPORT_NAME))
    if register:
        files.append(write_json(document, registered_path(model)))
    return QuantizeResult(document, files, diagnosis)


def diagnose_recipe(fp32, options: QuantizeOptions, cal: np.ndarray, source: dict, images: np.ndarray) -> dict:
    """Quantize ``fp32`` with ``options`` into a scratch folder and diagnose it (nothing left behind)."""
    from mnist_edge.export.diagnose import diagnose
    from mnist_edge.export.quantize import float_graph, quantize_int8

    work = Path(tempfile.mkdtemp(prefix="mnist-edge-int8-report-"))
    try:
        quantize_int8(fp32, work / A.INT8, cal, options, source=source)
        return diagnose(float_graph(fp32, options, work), work / A.INT8, images)
    finally:
        shutil.rmtree(work, ignore_errors=True)
