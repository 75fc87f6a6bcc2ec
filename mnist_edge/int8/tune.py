"""``quantize_model``, what ``mnist-edge quantize`` runs: search (or check one recipe), diagnose, register.

Takes the fp32 ONNX file, the data already in memory (training images calibrate, test images gate) and
the starting recipe; runs :func:`~mnist_edge.int8.search.search_int8`, writes the result
(``int8_recipe.json``) and its plot into ``out``, with ``settings.report`` the diagnosis
(:mod:`mnist_edge.int8.diagnose`) of the chosen recipe, and with ``settings.register`` the result's entry
into that registry file (the entry :func:`mnist_edge.int8.recipes.register_recipe` writes, here written
together with the result as one set). The model's name is a label only: nothing here looks it up. Needs
onnx and onnxruntime, no torch.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.errors import ArtifactError, WriteError
from mnist_edge.files import describe_os_error
from mnist_edge.int8.quantize import QuantizeOptions
from mnist_edge.int8.result import RESULT_FILE, SearchResult
from mnist_edge.int8.settings import SearchSettings

PLOT_NAME, REPORT_NAME = "int8_search.png", "int8_report.json"
REGISTRY_WAIT_S = 60.0  # another run updating the registry holds it for milliseconds; a stuck one is named


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
    int8_recipe.json, int8_search.png (with matplotlib) and, with ``settings.report``, int8_report.json; with
    ``settings.register`` the registry file gets ``name``'s entry. They are written as one set
    (:mod:`mnist_edge.system.fileset`), holding ``out``'s lock for the whole run and the registry's while
    writing it (:mod:`mnist_edge.system.lock`); scratch files stay in the run's own folder
    (:mod:`mnist_edge.system.scratch`).
    """
    from mnist_edge.int8.search import plot_search, search_inputs, search_int8
    from mnist_edge.system.fileset import recover
    from mnist_edge.system.lock import hold
    from mnist_edge.system.scratch import run_scratch

    settings, base = settings.validate(), options.validate()
    fp32 = Path(fp32)
    if not fp32.is_file():
        raise ArtifactError(f"no fp32 ONNX file at '{fp32}'; export one first (mnist-edge export) or name "
                            "another with --onnx")
    if settings.register is not None:
        check_registry_writable(Path(settings.register))
    say = progress or (lambda msg: None)
    out = Path(out)
    with hold(out, flag="--out"), run_scratch() as scratch:
        recover(out)  # a set a killed run left half renamed: finished before anything else
        found = search_int8(fp32, data, base, settings, name=name, progress=say, workdir=scratch)
        contents = {out / RESULT_FILE: json_bytes(found.to_json())}
        plot = plot_search(found, scratch / PLOT_NAME)  # rendered here, written with the rest as one set
        if plot is not None:
            contents[out / PLOT_NAME] = plot.read_bytes()
        diagnosis = None
        if settings.report and found.chosen is not None:
            say("diagnosis of the chosen recipe")
            inputs = search_inputs(data, base, settings)  # the images the search calibrated and gated with
            diagnosis = diagnose_recipe(fp32, found.options, inputs.calibration, inputs.calibration_source,
                                        inputs.x)
            contents[out / REPORT_NAME] = json_bytes(diagnosis)
        files = write_results(contents, settings.register, name, found, say)
    return QuantizeResult(found, files, diagnosis)


def json_bytes(document: dict) -> bytes:
    """A JSON document as :func:`mnist_edge.int8.result.write_json` writes it."""
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_results(contents: dict, register, name: str, found: SearchResult, say) -> list[Path]:
    """``contents`` (path -> bytes) and, with ``register``, ``name``'s entry in that registry, as one set.

    The registry is read, updated and replaced holding its lock (waiting up to REGISTRY_WAIT_S for another
    run's update), so two searches registering different models both keep their entries."""
    from mnist_edge.int8.recipes import read_registry, registry_entry
    from mnist_edge.system.fileset import recover, write_set
    from mnist_edge.system.lock import hold

    if register is None:
        return write_set(contents, what="the search result")
    registry = Path(register)
    with hold(registry, wait_s=REGISTRY_WAIT_S, flag="--register", say=say):
        recover(registry.parent)
        entries = read_registry(registry) if registry.exists() else {}
        entries[name] = registry_entry(found)
        contents = {**contents, registry: json_bytes(dict(sorted(entries.items())))}
        return write_set(contents, what="the search result and its registry entry")


def check_registry_writable(registry: Path) -> None:
    """Refuse, before a search spends minutes, a registry that cannot be replaced: a file without write
    permission bits (root passes ``os.access`` on those; the missing bits still say "leave this alone") or
    a folder where no file can be created (read-only file system, permissions)."""
    if registry.exists():
        mode = registry.stat().st_mode
        if not registry.is_file() or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            what = "is read-only" if registry.is_file() else "is not a regular file"
            raise WriteError(f"registry '{registry}' {what} (mode {stat.filemode(mode)}); nothing was searched")
    folder = next(p for p in (registry.parent, *registry.parent.parents) if p.exists())
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{registry.name}.probe-", dir=folder)
    except OSError as e:
        raise WriteError(f"cannot write registry '{registry}': {describe_os_error(e)} in '{folder}'; "
                         "nothing was searched") from None
    os.close(fd)
    os.unlink(probe)


def diagnose_recipe(fp32, options: QuantizeOptions, cal: np.ndarray, source: dict, images: np.ndarray) -> dict:
    """Quantize ``fp32`` with ``options`` in the run's scratch folder and diagnose it (nothing left behind)."""
    from mnist_edge.int8.diagnose import diagnose
    from mnist_edge.int8.quantize import float_graph, quantize_int8
    from mnist_edge.system.scratch import run_scratch

    with run_scratch() as scratch:
        work = Path(tempfile.mkdtemp(prefix="int8-report-", dir=scratch))
        try:
            quantize_int8(fp32, work / A.INT8, cal, options, source=source)
            return diagnose(float_graph(fp32, options, work), work / A.INT8, images)
        finally:
            shutil.rmtree(work, ignore_errors=True)
