"""Temperature scaling at export: which training images the checkpoint never saw, T fitted on them, the record.

The validation split is reproduced from the checkpoint's own record (recipe ``val_size``, ``seed``,
``limit_train``) exactly as :func:`mnist_edge.training.loop.train` drew it. A model trained on all 60,000 training
images leaves no unseen non-test image: T is then fitted on training images it saw, and the record says
so (``seen_in_training: true``), but that T is **not applied** (T = 1 ships; the fitted value is kept as
``fitted_temperature``). A network is more confident on digits it was trained on, so such a T comes out
below 1 and sharpens probabilities that are already too confident on new digits: for six of the seven
zoo models trained on all 60,000 it made the test set's calibration error worse. The test set is never
used for fitting; its ECE is measured after, for the record.

T is rounded to 3 decimals before it goes into the graph (and ECE values to 4): the graph then holds a
number that does not move with another CPU's last-bit differences in the logits, so the fp32 files stay
byte-reproducible (tests/test_reproducible.py).
"""

from __future__ import annotations

import hashlib

import numpy as np

from mnist_edge.evaluate import confidence as cal

MAX_FIT_IMAGES = 12_000  # a larger pool (seen training images) is cut to this many, class-balanced
FIT_BATCH = 1000


def seen_indices(ckpt: dict, n_train: int) -> np.ndarray | None:
    """Sorted indices of the training images the checkpoint was trained on, as train() drew them; None
    when the checkpoint does not record its seed (then every training image counts as seen)."""
    from mnist_edge.training.loop import split_indices

    recipe, metrics = ckpt.get("recipe") or {}, ckpt.get("metrics") or {}
    seed, val_size, limit = metrics.get("seed"), recipe.get("val_size") or 0, metrics.get("limit_train")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return None
    train_idx, _ = split_indices(n_train, int(val_size), seed, int(limit) if limit else None,
                                 recipe.get("split_seed"))
    return np.sort(train_idx)


def fit_split(ckpt: dict, train) -> tuple[np.ndarray, np.ndarray, dict]:
    """(images uint8 [N, 1, 28, 28], labels int64 [N], record) to fit T on: the training images (``train``,
    a :class:`mnist_edge.data.dataset.Split`) the model did not see, else (none left) up to MAX_FIT_IMAGES
    class-balanced training images it saw."""
    from mnist_edge.data.mnist import class_balanced_indices

    x, y = train.images, train.labels
    seen = seen_indices(ckpt, len(x))
    seed, recipe = (ckpt.get("metrics") or {}).get("seed"), ckpt.get("recipe") or {}
    split_seed, val_size = recipe.get("split_seed"), recipe.get("val_size") or 0
    drawn = f"seed {seed}" if split_seed is None else f"split seed {split_seed}, training seed {seed}"
    unseen = np.setdiff1d(np.arange(len(x)), seen) if seen is not None else np.zeros(0, np.int64)
    if len(unseen):
        pool = unseen
        split = (f"validation: the {val_size:,} training images held out of training (recipe val_size, {drawn})"
                 if val_size and len(unseen) == val_size else
                 f"training images not used in training ({len(unseen):,} of {len(x):,}; {drawn})")
    else:
        pool = np.arange(len(x))
        why = ("the recipe trained on all 60,000; no unseen non-test image is left" if seen is not None else
               "the checkpoint does not record which images it was trained on, so every one counts as seen")
        split = f"training images seen in training ({why}): the T fitted there is not applied, T = 1"
    if len(pool) > MAX_FIT_IMAGES:
        pool = pool[class_balanced_indices(y[pool], MAX_FIT_IMAGES, seed if isinstance(seed, int) else 0)]
    record = {"split": split, "seen_in_training": not len(unseen), "images": int(len(pool)),
              "indices_sha256": hashlib.sha256(np.asarray(pool, np.int64).tobytes()).hexdigest()}
    return np.ascontiguousarray(x[pool][:, None]), y[pool].astype(np.int64), record


def fit(reference, ckpt: dict, x_test: np.ndarray, y_test: np.ndarray, train) -> dict:
    """Fit T for ``reference`` (an :mod:`mnist_edge.exporter.reference` oracle: its ``logits``), set its
    ``temperature`` to it and return the record: T, the split, and ECE/NLL before and after on the fitting
    split (drawn from ``train``, see :func:`fit_split`) and on ``x_test`` (uint8 [N, 1, 28, 28]), with the
    rejection tables of the test probabilities at T and at 1."""
    x_fit, y_fit, fitted_on = fit_split(ckpt, train)
    z_fit, z_test = reference.logits(x_fit, FIT_BATCH), reference.logits(x_test, FIT_BATCH)
    fitted = round(cal.fit_temperature(z_fit, y_fit), 3)
    t = 1.0 if fitted_on["seen_in_training"] else fitted  # a T from seen digits sharpens: not applied
    reference.temperature = t
    fit, test = cal.summary(z_fit, y_fit, t), cal.summary(z_test, y_test, t)
    return {"temperature": t, "fitted_temperature": fitted, "applied": t == fitted, "method": "temperature scaling: T minimises the NLL of softmax(logits / T) "
                                        "on the fitting split (golden-section search over log T)",
            "fitted_on": dict(fitted_on, **_rounded(fit)), "test": dict(_rounded(test), rejection=test["rejection"],
                                                             rejection_before=test["rejection_before"])}


def _rounded(s: dict) -> dict:
    return {"images": s["images"], "accuracy_pct": s["accuracy_pct"],
            **{k: round(s[k], 4) for k in ("ece_before", "ece_after", "nll_before", "nll_after")}}


def metadata_record(record: dict) -> dict:
    """What the ONNX metadata keeps of the record: T, the split, ECE before/after (no rejection table)."""
    keep = ("split", "seen_in_training", "images", "ece_before", "ece_after")
    return {"temperature": record["temperature"], "fitted_temperature": record["fitted_temperature"],
            "fitted_on": {k: record["fitted_on"][k] for k in keep},
            "test": {k: record["test"][k] for k in ("images", "ece_before", "ece_after")},
            "probabilities": "softmax(logits / temperature), in the graph"}
