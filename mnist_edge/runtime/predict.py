"""One call for `mnist-edge predict`: load a model, read image files, classify, return JSON-ready results.

Each file is read and normalized on its own: a blank, corrupt or unreadable file gets an ``error`` entry
naming it and every other file is still classified. Schema ``mnist-edge-predict/1`` (a JSON object):

- ``schema``: "mnist-edge-predict/1"; fields may be added to version 1, never removed or renamed.
- ``model``: ``path``, ``name``, ``precision``, ``sha256``, ``verified``, ``device``, ``provider``, ``notes``,
  ``temperature`` (probabilities are softmax(logits / temperature); 1 for files exported before calibration).
- ``min_confidence``: the threshold asked for, or null.
- ``results``: one object per image file, in the order given (a folder expands to its image files in
  name order): ``image`` (the path), then either ``label``, ``probability``, ``confident``, ``top_k``
  [{label, probability}] and ``input`` (where the 28x28 image the model saw was written, or null), or
  ``error`` (one line, naming the file) with ``label`` null. ``confident`` is false, and ``label`` null,
  when the most probable digit's ``probability`` is below ``min_confidence`` ("unsure"; ``top_k[0]`` is
  still the best guess).
- ``failed``: how many files got an ``error``; ``unsure``: how many were answered "unsure".
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mnist_edge.errors import ArtifactError, InputError
from mnist_edge.runtime.classifier import load
from mnist_edge.runtime.images import load_image, load_resized

SCHEMA = "mnist-edge-predict/1"
# What a folder argument expands to (by suffix, case-insensitive); a file named explicitly is always read.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm",
                  ".pbm")


def expand_paths(images) -> list[tuple[str, str | None]]:
    """(path, error or None) per image: a folder becomes its image files (sorted, not recursive, no hidden
    files); a folder without any gives one error entry naming it."""
    out: list[tuple[str, str | None]] = []
    for item in images:
        if not os.fspath(item).strip():  # Path("") is ".": never read the working directory for a typo
            raise InputError(f"image path {os.fspath(item)!r} is empty; give an image file or a folder of them")
        p = Path(item)
        if not p.is_dir():
            out.append((os.fspath(item), None))
            continue
        try:
            found = sorted(c for c in p.iterdir() if c.suffix.lower() in IMAGE_SUFFIXES
                           and not c.name.startswith(".") and c.is_file())
        except OSError as e:
            out.append((os.fspath(item), f"folder {p}: cannot list it ({e.strerror or e})"))
            continue
        if not found:
            out.append((os.fspath(item), f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES[:4])}, ...)"))
        out += [(os.fspath(c), None) for c in found]
    return out


def _input_name(path: str, used: set[str]) -> str:
    """``<stem>.png``, or ``<stem>-2.png``, ... when two inputs share a stem (a.png and a.jpg, two folders)."""
    stem = Path(path).stem or "image"
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def save_input(image: np.ndarray, path: Path) -> Path:
    """Write a uint8 [28, 28] image as a greyscale PNG, atomically (needs Pillow, as reading did)."""
    import io

    from PIL import Image

    from mnist_edge.files import write_bytes_atomic

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "L").save(buf, "PNG")
    write_bytes_atomic(path, buf.getvalue())
    return path


def classify_files(images, *, model: str | os.PathLike | None = None, device: str = "cpu", top_k: int = 1,
                  threads: int | None = None, save_inputs: str | os.PathLike | None = None,
                  strict: bool = False, min_confidence: float | None = None, progress=None) -> dict:
    """Classify the image files (or folders of them) ``images`` with ``model`` (default: the committed
    bn_cnn int8 model); see the module docstring for the result. A file that cannot be read or holds no
    digit gets an ``error`` entry; the others are classified. ``save_inputs``: a folder that receives the
    28x28 image the model saw for each file, as ``<file stem>.png``. ``model.placement`` counts the nodes
    per provider (mnist_edge.runtime.placement); ``strict`` fails when any would run on the CPU although
    ``device`` is a GPU. ``min_confidence`` P in (0, 1): an image whose best probability is below P is
    answered "unsure" (``label`` null, ``confident`` false). ``progress``: called with a one-line message
    after each file is read ("read 120 of 5,000 images"; a folder of photos takes seconds), or None.
    """
    from mnist_edge.runtime.confidence import check_min_confidence
    from mnist_edge.system.extras import require
    from mnist_edge.runtime.placement import check_strict, measure_placement
    from mnist_edge.runtime.hashcheck import read_verified

    require("images", "reading image files")  # no Pillow: one error now, not one per file after loading
    if min_confidence is not None:
        min_confidence = check_min_confidence(min_confidence)  # before any loading
    expanded = expand_paths(images)  # an empty path fails the call here, before any loading
    clf = load(model, device=device, threads=threads, strict=strict)  # a bad model or device fails the call
    data, digest, _ = read_verified(clf.path, None)
    if digest != clf.sha256:
        raise ArtifactError(f"{clf.path} changed after it was loaded (SHA-256 {digest[:12]}…, loaded {clf.sha256[:12]}…)")
    placement = None if clf.path.suffix == ".tflite" else \
        measure_placement(data, source=str(clf.path), device=clf.device, threads=threads, strict=strict)  # ORT only
    if strict:
        check_strict(placement, str(clf.path))
    save_dir = Path(save_inputs) if save_inputs is not None else None
    if save_dir is not None and save_dir.exists() and not save_dir.is_dir():
        raise InputError(f"--save-inputs {save_dir} is a file, not a folder")
    entries, good, arrays = [], [], []
    reader = load_image if _channels(clf) == 1 else load_resized  # a one-channel digit model: MNIST-style
    say = progress or (lambda message: None)
    for done, (path, error) in enumerate(expanded, 1):
        if error is None:
            try:
                arrays.append(reader(path))
                good.append(len(entries))
            except InputError as e:
                error = str(e)
        entries.append({"image": path, "label": None} if error is None else
                       {"image": path, "label": None, "error": error})
        say(f"read {done:,} of {len(expanded):,} images")
    if arrays:
        pred = clf.predict(np.stack(arrays), top_k=top_k, min_confidence=min_confidence)
        used: set[str] = set()
        for i, arr, r in zip(good, arrays, pred.to_list(clf.labels)):
            entries[i].update(r)
            entries[i]["input"] = (os.fspath(save_input(arr, save_dir / _input_name(entries[i]["image"], used)))
                                   if save_dir is not None else None)
    return {
        "schema": SCHEMA,
        "model": {"path": str(clf.path), "name": clf.model, "precision": clf.precision, "sha256": clf.sha256,
                  "verified": clf.verified, "device": clf.device, "provider": clf.provider,
                  "placement": placement, "notes": list(clf.notes), "temperature": clf.temperature},
        "min_confidence": min_confidence,
        "results": entries,
        "failed": sum("error" in e for e in entries),
        "unsure": sum(e.get("confident") is False for e in entries),
    }


def _channels(clf) -> int:
    """How many channels the model's network takes (its metadata's normalization; 1 when absent)."""
    import json

    from mnist_edge.contract import META_KEYS

    try:
        record = json.loads(clf.metadata.get(META_KEYS["normalization"]) or "{}")
        return int(record.get("channels", 1)) if isinstance(record, dict) else 1
    except (ValueError, TypeError):
        return 1
