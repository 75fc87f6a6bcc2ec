"""One call for `mnist-edge predict`: load a model, read image files, classify, return JSON-ready results."""

from __future__ import annotations

import os

from mnist_edge.runtime.classifier import load
from mnist_edge.runtime.images import load_images


def predict_files(images, *, model: str | os.PathLike | None = None, device: str = "cpu", top_k: int = 1,
                  threads: int | None = None) -> dict:
    """Classify the image files ``images`` with ``model`` (default: the committed bn_cnn int8 model).

    Every file is read and normalized before anything is classified, so a bad file fails the call
    with an InputError naming it. Returns {"model": {...}, "results": [{"image", "label", "probability",
    "top_k"}, ...]}.
    """
    paths = [os.fspath(p) for p in images]
    clf = load(model, device=device, threads=threads)
    pred = clf.predict(load_images(paths), top_k=top_k)
    results = [{"image": p, **r} for p, r in zip(paths, pred.to_list(clf.labels))]
    return {
        "model": {"path": str(clf.path), "name": clf.model, "precision": clf.precision, "sha256": clf.sha256,
                  "verified": clf.verified, "device": clf.device, "provider": clf.provider,
                  "notes": list(clf.notes)},
        "results": results,
    }
