"""What the fuzzer feeds and how it judges: seed files, byte and JSON mutations, and one call per target.

Shared by the bounded property-based tests (tests/test_fuzz.py, hypothesis drives the ``random.Random``)
and the opt-in long run (scripts/fuzz.py, worker processes, counts of every outcome). A case is one
mutated input given to one reader; its outcome is ``accepted`` (the reader returned a valid result),
``typed`` (it raised one of the project's MnistEdgeError classes) or ``untyped`` (anything else: a bug).
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mnist_edge.errors import MnistEdgeError

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "exported" / "bn_cnn"
PROBE = (np.arange(3 * 784) * 37 % 256).astype(np.uint8).reshape(3, 28, 28)
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 784, 28, 10_000)


# --- mutations ------------------------------------------------------------------------------------------

def mutate(data: bytes, rng: random.Random, hot: int = 0) -> bytes:
    """1-8 random edits (bit flip, interesting byte or 32-bit value, insert, delete, truncate); with ``hot``,
    half of the edits land in the first ``hot`` bytes (a header)."""
    d = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5, 8))):
        if not d:
            d.append(rng.randrange(256))
        i = rng.randrange(min(hot, len(d))) if hot and rng.random() < 0.5 else rng.randrange(len(d))
        op = rng.randrange(12)
        if op < 4:
            d[i] ^= 1 << rng.randrange(8)
        elif op < 7:
            d[i] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif op < 9:
            d[i:i + 4] = rng.choice(INTERESTING32).to_bytes(4, rng.choice(("big", "little")))
        elif op == 9:
            d[i:i] = rng.randbytes(rng.randrange(1, 17))
        elif op == 10:
            del d[i:i + rng.randrange(1, 17)]
        else:
            del d[i:]
    return bytes(d)


def random_json(rng: random.Random, depth: int = 0):
    """A JSON value of a random type, including the awkward ones (bools for numbers, negatives, nesting)."""
    kind = rng.randrange(10 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, 1, -1, 7, 64, 10_000, 2**31, -2**63, 10**19))
    if kind == 3:
        return rng.choice((0.0, -0.5, 99.5, 1e308, 1e-308, 100.0))
    if kind == 4:
        return rng.choice(("", "bn_cnn", "../etc/passwd", "model.onnx", "x" * 300, "\u00e9", "0" * 64))
    if kind == 5:
        return rng.choice(([], {}, [[]], [-1], [0], [1, 7, 64]))
    if kind == 6:
        return rng.choice(("onnx", "torchscript", "model", "int8", "fp32"))
    if kind == 7:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(("files", "size", "sha256", "kind", "format", "accuracy", "images", "batch_sizes", "k")):
            random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def mutate_json(doc, rng: random.Random):
    """A deep copy of ``doc`` with 1-3 values replaced, removed or added at random paths."""
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.randrange(1, 4)):
        node, key = doc, None
        for _ in range(rng.randrange(1, 5)):  # walk down a random path
            children = list(node.keys()) if isinstance(node, dict) else list(range(len(node))) \
                if isinstance(node, list) else []
            if not children:
                break
            key = rng.choice(children)
            if isinstance(node[key], (dict, list)) and rng.random() < 0.7:
                node = node[key]
                key = None
            else:
                break
        if key is None:
            if isinstance(node, dict):
                node[rng.choice(("files", "evaluation", "extra", "model"))] = random_json(rng)
            elif isinstance(node, list):
                node.append(random_json(rng))
        elif rng.random() < 0.2:
            del node[key]
        else:
            node[key] = random_json(rng)
    return doc


# --- seeds ----------------------------------------------------------------------------------------------

def _idx(kind: str, n: int) -> bytes:
    rng = np.random.default_rng(n)
    if kind == "images":
        return (0x803).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + \
            rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes()
    return (0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + rng.integers(0, 10, n, dtype=np.uint8).tobytes()


def idx_seeds() -> list[tuple[str, bytes]]:
    return [("images", _idx("images", 3)), ("labels", _idx("labels", 20)), ("images", _idx("images", 0))]


def image_seeds() -> list[tuple[str, bytes]]:
    from PIL import Image

    digit = np.zeros((24, 20), np.uint8)
    digit[4:20, 8:12] = 255
    gray = Image.fromarray(digit)
    rgba = Image.fromarray(np.dstack([255 - digit] * 3 + [np.full_like(digit, 255)]).astype(np.uint8), "RGBA")
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Cam"
    out = []
    for name, img, fmt, kw in (("png", gray, "PNG", {}), ("rgba.png", rgba, "PNG", {}),
                               ("p.png", gray.convert("P"), "PNG", {"transparency": 0}),
                               ("jpg", gray, "JPEG", {"exif": exif.tobytes()}), ("gif", gray, "GIF", {}),
                               ("bmp", gray, "BMP", {}), ("tif", gray, "TIFF", {"compression": "tiff_lzw"}),
                               ("webp", rgba, "WEBP", {}), ("pgm", gray, "PPM", {}),
                               ("i16.png", gray.convert("I;16"), "PNG", {})):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append((name, buf.getvalue()))
    return out


def onnx_seeds() -> list[tuple[str, bytes]]:
    from helpers_onnx import contract_model_bytes

    return [("tiny", contract_model_bytes()), ("bn_cnn.int8", (MODEL_DIR / "model.int8.onnx").read_bytes())]


# --- targets --------------------------------------------------------------------------------------------

class Targets:
    """The four readers, each called on mutated bytes inside a private temporary folder."""

    NAMES = ("idx", "manifest", "onnx", "image")

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mnist-edge-fuzz-"))
        self.seeds = {"idx": idx_seeds(), "image": image_seeds(), "onnx": onnx_seeds(),
                      "manifest": [("bn_cnn", (MODEL_DIR / "manifest.json").read_bytes())]}
        self.artifacts = self.tmp / "artifacts"  # the real files, so a mutated manifest can point at them
        shutil.copytree(MODEL_DIR, self.artifacts)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def case(self, target: str, rng: random.Random) -> tuple[str, bytes]:
        """(seed kind, mutated bytes) for ``target``."""
        kind, seed = rng.choice(self.seeds[target])
        if target == "manifest" and rng.random() < 0.6:  # structural: wrong types, resealed so they get read
            from mnist_edge.manifest import seal

            doc = mutate_json(json.loads(seed), rng)
            body = seal(doc) if isinstance(doc, dict) else doc
            return "resealed", json.dumps(body, allow_nan=True).encode()
        if target == "idx" and rng.random() < 0.2:
            return kind + ".gz", mutate(gzip.compress(seed, mtime=0), rng, hot=24)
        return kind, mutate(seed, rng, hot={"idx": 16, "image": 64, "onnx": 64}.get(target, 0))

    def run(self, target: str, kind: str, data: bytes) -> str:
        """Feed ``data`` to ``target``; returns "accepted", raises MnistEdgeError ("typed") or anything else."""
        return getattr(self, f"_{target}")(kind, data)

    def _idx(self, kind: str, data: bytes) -> str:
        from mnist_edge.data.mnist import parse_idx, read_capped

        what = kind.split(".")[0]
        if kind.endswith(".gz"):
            path = self.tmp / "data.gz"
            path.write_bytes(data)
            data = read_capped(path, 1 << 20, gz=True)
        arr = parse_idx(data, "fuzz", what)
        assert arr.dtype == np.uint8 and arr.shape[1:] == ((28, 28) if what == "images" else ())
        assert what != "labels" or len(arr) == 0 or int(arr.max()) <= 9
        return "accepted"

    def _manifest(self, kind: str, data: bytes) -> str:
        from mnist_edge.evaluate.verify import verify_artifacts
        from mnist_edge.manifest import read_manifest
        from mnist_edge.runtime.hashcheck import pick_file

        (self.artifacts / "manifest.json").write_bytes(data)
        manifest = read_manifest(self.artifacts)
        pick_file(self.artifacts, None)  # what predict does with a folder
        verify_artifacts(self.artifacts, hashes_only=True)  # what verify does first
        assert isinstance(manifest["files"], dict)
        return "accepted"

    def _onnx(self, kind: str, data: bytes) -> str:
        from mnist_edge.runtime import load

        path = self.tmp / "loose" / "model.onnx"  # no manifest beside it: nothing stops a parse but the checks
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        pred = load(path, threads=1).predict(PROBE, top_k=2)
        assert pred.labels.shape == (3,) and np.isfinite(pred.probabilities).all()
        return "accepted"

    def _image(self, kind: str, data: bytes) -> str:
        from mnist_edge.runtime.images import load_image

        path = self.tmp / f"image.{kind}"
        path.write_bytes(data)
        out = load_image(path)
        assert out.shape == (28, 28) and out.dtype == np.uint8
        return "accepted"


def classify(targets: Targets, target: str, kind: str, data: bytes) -> tuple[str, str]:
    """(outcome, detail): accepted, typed (the error class) or untyped (type and first line)."""
    try:
        return targets.run(target, kind, data), ""
    except MnistEdgeError as e:
        return "typed", type(e).__name__
    except Exception as e:  # noqa: BLE001 - the point: anything else is a finding
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return "untyped", f"{type(e).__name__}: {text}"
