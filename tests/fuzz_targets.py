"""What the fuzzer feeds and how it judges: seed files, byte and JSON mutations, and one call per target.

Shared by the bounded property-based tests (tests/test_fuzz.py, hypothesis drives the ``random.Random``)
and the opt-in long run (scripts/fuzz.py, worker processes, counts of every outcome). There is a target
for every reader of mnist_edge.documents.readers.READERS (tests/test_readers.py checks it). A case is one
mutated input given to one reader, whose result is then used as the tool uses it (a table, a card, a
comparison); its outcome is ``accepted`` (a valid result, and no nan or inf in what it rendered),
``typed`` (one of the project's MnistEdgeError classes) or ``untyped`` (anything else: a bug).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import shutil
import struct
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


def tflite_seeds() -> list[tuple[str, bytes]]:
    """bn_cnn's two LiteRT files, as committed."""
    return [(name, (MODEL_DIR / name).read_bytes()) for name in ("model.tflite", "model.int8.tflite")]


def json_seeds(name: str) -> list[tuple[str, bytes]]:
    """The committed document ``name`` of exported/bn_cnn/ and a small one generated from it."""
    doc = json.loads((MODEL_DIR / name).read_bytes())
    return [("json", json.dumps(doc, indent=2).encode()), ("json", json.dumps(_smaller(name, doc)).encode())]


def _smaller(name: str, doc: dict) -> dict:
    """A cut-down but valid variant of a committed document (another shape for the mutations to start from)."""
    doc = json.loads(json.dumps(doc))
    if name == "bench.json":
        doc["results"] = [r for r in doc["results"] if r["batch"] == 1][:2]
        doc["formats"] = [e for e in doc["formats"] if e["format"] in {r["format"] for r in doc["results"]}]
        doc["int8_vs_fp32"] = None
    elif name == "robustness.json":
        doc["conditions"] = doc["conditions"][:2]
        for e in doc["files"]:
            keep = {c["name"] for c in doc["conditions"]}
            e["accuracy"] = {k: v for k, v in e["accuracy"].items() if k in keep}
            e["rejection_transformed"] = e["rejection_transformed"][:1]
    elif name == "int8_recipe.json":
        doc["trials"] = doc["trials"][:2]
    elif name == "int8_report.json":
        doc["profile"] = {b: v for b, v in doc["profile"].items() if b == "1"}
    return doc


def recipe_seeds() -> list[tuple[str, bytes]]:
    """A registry (the zoo's), one entry of it, and a search result: the three shapes --recipe reads."""
    registry = json.loads((REPO / "mnist_edge" / "zoo" / "int8_recipes.json").read_bytes())
    return [("json", json.dumps(registry).encode()), ("json", json.dumps(registry["bn_cnn"]).encode()),
            ("json", (MODEL_DIR / "int8_recipe.json").read_bytes())]


def selftest_report_seed() -> bytes:
    from mnist_edge.evaluate.selftest import SelfTestReport, SelfTestRow, Tolerance

    rows = [SelfTestRow(file="model.onnx", status="ok", exact=False, max_abs_diff=2e-6, label_changes=0,
                        moved_images=0, tolerance=Tolerance(1e-4, 0), reference="pytorch"),
            SelfTestRow(file="model.int8.onnx", status="failed", exact=False, max_abs_diff=0.2, label_changes=1,
                        moved_images=4, tolerance=Tolerance(0.5, 1, step=0.1, moved_images=3), reference="onnxruntime",
                        why="1 label(s) changed"),
            SelfTestRow(file="model.pt", status="skipped", why="torch not installed")]
    report = SelfTestReport(folder="exported/bn_cnn", model="bn_cnn", device="cpu", images=100, seconds=0.5, rows=rows)
    return json.dumps(report.to_json()).encode()


def checkpoint_seeds() -> list[tuple[str, bytes]]:
    """The committed checkpoint and a tiny one (one tensor), both as torch.save writes them."""
    import torch

    small = {"format": "mnist-edge-checkpoint/1", "model": "mlp", "net": "MLP", "kwargs": {}, "recipe": {},
             "history": [], "metrics": {}, "state_dict": {"w": torch.zeros(2, 3)}}
    buf = io.BytesIO()
    torch.save(small, buf)
    return [("torch", (MODEL_DIR / "checkpoint.pt").read_bytes()), ("torch", buf.getvalue())]


# --- what a target checks beyond "no untyped error" -------------------------------------------------------

_NOT_FINITE = re.compile(r"(?i)(?<![\w.])-?(nan|inf|infinity)(?![\w])")


def finite_text(text: str, what: str) -> None:
    """Fail (an AssertionError: untyped) when a rendered table or card shows nan or inf."""
    m = _NOT_FINITE.search(text)
    assert m is None, f"{what} shows {m.group(0)!r}: ...{text[max(0, m.start() - 80):m.end() + 20]!r}"


def finite_json(doc) -> None:
    """Fail when a document as written back holds nan or inf (json.dumps would write NaN / Infinity)."""
    json.dumps(doc, allow_nan=False)


# --- targets --------------------------------------------------------------------------------------------

JSON_FILES = {"int8_search": "int8_recipe.json", "int8_report": "int8_report.json", "bench": "bench.json",
              "robustness": "robustness.json"}
CARD_FILES = ("bench.json", "robustness.json", "int8_report.json", "int8_recipe.json", "manifest.json")


class Targets:
    """One target per reader of mnist_edge.documents.readers.READERS (the same names), plus ``card`` (a model
    card drawn from a folder with one mutated file). Each case writes its bytes where the reader reads them,
    in a private temporary folder, then reads them as the tool does: :meth:`read`, which the tests also give
    a FIFO or a device."""

    NAMES = ("idx", "manifest", "onnx", "image", "checkpoint", "int8_recipe", "int8_search", "int8_report",
             "bench", "robustness", "selftest_bundle", "selftest_report", "card", "tflite")

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mnist-edge-fuzz-"))
        self._seeds: dict[str, list] = {}
        self._folders: dict[str, Path] = {}
        self.originals = {name: (MODEL_DIR / name).read_bytes() for name in CARD_FILES + ("selftest.bin",)}

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def seeds(self, target: str) -> list[tuple[str, bytes]]:
        """(kind, bytes) seeds of ``target``, made on first use (the checkpoint's need torch)."""
        if target not in self._seeds:
            make = {"idx": idx_seeds, "image": image_seeds, "onnx": onnx_seeds, "checkpoint": checkpoint_seeds,
                    "tflite": tflite_seeds,
                    "int8_recipe": recipe_seeds,
                    "manifest": lambda: [("bn_cnn", self.originals["manifest.json"])],
                    "selftest_bundle": lambda: [("bundle", self.originals["selftest.bin"])],
                    "selftest_report": lambda: [("json", selftest_report_seed())],
                    "card": lambda: [(name, self.originals[name]) for name in CARD_FILES]}
            self._seeds[target] = make[target]() if target in make else json_seeds(JSON_FILES[target])
        return self._seeds[target]

    def folder(self, target: str) -> Path:
        """A private copy of exported/bn_cnn for ``target`` (a mutated file can point at the real ones)."""
        if target not in self._folders:
            self._folders[target] = self.tmp / target
            shutil.copytree(MODEL_DIR, self._folders[target])
        return self._folders[target]

    def case(self, target: str, rng: random.Random) -> tuple[str, bytes]:
        """(seed kind, mutated bytes) for ``target``."""
        kind, seed = rng.choice(self.seeds(target))
        if target == "manifest" and rng.random() < 0.6:  # structural: wrong types, resealed so they get read
            return "resealed", _resealed(seed, rng)
        if target == "idx" and rng.random() < 0.2:
            return kind + ".gz", mutate(gzip.compress(seed, mtime=0), rng, hot=24)
        if target == "checkpoint" and rng.random() < 0.5:
            return "restructured", _restructured(seed, rng)
        if target == "selftest_bundle" and rng.random() < 0.5:
            return "header", _bundle_header(seed, rng)
        if target == "card":
            if kind == "manifest.json":
                return kind, _resealed(seed, rng)
            return kind, _json_case(seed, rng)
        if kind == "json":
            return kind, _json_case(seed, rng)
        return kind, mutate(seed, rng, hot={"idx": 16, "image": 64, "onnx": 64, "checkpoint": 64, "tflite": 64,
                                            "selftest_bundle": 512}.get(target, 0))

    def path(self, target: str, kind: str) -> Path:
        """Where ``target``'s reader finds the bytes of a case of ``kind``."""
        if target in ("manifest", "selftest_bundle", "card"):
            name = {"manifest": "manifest.json", "selftest_bundle": "selftest.bin"}.get(target, kind)
            return self.folder(target) / name
        name = {"idx": "data.gz" if kind.endswith(".gz") else "data", "image": f"image.{kind}",
                "onnx": "model.onnx", "checkpoint": "checkpoint.pt", "tflite": "model.tflite"}.get(target, f"{target}.json")
        path = self.tmp / "loose" / target / name  # no manifest beside it: nothing stops a parse but the checks
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, target: str, kind: str, data: bytes) -> str:
        """Feed ``data`` to ``target``; returns "accepted", raises MnistEdgeError ("typed") or anything else."""
        path = self.path(target, kind)
        self._restore(target, kind)
        path.unlink(missing_ok=True)  # a test may have left a FIFO or a link there
        path.write_bytes(data)
        if target == "selftest_bundle":
            self._reseal_bundle(path)
        return self.read(target, kind, path)

    def read(self, target: str, kind: str, path: Path) -> str:
        """Read the file at ``path`` with ``target``'s reader, and use what it returns as the tool does."""
        return getattr(self, f"_{target}")(kind, path)

    def _restore(self, target: str, kind: str) -> None:
        """Put back the files of a folder copy that an earlier case of another kind mutated."""
        if target == "card":
            for name in CARD_FILES:
                if name != kind:
                    (self.folder(target) / name).unlink(missing_ok=True)
                    (self.folder(target) / name).write_bytes(self.originals[name])

    def _reseal_bundle(self, path: Path) -> None:
        """Record the mutated bundle's hash in the manifest, so the reader gets past the hash check."""
        from mnist_edge.manifest import seal

        doc = json.loads(self.originals["manifest.json"])
        data = path.read_bytes()
        doc["files"]["selftest.bin"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        (path.parent / "manifest.json").write_text(json.dumps(seal(doc)))

    # --- one method per target: read, then use the result as the tool does ------------------------------

    def _idx(self, kind: str, path: Path) -> str:
        from mnist_edge.data.mnist import parse_idx, read_capped

        what = kind.split(".")[0]
        arr = parse_idx(read_capped(path, 1 << 20, gz=kind.endswith(".gz")), "fuzz", what)
        assert arr.dtype == np.uint8 and arr.shape[1:] == ((28, 28) if what == "images" else ())
        assert what != "labels" or len(arr) == 0 or int(arr.max()) <= 9
        return "accepted"

    def _manifest(self, kind: str, path: Path) -> str:
        from mnist_edge.evaluate.verify import verify_artifacts
        from mnist_edge.manifest import read_manifest
        from mnist_edge.runtime.hashcheck import pick_file

        manifest = read_manifest(path.parent)
        pick_file(path.parent, None)  # what predict does with a folder
        verify_artifacts(path.parent, hashes_only=True)  # what verify does first
        assert isinstance(manifest["files"], dict)
        return "accepted"

    def _onnx(self, kind: str, path: Path) -> str:
        from mnist_edge.runtime import load

        pred = load(path, threads=1).predict(PROBE, top_k=2)
        assert pred.labels.shape == (3,) and np.isfinite(pred.probabilities).all()
        return "accepted"

    def _tflite(self, kind: str, path: Path) -> str:
        from mnist_edge.runtime import load

        pred = load(path, threads=1).predict(PROBE, top_k=2)
        assert pred.labels.shape == (3,) and np.isfinite(pred.probabilities).all()
        return "accepted"

    def _image(self, kind: str, path: Path) -> str:
        from mnist_edge.runtime.images import load_image

        out = load_image(path)
        assert out.shape == (28, 28) and out.dtype == np.uint8
        return "accepted"

    def _checkpoint(self, kind: str, path: Path) -> str:
        from mnist_edge.cards.folder import training_of
        from mnist_edge.training.checkpoint import read_checkpoint

        ckpt = read_checkpoint(path)
        training_of(ckpt, path)  # what a card reads of it
        return "accepted"

    def _int8_recipe(self, kind: str, path: Path) -> str:
        from mnist_edge.int8.recipes import load_recipe, read_recipe_file

        recipes = read_recipe_file(path)
        for recipe in recipes.values():
            finite_json(recipe.record())
            finite_json(recipe.options.to_dict())
        if "bn_cnn" in recipes or "" in recipes:
            load_recipe("bn_cnn", path)  # what `quantize --model bn_cnn --recipe FILE` does
        return "accepted"

    def _int8_search(self, kind: str, path: Path) -> str:
        from mnist_edge.cards.int8 import int8_recipe_lines, int8_verdict
        from mnist_edge.int8.result import SearchResult

        result = SearchResult.from_json(path)
        finite_json(result.to_json())
        manifest = json.loads(self.originals["manifest.json"])  # its recipe record names this search's verdict
        finite_text("\n".join(int8_recipe_lines(manifest, result)) + int8_verdict(manifest, result), "int8 card lines")
        return "accepted"

    def _int8_report(self, kind: str, path: Path) -> str:
        from mnist_edge.cards.folder import load_int8_report
        from mnist_edge.int8.diagnose import profile_markdown

        report = load_int8_report(path)
        finite_text("\n".join(profile_markdown(report)), "the card's profile table")
        return "accepted"

    def _bench(self, kind: str, path: Path) -> str:
        from mnist_edge.bench import report as rep
        from mnist_edge.bench.document import BenchReport

        report = BenchReport.from_json(path)
        finite_json(report.to_json())
        seed = BenchReport.from_dict(json.loads(self.originals["bench.json"]))
        for a, b in ((seed, report), (report, seed)):  # what `bench --compare A B` prints and writes
            cmp = rep.compare_reports(a, b)
            finite_json(cmp)
            finite_text(rep.render_compare(cmp) + rep.render_compare(cmp, markdown=True), "bench --compare")
        finite_text(rep.render_table(report, wide=True) + rep.render_markdown(report), "the bench table")
        return "accepted"

    def _robustness(self, kind: str, path: Path) -> str:
        from mnist_edge.cards.reliability import robustness_index, robustness_lines, robustness_rejection_table
        from mnist_edge.evaluate.robustness import read_report, render_table, stale_files

        report = read_report(path)
        stale = stale_files(MODEL_DIR, report)
        text = render_table(report)
        if isinstance(report.get("command"), str):  # what the card requires to quote it (load_robustness)
            text += "\n".join(robustness_lines("bn_cnn", report, stale))
        text += "\n".join(robustness_index([("bn_cnn", report, stale)])
                           + robustness_rejection_table([("bn_cnn", report)]))
        finite_text(text, "the robustness tables")
        return "accepted"

    def _selftest_bundle(self, kind: str, path: Path) -> str:
        from mnist_edge.evaluate.bundle import read_bundle
        from mnist_edge.evaluate.selftest import run_self_test

        read_bundle(path.parent)
        report = run_self_test(path.parent, torchscript=False, threads=1)  # what `verify --self-test` does
        finite_json(report.to_json())
        return "accepted"

    def _selftest_report(self, kind: str, path: Path) -> str:
        from mnist_edge.evaluate.selftest import SelfTestReport

        finite_json(SelfTestReport.from_json(path).to_json())
        return "accepted"

    def _card(self, kind: str, path: Path) -> str:
        from mnist_edge.cards.card import model_card, zoo_index
        from mnist_edge.cards.folder import load_card_folder

        card = load_card_folder(path.parent, "bn_cnn")
        finite_text(model_card(card) + zoo_index([card]), "the model card")
        return "accepted"


# --- structural mutations: wrong types where the reader must look, sealed so it gets that far ---------------

EDGE_VALUES = (0, -1, 0.0, -0.0, 1e-300, 5e-324, 1e308, -1e308, 2**63, 10**19, True, None, "", "\u00b2", "a\u0000b",
               [], {}, [None], [[]], {"": 0}, "../../etc/passwd")
TOKENS = (b"1e400", b"-1e400", b"1e-400", b"-0", b"123456789012345678901234", b"NaN", b"Infinity", b"1E+309")


def _leaves(doc) -> list[tuple]:
    """Paths (tuples of keys and indexes) to every value of ``doc`` that is not a list or an object."""
    out, todo = [], [((), doc)]
    while todo:
        path, value = todo.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
        if items is None:
            out.append(path)
        else:
            todo += [(path + (k,), v) for k, v in items]
    return out


def _at(doc, path: tuple):
    for key in path:
        doc = doc[key]
    return doc


def mutate_leaves(doc, rng: random.Random):
    """``doc`` with 1-3 of its scalar values, picked uniformly however deep, set to an awkward value."""
    doc = json.loads(json.dumps(doc))
    leaves = [p for p in _leaves(doc) if p]
    for path in rng.sample(leaves, min(len(leaves), rng.choice((1, 1, 2, 3)))):
        _at(doc, path[:-1])[path[-1]] = rng.choice(EDGE_VALUES) if rng.random() < 0.6 else random_json(rng, 2)
    return doc


def _json_case(seed: bytes, rng: random.Random) -> bytes:
    """A JSON document mutated at the JSON level (random paths, or scalars however deep), in its number
    tokens (1e400, huge integers, NaN), nested deeply, or at the byte level."""
    r = rng.random()
    if r < 0.35:
        return json.dumps(mutate_json(json.loads(seed), rng), allow_nan=True).encode()
    if r < 0.7:
        return json.dumps(mutate_leaves(json.loads(seed), rng), allow_nan=True).encode()
    if r < 0.8:  # a number written as JSON's grammar allows but a float cannot hold (or JSON does not allow)
        doc = json.loads(seed)
        numbers = [p for p in _leaves(doc) if p and isinstance(_at(doc, p), (int, float))]
        if numbers:
            path = rng.choice(numbers)
            _at(doc, path[:-1])[path[-1]] = "\u0000TOKEN"
            return json.dumps(doc).encode().replace(b'"\\u0000TOKEN"', rng.choice(TOKENS))
    if r < 0.83:
        depth = rng.choice((31, 32, 33, 100, 5000, 100_000))
        doc = mutate_leaves(json.loads(seed), rng)
        text = json.dumps(doc).encode()
        return text[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}" if text.endswith(b"}") else text
    return mutate(seed, rng)


def _resealed(seed: bytes, rng: random.Random) -> bytes:
    from mnist_edge.manifest import seal

    doc = mutate_json(json.loads(seed), rng)
    body = seal(doc) if isinstance(doc, dict) else doc
    return json.dumps(body, allow_nan=True).encode()


def _restructured(seed: bytes, rng: random.Random) -> bytes:
    """A checkpoint whose plain fields (and sometimes its state_dict) were mutated, saved again by torch."""
    import torch

    ckpt = torch.load(io.BytesIO(seed), map_location="cpu", weights_only=True)
    state = ckpt.pop("state_dict")
    ckpt = mutate_json(ckpt, rng)
    if isinstance(ckpt, dict) and rng.random() < 0.8:
        ckpt["state_dict"] = state
        if rng.random() < 0.3 and state:
            state[rng.choice(list(state))] = random_json(rng)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def _bundle_header(seed: bytes, rng: random.Random) -> bytes:
    """A self-test bundle with its JSON header mutated and the data section kept (mnist_edge.evaluate.bundle)."""
    from mnist_edge.evaluate.bundle import ALIGN, MAGIC

    (hlen,) = struct.unpack("<I", seed[8:12])
    start = 12 + hlen + (-(12 + hlen) % ALIGN)
    header = json.dumps(mutate_json(json.loads(seed[12:12 + hlen]), rng), allow_nan=True).encode()
    head = MAGIC + struct.pack("<I", len(header)) + header
    return head + b"\0" * (-len(head) % ALIGN) + seed[start:]


def classify(targets: Targets, target: str, kind: str, data: bytes) -> tuple[str, str]:
    """(outcome, detail): accepted, typed (the error class) or untyped (type and first line)."""
    try:
        return targets.run(target, kind, data), ""
    except MnistEdgeError as e:
        return "typed", type(e).__name__
    except Exception as e:  # noqa: BLE001 - the point: anything else is a finding
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return "untyped", f"{type(e).__name__}: {text}"
