"""``quantize_model``, what ``mnist-edge quantize`` runs: search (or check one recipe), diagnose, register.

Takes the fp32 ONNX file, the data already in memory (training images calibrate, test images gate) and
the starting recipe; runs :func:`~mnist_edge.int8.search.search_int8`, writes the result
(``int8_recipe.json``) and its plot into ``out``, with ``settings.report`` the diagnosis
(:mod:`mnist_edge.int8.diagnose`) of the chosen recipe, and with ``settings.register`` the result's entry
into that registry file (:func:`mnist_edge.int8.recipes.register_recipe`). The model's name is a label
only: nothing here looks it up. Needs onnx and onnxruntime, no torch.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.errors import ArtifactError
from mnist_edge.int8.quantize import QuantizeOptions
from mnist_edge.int8.result import RESULT_FILE, SearchResult
from mnist_edge.int8.settings import SearchSettings

PLOT_NAME, REPORT_NAME = "int8_search.png", "int8_report.json"


@dataclass
class QuantizeResult:
    document: SearchResult  # what int8_recipe.json holds
    files: list  # paths written
    diagnosis: dict | None = None  # int8_report.json's content (with settings.report)


def quantize_model(fp32, data, options: QuantizeOptions, settings: SearchSettings, out, *, name: str,
                   progress=None) -> QuantizeResult:
    """Search ``fp32``'s int8 recipe from ``options`` (or check that one recipe) and write the result into ``out``.

    ``data``: a :class:`mnist_edge.data.dataset.Digits` with both splits, loaded once by the caller;
    ``name``: the label the result carries (and its registry entry's key). ``out`` receives
    int8_recipe.json, int8_search.png (with matplotlib) and, with ``settings.report``, int8_report.json.
    """
    from mnist_edge.int8.recipes import register_recipe
    from mnist_edge.int8.result import write_json
    from mnist_edge.int8.search import plot_search, search_inputs, search_int8

    settings, base = settings.validate(), options.validate()
    fp32 = Path(fp32)
    if not fp32.is_file():
        raise ArtifactError(f"no fp32 ONNX file at '{fp32}'; export one first (mnist-edge export) or name "
                            "another with --onnx")
    say = progress or (lambda msg: None)
    found = search_int8(fp32, data, base, settings, name=name, progress=say)
    out = Path(out)
    files = [found.write(out / RESULT_FILE)]
    plot = plot_search(found, out / PLOT_NAME)
    if plot is not None:
        files.append(plot)
    diagnosis = None
    if settings.report and found.chosen is not None:
        say("diagnosis of the chosen recipe")
        inputs = search_inputs(data, base, settings)  # the images the search calibrated and gated with
        diagnosis = diagnose_recipe(fp32, found.options, inputs.calibration, inputs.calibration_source, inputs.x)
        files.append(write_json(diagnosis, out / REPORT_NAME))
    if settings.register is not None:
        files.append(register_recipe(settings.register, name, found))
    return QuantizeResult(found, files, diagnosis)


def diagnose_recipe(fp32, options: QuantizeOptions, cal: np.ndarray, source: dict, images: np.ndarray) -> dict:
    """Quantize ``fp32`` with ``options`` into a scratch folder and diagnose it (nothing left behind)."""
    from mnist_edge.int8.diagnose import diagnose
    from mnist_edge.int8.quantize import float_graph, quantize_int8

    work = Path(tempfile.mkdtemp(prefix="mnist-edge-int8-report-"))
    try:
        quantize_int8(fp32, work / A.INT8, cal, options, source=source)
        return diagnose(float_graph(fp32, options, work), work / A.INT8, images)
    finally:
        shutil.rmtree(work, ignore_errors=True)
