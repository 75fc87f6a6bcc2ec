"""MNIST on disk: find the four IDX files, parse them strictly, verify their hashes, split them.

numpy and the standard library only. Loaded arrays are verified against the SHA-256 of the original
decompressed files, cached in-process and returned read-only (``.copy()`` for a writable one).
Downloading lives in :mod:`mnist_edge.data.download`, which builds on this module (never the other way).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnist_edge.errors import ChecksumError, DataNotFoundError, IdxFormatError, UsageError

ENV_VAR = "MNIST_EDGE_DATA"
ROWS = COLS = 28
NUM_CLASSES = 10


class IdxFile(NamedTuple):
    sha256: str  # of the decompressed bytes
    size: int  # decompressed bytes


# The four original files (decompressed). Order is fixed: it defines DATASET_SHA256.
FILES: dict[str, IdxFile] = {
    "train-images-idx3-ubyte": IdxFile(
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016),
    "train-labels-idx1-ubyte": IdxFile(
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008),
    "t10k-images-idx3-ubyte": IdxFile(
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016),
    "t10k-labels-idx1-ubyte": IdxFile(
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008),
}
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# One hash naming the whole data set: sha256 over "sha256  name" lines in FILES order.
DATASET_SHA256 = hashlib.sha256(
    "".join(f"{f.sha256}  {name}\n" for name, f in FILES.items()).encode()
).hexdigest()

SLACK = 4096  # bytes tolerated beyond the known size, so "too long" gets the parser's precise message
_KINDS = {"images": (0x00000803, 16), "labels": (0x00000801, 8)}  # magic, header bytes
_TORCHVISION_SUBDIR = Path("MNIST", "raw")


def cache_dir() -> Path:
    """The per-user folder ``$XDG_CACHE_HOME/mnist-edge`` (default ``~/.cache/mnist-edge``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mnist-edge"


def data_home(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The one folder to use and why: ``data_dir`` if given, else ``$MNIST_EDGE_DATA`` if set, else the cache.

    The first source that is given wins outright; we do not fall through to the next one, so that
    ``--data DIR`` or the env var never silently loads some other copy of the data.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser().absolute(), "the data argument"
    env = os.environ.get(ENV_VAR)
    if env:  # may be relative (CI: ../shared/data/mnist): relative to the working directory
        return Path(env).expanduser().absolute(), f"${ENV_VAR}"
    return cache_dir().absolute(), "the per-user cache"


def _locate(folder: Path, names) -> dict[str, Path] | None:
    """Paths of ``names`` (plain preferred, else .gz) in ``folder`` or its MNIST/raw; None if incomplete."""
    for d in (folder, folder / _TORCHVISION_SUBDIR):
        found = {}
        for name in names:
            for candidate in (d / name, d / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(names):
            return found
    return None


def download_hint(data_dir=None) -> str:
    """The command that fetches the files into the folder :func:`data_home` picks for ``data_dir``."""
    folder, source = data_home(data_dir)
    return "mnist-edge data download" + (f" --data {folder}" if data_dir is not None else "")


def _find(data_dir, names) -> dict[str, Path]:
    folder, source = data_home(data_dir)
    found = _locate(folder, names)
    if found is None:
        missing = [n for n in names if _locate(folder, (n,)) is None]
        raise DataNotFoundError(
            f"MNIST files not found in {folder} (from {source}; also looked in {folder / _TORCHVISION_SUBDIR}); "
            f"missing: {', '.join(missing)}. Get them with: {download_hint(data_dir)} "
            f"(or point --data DIR / ${ENV_VAR} at a folder that holds them)"
        )
    return found


def require_splits(data_dir=None, splits=tuple(SPLITS)) -> None:
    """Fail at once, in one line saying how to get them, when the files of ``splits`` are not there.

    Only looks for the files (no reading): commands call it before any other work.
    """
    for split in splits:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; valid: {', '.join(map(repr, SPLITS))}")
    _find(data_dir, tuple(n for split in splits for n in SPLITS[split]))


class FileStatus(NamedTuple):
    name: str
    path: Path | None  # None: not found
    state: str  # "verified", "missing", or what is wrong with it


def status(data_dir: str | os.PathLike | None = None) -> tuple[Path, str, list[FileStatus]]:
    """Where the data is looked for, why there, and each of the four files: found and verified or not."""
    folder, source = data_home(data_dir)
    rows = []
    for name, info in FILES.items():
        found = _locate(folder, (name,))
        if found is None:
            rows.append(FileStatus(name, None, "missing"))
            continue
        path = found[name]
        try:
            data = read_capped(path, info.size + SLACK)
        except IdxFormatError as e:
            rows.append(FileStatus(name, path, f"unreadable: {e}"))
            continue
        ok = hashlib.sha256(data).hexdigest() == info.sha256
        rows.append(FileStatus(name, path, "verified" if ok else "SHA-256 differs from the known MNIST file"))
    return folder, source, rows


def find_mnist_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the four IDX files: flat or MNIST/raw in the folder :func:`data_home` picks."""
    return next(iter(_find(data_dir, tuple(FILES)).values())).parent


def read_capped(path: Path, limit: int, gz: bool | None = None) -> bytes:
    """The bytes of ``path``, gunzipped if ``gz`` (default: name ends .gz); IdxFormatError past ``limit``.

    The limit bounds memory for plain files and gzip bombs alike.
    """
    path = Path(path)
    gz = path.suffix == ".gz" if gz is None else gz
    if path.exists() and not path.is_file():  # a FIFO would block the open below, a device never ends
        raise IdxFormatError(f"{path}: not a regular file")
    try:
        if gz:
            # GzipFile.read(n) decompresses incrementally and never holds more than n bytes of output.
            with gzip.open(path, "rb") as f:
                data = f.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise IdxFormatError(f"{path}: not a readable{' gzip' if gz else ''} file: {e}") from e
    if len(data) > limit:
        raise IdxFormatError(f"{path}: more than {limit} bytes of data (expected at most {limit})")
    return data


def parse_idx(data: bytes, name: str, expect_kind: str, max_label: int | None = NUM_CLASSES - 1) -> np.ndarray:
    """Parse MNIST IDX bytes: images -> uint8 [N,28,28], labels -> uint8 [N] in 0..``max_label`` (MNIST's 9);
    else IdxFormatError."""
    if expect_kind not in _KINDS:
        raise UsageError(f"unknown IDX kind {expect_kind!r}; valid: {', '.join(map(repr, _KINDS))}")
    magic, header = _KINDS[expect_kind]
    if len(data) < header:
        raise IdxFormatError(
            f"{name}: file is {len(data)} bytes, shorter than the {header}-byte IDX {expect_kind} header"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        hint = " (gzip data: name the file .gz)" if data[:2] == b"\x1f\x8b" else ""
        raise IdxFormatError(
            f"{name}: magic number 0x{found:08x}, expected 0x{magic:08x} for {expect_kind}{hint}"
        )
    count = int.from_bytes(data[4:8], "big")
    item_shape: tuple[int, ...] = ()
    if expect_kind == "images":
        item_shape = (int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big"))
        if item_shape != (ROWS, COLS):
            rows, cols = item_shape
            raise IdxFormatError(f"{name}: image dims {rows}x{cols}, expected {ROWS}x{COLS}")
    body = len(data) - header
    expected = count * int(np.prod(item_shape, dtype=np.int64))
    if body != expected:
        word = "shorter" if body < expected else "longer"
        raise IdxFormatError(
            f"{name}: body is {body} bytes, {word} than the {expected} the header says "
            f"({count} {expect_kind})"
        )
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape((count, *item_shape))
    if expect_kind == "labels" and count and max_label is not None and int(arr.max()) > max_label:
        bad = int(np.argmax(arr > max_label))
        raise IdxFormatError(f"{name}: label {int(arr[bad])} at index {bad}, expected 0..{max_label}")
    return arr


def _verify(data: bytes, path: Path, name: str) -> None:
    found = hashlib.sha256(data).hexdigest()
    if found != FILES[name].sha256:
        raise ChecksumError(f"{path}: SHA-256 {found}, expected {FILES[name].sha256} (the original {name})")


@functools.lru_cache(maxsize=4)
def _load_verified(images: Path, labels: Path, _stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Read, parse, cross-check and hash-verify one split; ``_stamp`` (sizes, mtimes) drops stale entries."""
    raw_x = read_capped(images, FILES[_stem(images)].size + SLACK)
    raw_y = read_capped(labels, FILES[_stem(labels)].size + SLACK)
    x = parse_idx(raw_x, str(images), "images")
    y = parse_idx(raw_y, str(labels), "labels")
    if len(x) != len(y):
        raise IdxFormatError(
            f"{images} holds {len(x)} images but {labels} holds {len(y)} labels; expected equal counts"
        )
    _verify(raw_x, images, _stem(images))
    _verify(raw_y, labels, _stem(labels))
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _stem(path: Path) -> str:
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def load_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N,28,28] and labels uint8 [N] of ``split`` ("train" 60k, "test" 10k), read-only.

    Hash-verified and cached in-process (``.copy()`` for writable arrays). Missing files are fetched by
    :func:`mnist_edge.data.download.download_mnist` (``mnist-edge data download``), never implicitly.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid: {', '.join(map(repr, SPLITS))}")
    names = SPLITS[split]
    found = _find(data_dir, names)
    paths = [found[n].resolve() for n in names]
    stamp = tuple((s.st_size, s.st_mtime_ns) for s in map(os.stat, paths))
    return _load_verified(paths[0], paths[1], stamp)


def data_sha256(data_dir: str | os.PathLike | None = None) -> str:
    """One hash naming the data set, after verifying both splits at ``data_dir`` (see DATASET_SHA256)."""
    for split in SPLITS:
        load_mnist(split, data_dir)
    return DATASET_SHA256


def train_val_split(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted int64 indices (train n - val_size, val val_size) from a seeded permutation."""
    if not 0 <= val_size <= n:
        raise UsageError(f"val_size {val_size} must be between 0 and n={n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def class_balanced_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` sorted indices into ``labels`` with per-class counts as equal as possible, chosen by ``seed``.

    Round-robin over classes (each class shuffled): a class with too few samples gives its share to the
    rest, and the classes that get one extra are picked by the seed too.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise UsageError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0 <= n <= len(labels):
        raise UsageError(f"n={n} must be between 0 and the number of labels ({len(labels)})")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    order = np.empty(len(labels), dtype=np.int64)  # round in which each sample would be taken
    tie = np.empty(len(labels), dtype=np.int64)  # position of its class within a round
    for pos, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        order[idx] = np.arange(len(idx))
        tie[idx] = pos
    chosen = np.lexsort((tie, order))[:n]
    return np.sort(chosen)
