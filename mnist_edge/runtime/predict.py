"""One call for `mnist-edge predict`: load a model, read image files, classify, return JSON-ready results."""

from __future__ import annotations

import os

from mnist_edge.errors import ArtifactError
from mnist_edge.runtime.classifier import load
from mnist_edge.runtime.images import load_images


def predict_files(images, *, model: str | os.PathLike | None = None, device: str = "cpu", top_k: int = 1,
                  threads: int | None = None, strict: bool = False) -> dict:
    """Classify the image files ``images`` with ``model`` (default: the committed bn_cnn int8 model).

    Every file is read and normalized before anything is classified, so a bad file fails the call
    with an InputError naming it. Returns {"model": {...}, "results": [{"image", "label", "probability",
    "top_k"}, ...]}. ``model.placement`` counts the nodes per provider (mnist_edge.runtime.placement);
    ``strict`` fails when any would run on the CPU although ``device`` is a GPU.
    """
    from mnist_edge.runtime.placement import check_strict, measure_placement
    from mnist_edge.runtime.verify import read_verified

    paths = [os.fspath(p) for p in images]
    clf = load(model, device=device, threads=threads, strict=strict)
    data, digest, _ = read_verified(clf.path, None)
    if digest != clf.sha256:
        raise ArtifactError(f"{clf.path} changed after it was loaded (SHA-256 {digest[:12]}…, loaded {clf.sha256[:12]}…)")
    placement = measure_placement(data, source=str(clf.path), device=clf.device, threads=threads, strict=strict)
    if strict:
        check_strict(placement, str(clf.path))
    pred = clf.predict(load_images(paths), top_k=top_k)
    results = [{"image": p, **r} for p, r in zip(paths, pred.to_list(clf.labels))]
    return {
        "model": {"path": str(clf.path), "name": clf.model, "precision": clf.precision, "sha256": clf.sha256,
                  "verified": clf.verified, "device": clf.device, "provider": clf.provider,
                  "placement": placement, "notes": list(clf.notes)},
        "results": results,
    }
