"""Labelled images in memory: what training, export, the int8 search and the benchmark are handed.

The entry point (the CLI, a script, a user's own code) loads the data once and passes these objects
down; nothing below it looks a data folder up again. Images are uint8 [N, H, W] (one channel) as the
files store them, labels int64 [N].
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mnist_edge.errors import DataError


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 [N, H, W], ``labels`` int64 [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise DataError(f"images must be uint8 [N, H, W], got {self.images.dtype} {list(self.images.shape)}")
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise DataError(f"{len(self.images)} images but labels of shape {list(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int | None) -> "Split":
        """The first ``n`` images (all of them for None)."""
        return self if n is None else Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class Digits:
    """The training and test splits of one data set, and where they came from (``source``: a folder)."""

    train: Split | None
    test: Split | None
    source: str = ""

    def need(self, *names: str) -> "Digits":
        """Self, or a DataError naming the splits this data lacks."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise DataError(f"the data from {self.source or 'the caller'} has no {' and no '.join(missing)} split")
        return self


def load_digits(data_dir: str | os.PathLike | None = None, splits=("train", "test")) -> Digits:
    """MNIST's ``splits`` from ``data_dir`` (else $MNIST_EDGE_DATA, else the cache), verified, in memory."""
    from mnist_edge.data.mnist import find_mnist_dir, load_mnist, require_splits

    require_splits(data_dir, tuple(splits))
    loaded = {}
    for name in splits:
        images, labels = load_mnist(name, data_dir=data_dir)
        loaded[name] = Split(np.ascontiguousarray(images), np.asarray(labels).astype(np.int64))
    return Digits(loaded.get("train"), loaded.get("test"), str(find_mnist_dir(data_dir)))


def balanced_sample(split: Split, n: int, seed: int, name: str = "train") -> tuple[np.ndarray, dict]:
    """``n`` class-balanced images of ``split`` (uint8 [n, H, W]) and a record of which ones (split
    ``name``, seed, count per class, SHA-256 of the indices): int8 calibration's images."""
    import hashlib

    from mnist_edge.data.mnist import class_balanced_indices

    idx = class_balanced_indices(split.labels, n, seed)
    record = {"split": name, "selection": "class_balanced_indices", "seed": seed, "images": len(idx),
              "per_class": np.bincount(split.labels[idx], minlength=10).tolist(),
              "indices_sha256": hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()}
    return split.images[idx], record
