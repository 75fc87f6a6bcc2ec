"""The self-test bundle's file format (``selftest.bin``): pack, unpack and the bounded, checked reader.

Written by :mod:`mnist_edge.exporter.selftest_bundle`, run by :mod:`mnist_edge.evaluate.selftest`.

File format (``mnist-edge-selftest/1``; little-endian, simple enough for JavaScript, see docs/self-test.md)::

    bytes 0-7    magic b"MNSTEST1"
    bytes 8-11   uint32 H, the length of the JSON header
    bytes 12..   H bytes of UTF-8 JSON (the header)
    then zero padding up to the next multiple of 64: the data section starts there
    arrays at header["arrays"][NAME] = {"dtype": "uint8"|"float32", "shape": [...], "offset": bytes from
    the data section's start (a multiple of 64), "nbytes"}

Header: ``format``, ``model``, ``images`` (N), ``selection`` (how the images were chosen), ``arrays``
(``images`` uint8 [N, 1, 28, 28], ``labels`` uint8 [N], and one float32 [N, 10] ``logits/FILE`` per file),
``files`` {FILE: {"sha256", "reference", "array", "tolerance": {"max_abs_diff", "label_changes"[, "step",
"moved_images"]}, "runs": [{"batch_size", "images"}, ...]}} (each run feeds the first ``images`` images
``batch_size`` at a time; the images are interleaved by class, so every prefix of 10k is balanced). Numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.documents import SCHEMAS, parse_json
from mnist_edge.documents.fields import Check, Where, count, extra_field, one_of, parse, spec
from mnist_edge.errors import ArtifactError

BUNDLE_NAME = A.SELFTEST
FORMAT = SCHEMAS["selftest_bundle"]  # the bundle file's header
MAGIC = b"MNSTEST1"
ALIGN = 64
DTYPES = {"uint8": np.dtype("u1"), "float32": np.dtype("<f4")}
MAX_BUNDLE_BYTES = 16 << 20  # ours are ~100 kB
MAX_DIMS = 8  # an array's dimensions (ours have 1, 2 or 4)


def pack(header: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """The bundle bytes for ``header`` (without its ``arrays`` key) and ``arrays`` (see the module docstring)."""
    layout, blobs, offset = {}, [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dtype = next((k for k, v in DTYPES.items() if a.dtype == v), None)
        if dtype is None:
            raise ValueError(f"array {name!r} has dtype {a.dtype}; a bundle holds {', '.join(DTYPES)}")
        raw = a.astype(DTYPES[dtype], copy=False).tobytes()
        layout[name] = {"dtype": dtype, "shape": list(a.shape), "offset": offset, "nbytes": len(raw)}
        pad = -len(raw) % ALIGN
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    text = json.dumps(dict(header, format=FORMAT, arrays=layout), sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")
    head = MAGIC + struct.pack("<I", len(text)) + text
    return head + b"\0" * (-len(head) % ALIGN) + b"".join(blobs)


@dataclass
class ArrayEntry:
    """Where one array lies in the data section: the header's ``arrays[NAME]``."""

    dtype: str = spec(one_of(*DTYPES), required=True)
    shape: list = spec(Check(lambda v: isinstance(v, list) and len(v) <= MAX_DIMS and all(map(count(0), v)),
                             f"a list of at most {MAX_DIMS} integers >= 0"), required=True)
    offset: int = spec(count(0), required=True)
    nbytes: int = spec(count(0), required=True)
    extra: dict = extra_field()


def unpack(data: bytes, source: str = BUNDLE_NAME) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) from bundle bytes; ArtifactError naming ``source`` when they are not a valid bundle.

    The header is strict JSON (finite numbers, bounded nesting: :func:`mnist_edge.documents.parse_json`) and
    every array entry is checked field by field, its size computed in exact integers (numpy's product of a
    shape like [2**62, 1, 28, 28] overflows to 0), before any array is made."""
    if len(data) < 12 or data[:8] != MAGIC:
        raise ArtifactError(f"{source} is not an mnist-edge self-test bundle (magic {data[:8]!r}, expected {MAGIC!r})")
    (hlen,) = struct.unpack("<I", data[8:12])
    if 12 + hlen > len(data):
        raise ArtifactError(f"{source}: header of {hlen:,} bytes runs past the end of the file ({len(data):,} bytes)")
    header = parse_json(data[12:12 + hlen], source)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ArtifactError(f"{source}: format {str(found)[:80]!r}, this mnist-edge reads {FORMAT!r}")
    start = 12 + hlen + (-(12 + hlen) % ALIGN)
    layout, where = header.get("arrays", {}), Where(source).at("arrays")
    if not isinstance(layout, dict):
        raise where.bad(layout, "an object")
    return header, {name: _array(data, start, entry, where.at(name)) for name, entry in layout.items()}


def _array(data: bytes, start: int, entry, where: Where) -> np.ndarray:
    """The array an ``arrays`` entry describes, read from ``data``'s data section (at ``start``)."""
    e = parse(ArrayEntry, entry, where)
    dtype = DTYPES[e.dtype]
    need = math.prod(e.shape) * dtype.itemsize
    if e.nbytes != need:
        raise where.at("nbytes").fail(f"is {e.nbytes:,}, but shape {e.shape} of {e.dtype} needs {need:,} bytes")
    if start + e.offset + e.nbytes > len(data):
        raise where.fail(f"does not fit the file: {e.nbytes:,} bytes at offset {e.offset:,} of the data section, "
                         f"which has {max(0, len(data) - start):,}")
    return np.frombuffer(data, dtype=dtype, count=e.nbytes // dtype.itemsize, offset=start + e.offset
                         ).reshape(e.shape)


def read_bundle(folder: str | Path, manifest: dict | None = None) -> tuple[dict, dict[str, np.ndarray], dict]:
    """(header, arrays, manifest) of ``folder``'s bundle, after the manifest's hash check of its bytes."""
    from mnist_edge import manifest as mf

    folder = Path(folder)
    manifest = manifest if manifest is not None else mf.read_manifest(folder)
    entry = manifest["files"].get(BUNDLE_NAME)
    if entry is None:
        raise ArtifactError(f"'{folder}' has no self-test bundle: its manifest does not list {BUNDLE_NAME} (exported "
                            "before self-tests existed; re-export it with `mnist-edge export`)")
    mf.verify_files(folder, [BUNDLE_NAME], manifest=manifest)
    path = folder / BUNDLE_NAME
    from mnist_edge.files import FileTooLargeError, describe_os_error, read_regular

    try:
        data = read_regular(path, MAX_BUNDLE_BYTES)
    except FileTooLargeError:
        raise ArtifactError(f"{path} is over the {MAX_BUNDLE_BYTES:,}-byte limit of a self-test bundle") from None
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {describe_os_error(e)}") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{path} changed while it was being read")
    header, arrays = unpack(data, str(path))
    _check_header(header, arrays, manifest["model"], Where(path))
    return header, arrays, manifest


def _check_header(header: dict, arrays: dict[str, np.ndarray], model: str, where: Where) -> None:
    """The header's parts every file's check relies on: the model, the images and labels, ``files``."""
    if header.get("model") != model:
        raise where.fail(f"is the bundle of model {str(header.get('model'))[:80]!r}, the manifest says {model!r}")
    for name in ("images", "labels"):
        if name not in arrays:
            raise where.fail(f"lacks the array {name!r}")
    images, labels = arrays["images"], arrays["labels"]
    n = len(images) if images.ndim else 0
    if (images.dtype, images.shape, labels.dtype, labels.shape) != (DTYPES["uint8"], (n, 1, 28, 28),
                                                                     DTYPES["uint8"], (n,)) or n == 0:
        raise where.fail(f"images {images.shape} and labels {labels.shape} are not [N, 1, 28, 28] and [N] of "
                         "uint8 with N >= 1")
    if header.get("images", n) != n:
        raise where.at("images").bad(header.get("images"), f"{n}, the number of images the bundle holds")
    if not isinstance(header.get("files", {}), dict):
        raise where.at("files").bad(header.get("files"), "an object")
