"""Labelled images beyond MNIST, for a user's own model: any MNIST-format IDX set, an ``.npz``, or a folder of
class folders. :func:`load_data` picks by what the path is; MNIST itself stays the default.

- IDX: the four files under MNIST's names (Fashion-MNIST and KMNIST use them; EMNIST's own names, e.g.
  ``emnist-letters-train-images-idx3-ubyte``, are found by their ``-train-``/``-test-`` parts), plain or
  ``.gz``, flat or in ``MNIST/raw``. Checked as strictly as MNIST's, except against MNIST's hashes.
- ``.npz``: uint8 ``x`` [N, 28, 28] or [N, 1, 28, 28] and integer ``y`` [N] (then one set serves for
  calibration and gates), or ``x_train``/``y_train``/``x_test``/``y_test``.
- a folder with ``train/`` and ``test/``, each holding one folder per class (its name is the label) of
  image files, read as the runtime reads images (:mod:`mnist_edge.runtime.images`, needs Pillow).

Images are 28x28 grey (one channel), as the exported files take them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mnist_edge.data.dataset import Digits, Split
from mnist_edge.errors import DataError

MAX_NPZ_BYTES = 1 << 31
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm")


def load_data(ref: str | os.PathLike | None = None) -> tuple[Digits, tuple | None]:
    """(data, labels): MNIST (``ref`` None), or the data set at ``ref``; ``labels`` are the class names the
    data defines (class folders), None where its labels are plain integers."""
    from mnist_edge.data.dataset import load_digits

    if ref is None:
        return load_digits(None), None
    path = Path(ref).expanduser()
    if path.suffix == ".npz":
        return load_npz(path), None
    if not path.is_dir():
        raise DataError(f"data '{path}' is neither a folder nor an .npz file")
    if (path / "train").is_dir() and (path / "test").is_dir():
        return load_class_folders(path)
    return load_idx(path), None


def _split(images, labels, what: str) -> Split:
    x, y = np.asarray(images), np.asarray(labels)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{what}: images must be uint8 [N, 28, 28] or [N, 1, 28, 28], got {x.dtype} {list(x.shape)}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: labels must be integers [N] with N = {len(x)}, got {y.dtype} {list(y.shape)}")
    if len(y) and (y.min() < 0 or y.max() >= 1000):
        raise DataError(f"{what}: labels must lie in 0..999, found {int(y.min())}..{int(y.max())}")
    return Split(np.ascontiguousarray(x), y.astype(np.int64))


def load_npz(path: Path) -> Digits:
    """An ``.npz`` of uint8 images and integer labels (see the module docstring); no pickled objects."""
    try:
        size = path.stat().st_size
        if size > MAX_NPZ_BYTES:
            raise DataError(f"'{path}' is {size:,} bytes, over the {MAX_NPZ_BYTES:,}-byte limit")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError(f"'{path}' is not a readable .npz of plain arrays: {e}") from None
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        return Digits(_split(arrays["x_train"], arrays["y_train"], f"{path} (train)"),
                      _split(arrays["x_test"], arrays["y_test"], f"{path} (test)"), str(path))
    if {"x", "y"} <= arrays.keys():
        both = _split(arrays["x"], arrays["y"], str(path))
        return Digits(both, both, str(path))
    raise DataError(f"'{path}' holds {', '.join(sorted(arrays)) or 'no arrays'}; expected x and y, or "
                    "x_train, y_train, x_test and y_test")


def _idx_files(folder: Path) -> dict[str, Path]:
    """split -> {images, labels} paths of an MNIST-format folder (MNIST's names, or EMNIST-style ones)."""
    from mnist_edge.data.mnist import SPLITS

    for d in (folder, folder / "MNIST" / "raw"):
        found = {}
        for split, (images, labels) in SPLITS.items():
            for kind, name in (("images", images), ("labels", labels)):
                cands = [d / name, d / f"{name}.gz"]
                part = "-train-" if split == "train" else "-test-"
                cands += sorted(p for p in d.glob(f"*{part}{kind}-idx{3 if kind == 'images' else 1}-ubyte*"))
                hit = next((p for p in cands if p.is_file()), None)
                if hit is not None:
                    found[(split, kind)] = hit
        if len(found) == 4:
            return found
    raise DataError(f"'{folder}' holds no MNIST-format IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or .gz), no .npz and no train/ and "
                    "test/ class folders")


def load_idx(folder: Path) -> Digits:
    """Any MNIST-format data set: the IDX files parsed as strictly as MNIST's (headers, sizes, counts)."""
    from mnist_edge.data.mnist import parse_idx, read_capped

    files = _idx_files(folder)
    splits = {}
    for split in ("train", "test"):
        images_path, labels_path = files[(split, "images")], files[(split, "labels")]
        x = parse_idx(read_capped(images_path, 1 << 30), str(images_path), "images", max_label=None)
        y = parse_idx(read_capped(labels_path, 1 << 26), str(labels_path), "labels", max_label=999)
        if len(x) != len(y):
            raise DataError(f"{images_path} holds {len(x)} images but {labels_path} holds {len(y)} labels")
        splits[split] = Split(x, y.astype(np.int64))
    return Digits(splits["train"], splits["test"], str(folder))


def load_class_folders(folder: Path) -> tuple[Digits, tuple]:
    """``train/`` and ``test/``, one sub-folder per class (sorted names are the labels) of image files."""
    from mnist_edge.runtime.images import load_images

    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"'{folder / 'train'}' must hold one folder per class (at least 2), found {classes}")
    splits = {}
    for split in ("train", "test"):
        paths, labels = [], []
        for i, name in enumerate(classes):
            files = sorted(p for p in (folder / split / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            labels += [i] * len(files)
        if not paths:
            raise DataError(f"'{folder / split}' holds no images in the class folders {', '.join(classes)}")
        splits[split] = Split(load_images(paths), np.asarray(labels, np.int64))
    return Digits(splits["train"], splits["test"], str(folder)), tuple(classes)
