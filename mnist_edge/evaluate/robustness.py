"""The robustness suite: the MNIST test digits moved, turned, resized, thinned, thickened and made noisy,
and each model file's accuracy on every such condition. numpy (and, to run models, onnxruntime) only.

Each condition is a deterministic function of a whole uint8 batch [N, 28, 28] (no per-image loop): the
same input gives the same bytes on every run and machine that has the same numpy. The conditions:

- ``clean``: the images as they are.
- ``shift_up``, ``shift_down``, ``shift_left``, ``shift_right``: moved by SHIFT_PX (2) pixels, one
  direction per condition (so a model that fails one way shows it); vacated pixels are background (0),
  ink moved past the border is lost.
- ``rotate_+15``, ``rotate_-15``: turned by 15 degrees about the image centre, counter-clockwise (+) and
  clockwise (-) as the digit is seen on screen.
- ``scale_0.8``, ``scale_1.2``: resized about the image centre.
- ``thin``: grey erosion with a 3x3 cross (each pixel becomes the minimum of itself and its four
  neighbours): strokes lose about one pixel on each side.
- ``thick``: grey dilation with the same cross (the maximum): strokes gain about one pixel.
- ``noise``: Gaussian noise of standard deviation NOISE_SIGMA (32) in pixel units (0-255), drawn from
  ``numpy.random.default_rng(NOISE_SEED)`` over the whole batch in order (image i's noise does not
  depend on how many images follow it), added and clipped to 0-255.

Rotation and scale sample the source by inverse mapping with bilinear interpolation; samples outside the
image are background (0). Every result is rounded to the nearest integer and clipped to 0-255. Outside
the image counts as background for erosion and dilation too. The labels do not change.

    from mnist_edge.evaluate.robustness import conditions, evaluate
    variants = conditions(images)          # {"clean": uint8 array, "shift_up": ..., ...}, shapes as given
    report = evaluate("bn_cnn")            # accuracy per condition for model.onnx and model.int8.onnx
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mnist_edge.errors import ArtifactError, InputError, UsageError

SIDE = 28
CENTRE = (SIDE - 1) / 2  # pixel-index coordinates of the image centre (13.5): rotations map the grid onto itself
SHIFT_PX = 2
ROTATE_DEG = 15.0
SCALES = (0.8, 1.2)
NOISE_SIGMA = 32.0  # pixel units (0-255): about 1/8 of the range
NOISE_SEED = 0
SCHEMA = "mnist-edge-robustness/1"
REPORT_NAME = "robustness.json"  # in an artifact folder: what the model cards read


def _check(images) -> np.ndarray:
    """``images`` as a uint8 [N, 28, 28] view; InputError naming the dtype or shape otherwise."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        what = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise InputError(f"the robustness suite transforms uint8 arrays (0-255, as MNIST stores pixels); got {what}")
    if images.ndim == 3 and images.shape[1:] == (SIDE, SIDE):
        return images
    if images.ndim == 4 and images.shape[1:] == (1, SIDE, SIDE):
        return images[:, 0]
    raise InputError(f"images of shape {images.shape}: expected (N, 28, 28) or (N, 1, 28, 28) uint8")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move every image by ``dy`` rows (down positive) and ``dx`` columns (right positive); vacated pixels
    are 0, pixels moved past the border are lost."""
    x = _check(images)
    out = np.zeros_like(x)
    h, w = SIDE - abs(dy), SIDE - abs(dx)
    if h > 0 and w > 0:
        out[:, max(dy, 0):max(dy, 0) + h, max(dx, 0):max(dx, 0) + w] = \
            x[:, max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]
    return out.reshape(images.shape)


def warp(images: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Resample every image through the 2x2 ``inverse`` map about the centre: output pixel at offset
    (dx, dy) from the centre (x right, y down) reads the source at ``inverse @ (dx, dy)``, bilinearly,
    0 outside the image. The sampling positions are the same for the whole batch: computed once, then
    four gathers over [N, 784]."""
    x = _check(images)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    dx, dy = (cols - CENTRE).ravel(), (rows - CENTRE).ravel()
    sx = inverse[0, 0] * dx + inverse[0, 1] * dy + CENTRE
    sy = inverse[1, 0] * dx + inverse[1, 1] * dy + CENTRE
    # Snap sampling positions within 1e-9 of a pixel centre onto it: cos(90 deg) is 6e-17, not 0, and an
    # exact quarter turn must read exactly one source pixel.
    sx = np.where(np.abs(sx - np.rint(sx)) < 1e-9, np.rint(sx), sx)
    sy = np.where(np.abs(sy - np.rint(sy)) < 1e-9, np.rint(sy), sy)
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = sx - x0, sy - y0
    flat = x.reshape(len(x), SIDE * SIDE)
    out = np.zeros(flat.shape, np.float32)
    for oy, ox, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + oy, x0 + ox
        use = (yy >= 0) & (yy < SIDE) & (xx >= 0) & (xx < SIDE) & (weight > 0)
        idx = (yy[use] * SIDE + xx[use]).astype(np.intp)
        out[:, use] += flat[:, idx] * weight[use].astype(np.float32)  # [N, k] gathers, k <= 784
    return _to_uint8(out).reshape(images.shape)


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Turn every image by ``degrees`` about its centre, counter-clockwise as seen on screen (rows run
    down); ``rotate(x, 90)`` equals ``np.rot90(x, axes=(-2, -1))``."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    # forward (y down, counter-clockwise on screen): dx' = c dx + s dy, dy' = -s dx + c dy; this is its inverse
    return warp(images, np.array([[c, -s], [s, c]]))


def scale(images: np.ndarray, factor: float) -> np.ndarray:
    """Resize every image by ``factor`` about its centre (0.8: the digit shrinks, 1.2: it grows)."""
    if not factor > 0:
        raise UsageError(f"scale factor {factor!r} must be positive")
    return warp(images, np.eye(2) / factor)


def _cross(images: np.ndarray, op) -> np.ndarray:
    x = _check(images)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)))  # outside the image is background (0)
    out = op(x, p[:, :-2, 1:-1])
    for neighbour in (p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]):
        op(out, neighbour, out=out)
    return out.reshape(images.shape)


def erode(images: np.ndarray) -> np.ndarray:
    """Grey erosion with a 3x3 cross: each pixel becomes the minimum of itself and its 4 neighbours."""
    return _cross(images, np.minimum)


def dilate(images: np.ndarray) -> np.ndarray:
    """Grey dilation with a 3x3 cross: each pixel becomes the maximum of itself and its 4 neighbours."""
    return _cross(images, np.maximum)


def add_noise(images: np.ndarray, sigma: float = NOISE_SIGMA, seed: int = NOISE_SEED) -> np.ndarray:
    """Add Gaussian noise (``sigma`` in pixel units) from ``default_rng(seed)``, round, clip to 0-255."""
    x = _check(images)
    noise = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)
    return _to_uint8(x + noise).reshape(images.shape)


@dataclass(frozen=True)
class Condition:
    """One named transformation of the test images."""

    name: str
    description: str
    apply: Callable[[np.ndarray], np.ndarray]  # uint8 [N, 28, 28] or [N, 1, 28, 28] -> the same shape


def _conditions() -> dict[str, Condition]:
    rows = [Condition("clean", "the test images as they are", lambda x: _check(x).copy().reshape(x.shape))]
    for name, dy, dx in (("up", -1, 0), ("down", 1, 0), ("left", 0, -1), ("right", 0, 1)):
        rows.append(Condition(f"shift_{name}", f"moved {name} by {SHIFT_PX} px",
                              lambda x, dy=dy, dx=dx: shift(x, dy * SHIFT_PX, dx * SHIFT_PX)))
    for sign, way in ((1, "counter-clockwise"), (-1, "clockwise")):
        rows.append(Condition(f"rotate_{'+' if sign > 0 else '-'}{ROTATE_DEG:g}",
                              f"turned {ROTATE_DEG:g} degrees {way} (bilinear)",
                              lambda x, d=sign * ROTATE_DEG: rotate(x, d)))
    for f in SCALES:
        rows.append(Condition(f"scale_{f:g}", f"resized {f:g}x about the centre (bilinear)",
                              lambda x, f=f: scale(x, f)))
    rows.append(Condition("thin", "strokes 1 px thinner at each edge (grey erosion, 3x3 cross)", erode))
    rows.append(Condition("thick", "strokes 1 px thicker at each edge (grey dilation, 3x3 cross)", dilate))
    rows.append(Condition("noise", f"Gaussian noise, sigma {NOISE_SIGMA:g} (of 0-255), seed {NOISE_SEED}, clipped",
                          add_noise))
    return {c.name: c for c in rows}


CONDITIONS: dict[str, Condition] = _conditions()


def check_names(names=None) -> list[str]:
    """``names`` (None: all, in suite order) checked against the suite; UsageError with the closest name."""
    if names is None:
        return list(CONDITIONS)
    names = list(names)
    for n in names:
        if n not in CONDITIONS:
            close = difflib.get_close_matches(str(n), CONDITIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"unknown condition {n!r}{hint}; valid: {', '.join(CONDITIONS)}")
    if not names:
        raise UsageError(f"no condition given; valid: {', '.join(CONDITIONS)}")
    return list(dict.fromkeys(names))  # each once, in the order given


def transform(images: np.ndarray, name: str) -> np.ndarray:
    """``images`` (uint8 [N, 28, 28] or [N, 1, 28, 28]) under condition ``name``; same shape, a new array."""
    (name,) = check_names([name])
    return CONDITIONS[name].apply(images)


def conditions(images: np.ndarray, names=None) -> dict[str, np.ndarray]:
    """{condition name: the transformed images}, in suite order (or the order of ``names``); each a new
    uint8 array of the input's shape. The labels of the input hold for every variant."""
    _check(images)
    return {n: CONDITIONS[n].apply(images) for n in check_names(names)}


def suite(data_dir=None, names=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The 10,000 MNIST test images under every condition (uint8 [N, 28, 28] each) and their labels."""
    from mnist_edge.data.mnist import load_mnist, require_splits

    names = check_names(names)
    require_splits(data_dir, ("test",))
    x, y = load_mnist("test", data_dir)
    return conditions(x, names), y


def settings() -> dict:
    """The suite's parameters, as a report records them."""
    return {"shift_px": SHIFT_PX, "rotate_degrees": ROTATE_DEG, "scales": list(SCALES), "noise_sigma": NOISE_SIGMA,
            "noise_seed": NOISE_SEED, "interpolation": "bilinear, inverse mapping about the centre, zero fill",
            "morphology": "3x3 cross, outside the image is 0"}


def _check_threads(threads) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    return int(threads)


def _targets(model, precision) -> tuple[object, list]:
    """(the resolved artifact, the precisions to load: [None] for a file given by path)."""
    from mnist_edge.artifacts import ONNX_FILES, resolve
    from mnist_edge.manifest import read_manifest

    if precision is not None and precision not in ONNX_FILES:
        raise UsageError(f"unknown precision {precision!r}; valid: {', '.join(ONNX_FILES)} (default: every ONNX "
                         "file the model's manifest lists)")
    artifact = resolve(model)
    if artifact.file is not None:
        if precision is not None:
            raise UsageError(f"precision chooses a file inside an artifact folder; {artifact.file} is a file")
        return artifact, [None]
    listed = [p for p, name in ONNX_FILES.items() if name in read_manifest(artifact.folder)["files"]]
    if precision is not None:
        if precision not in listed:
            raise ArtifactError(f"artifact folder {artifact.folder} has no {precision} model: its manifest lists "
                                f"{', '.join(ONNX_FILES[p] for p in listed) or 'no ONNX files'}")
        return artifact, [precision]
    if not listed:
        raise ArtifactError(f"artifact folder {artifact.folder} lists no ONNX model in its manifest")
    return artifact, listed


def evaluate(model=None, *, precision: str | None = None, names=None, data_dir=None, threads: int | None = None,
             command: str | None = None, progress=None) -> dict:
    """Accuracy of a model's ONNX files on every condition (schema mnist-edge-robustness/1).

    model: a zoo name, an artifact folder or an .onnx file (:func:`mnist_edge.artifacts.resolve`; None:
      bn_cnn). precision: "fp32" or "int8" for one file of a folder; None: every ONNX file its manifest
      lists (fp32 first). names: conditions (None: all). threads: onnxruntime intra-op threads.
      progress: called with a one-line message as each condition starts (the whole suite takes tens of
      seconds on a small CPU), e.g. "condition 3/12 shift_down (fp32, int8)".
    The options, the model and the data are checked before any image is transformed or model run.
    """
    import onnxruntime

    from mnist_edge.version import __version__
    from mnist_edge.data.mnist import require_splits
    from mnist_edge.runtime.classifier import load

    names = check_names(names)
    threads = _check_threads(threads)
    artifact, precisions = _targets(model, precision)
    require_splits(data_dir, ("test",))  # before any work: say how to get the data
    source = artifact.file if artifact.file is not None else artifact.folder
    classifiers = [load(source, precision=p, threads=threads) for p in precisions]  # every check before work
    preds, labels = _predict_suite(classifiers, data_dir, names, progress or (lambda message: None))
    files = []
    for clf, pred in zip(classifiers, preds):
        correct = {n: int((p.labels == labels).sum()) for n, p in pred.items()}
        files.append({"precision": clf.precision, "file": clf.path.name, "sha256": clf.sha256,
                      "verified": clf.verified, "correct": correct,
                      "accuracy": {n: round(100 * c / len(labels), 2) for n, c in correct.items()},
                      "rejection_transformed": _pooled_rejection(pred, labels)})
    return {"schema": SCHEMA, "command": command, "model": classifiers[0].model, "images": int(len(labels)),
            "data": "MNIST test split (t10k), hash-verified", "settings": settings(),
            "conditions": [{"name": n, "description": CONDITIONS[n].description} for n in names],
            "threads": threads, "versions": {"mnist_edge": __version__, "numpy": np.__version__,
                                             "onnxruntime": onnxruntime.__version__},
            "files": files}


def _predict_suite(classifiers, data_dir, names: list[str], say) -> tuple[list[dict], np.ndarray]:
    """([{condition: Prediction}] per classifier, labels): one condition at a time, so only one transformed
    copy of the test set is held and ``say`` can tell where the run is."""
    from mnist_edge.data.mnist import load_mnist

    x, labels = load_mnist("test", data_dir)
    preds: list[dict] = [{} for _ in classifiers]
    which = ", ".join(clf.precision for clf in classifiers)
    for i, name in enumerate(names, 1):
        say(f"condition {i}/{len(names)} {name} ({which})")
        variant = CONDITIONS[name].apply(x)
        for clf, pred in zip(classifiers, preds):
            pred[name] = clf.predict(variant)
    return preds, labels


def _pooled_rejection(preds: dict, labels: np.ndarray) -> list[dict] | None:
    """What ``--min-confidence P`` rejects over every transformed condition pooled (all but clean):
    :func:`mnist_edge.evaluate.confidence.rejection_table` of their probabilities; None when only clean ran."""
    from mnist_edge.evaluate.confidence import rejection_table

    moved = [n for n in preds if n != "clean"]
    if not moved:
        return None
    probs = np.concatenate([preds[n].probabilities for n in moved])
    return rejection_table(probs, np.tile(labels, len(moved)))


def worst(entry: dict) -> tuple[str, float] | None:
    """(condition, accuracy) of the lowest accuracy other than clean in one file's entry, None if none."""
    rest = {n: a for n, a in entry["accuracy"].items() if n != "clean"}
    return min(rest.items(), key=lambda kv: kv[1]) if rest else None


def render_table(report: dict, markdown: bool = False) -> str:
    """One row per condition, one accuracy column per file; then the worst condition of each file."""
    files = report["files"]
    heads = [f"{e['precision']} ({e['file']})" for e in files]
    rows = [[c["name"], c["description"], *(f"{e['accuracy'][c['name']]:.2f}%" for e in files)]
            for c in report["conditions"]]
    worst_row = ["worst", "lowest but clean"]
    for e in files:
        w = worst(e)
        worst_row.append(f"{w[1]:.2f}% ({w[0]})" if w else "-")
    rows.append(worst_row)
    head = ["condition", "what", *heads]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(r):  # text columns left-aligned, accuracies right-aligned
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    title = (f"{report['model']}: accuracy on {report['images']:,} MNIST test images per condition "
             f"(noise sigma {report['settings']['noise_sigma']:g}, seed {report['settings']['noise_seed']})")
    return "\n".join([title, fmt(head), *map(fmt, rows)]) + "\n"


def validate_report(data, source: str) -> dict:
    """``data`` if it is a robustness report this module can render, every field the tables and cards show
    checked (:mod:`mnist_edge.evaluate.robustness_report`); ArtifactError naming ``source`` and the field."""
    from mnist_edge.evaluate.robustness_report import check_report

    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{source} is not a robustness report ({SCHEMA}): schema {found!r:.80}")
    check_report(data, source)
    return data


def read_report(path) -> dict:
    """Read and validate a report written by ``mnist-edge robustness --json``: through the one bounded loader
    (a regular file of at most 8 MiB, strict JSON), then every field checked."""
    from mnist_edge.documents import load_json

    return validate_report(load_json(path), str(path))


def stale_files(folder, report: dict | None) -> dict[str, str]:
    """{precision: why} for each file of ``report`` that is gone from ``folder`` or has other bytes than
    were measured."""
    from pathlib import Path

    from mnist_edge.files import sha256_file

    out = {}
    for e in (report or {}).get("files", []):
        path = Path(folder) / Path(e["file"]).name
        if not path.is_file():
            out[e["precision"]] = f"{path.name} is gone"
        elif sha256_file(path) != e["sha256"]:
            out[e["precision"]] = f"{path.name} changed since it was measured"
    return out
