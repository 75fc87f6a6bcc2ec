"""Self-test bundles: a folder's own test images and reference outputs, checked on the device (no MNIST, no torch).

An export writes ``selftest.bin`` beside the models (mnist_edge.exporter.selftest_bundle): 100 class-balanced
test images, their true labels and, per model file, the reference logits (PyTorch's for the fp32 files, the
export machine's onnxruntime for int8) with the tolerance the file must meet. The manifest lists the bundle
with its SHA-256 like any other file. :func:`run_self_test` runs every ONNX and LiteRT file of the folder on the images
the way the runtime classifier does (same session options, same device choice) and fails when a file's
logits move beyond its tolerance or any label changes. TorchScript is checked too where torch is installed.

The bundle's file format and reader: :mod:`mnist_edge.evaluate.bundle`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.documents import SCHEMAS, load_json
from mnist_edge.errors import ArtifactError, SelfTestError, first_line
from mnist_edge.evaluate.bundle import BUNDLE_NAME, DTYPES, FORMAT, read_bundle
from mnist_edge.documents.fields import (FLAG, NONNEG, TEXT, Where, count, dump, extra_field, one_of, optional,
                                         parse, spec)

# Ceilings on what a bundle may state as tolerance (a re-sealed bundle with 1e30 passed any output). From
# docs/self-test.md's measurements: fp32 files move by at most 1.3e-5 across runtimes and settings, while
# weights scaled by (1 + 1e-4 noise) move logits by 1.0e-3 or more: a float tolerance at or above that could
# not catch it (the export states 1e-4). int8 logits come in output steps: the export states 1.5 steps (one
# step plus float slack), and a step can be no larger than the gaps between the reference logits it made.
# Different kernels move 0-1.5% of images by a step (the bundle's canaries, at most 35 of 100, are chosen
# for it); one int8 weight in a hundred off by a step moves 58-98% of them.
MAX_FLOAT_TOLERANCE = 1e-3
MAX_TOLERANCE_STEPS = 1.5
MAX_MOVED_FRACTION = 0.4

REPORT_SCHEMA = SCHEMAS["selftest_report"]  # `verify --self-test --json`; FORMAT is the bundle's own
STATUSES = ("ok", "failed", "skipped")


@dataclass
class Tolerance:
    """What a file's outputs may move by (recorded in the bundle; see :func:`compare`)."""

    max_abs_diff: float = spec(NONNEG, required=True)
    label_changes: int = spec(count(0), required=True)
    step: float | None = spec(optional(NONNEG), omit_none=True)  # int8: the output's quantization step
    moved_images: int | None = spec(optional(count(0)), omit_none=True)  # int8: images a step may move
    extra: dict = extra_field()


@dataclass
class BundleRun:
    """One pass of a file over the bundle: the first ``images`` images, ``batch_size`` at a time."""

    batch_size: int = spec(count(1), required=True)
    images: int = spec(count(1), required=True)
    extra: dict = extra_field()


@dataclass
class BundleFile:
    """The bundle's entry for one model file (``files[FILE]``): the bytes its references are for, the array
    holding them, the tolerance and the runs."""

    sha256: str = spec(TEXT, required=True)
    array: str = spec(TEXT, required=True)
    tolerance: Tolerance = spec(Tolerance, required=True)
    runs: list = spec(BundleRun, many=True, required=True)
    reference: str | None = spec(optional(TEXT))
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        if not self.runs:
            raise where.at("runs").bad(self.runs, "a non-empty list of {batch_size, images}")


@dataclass
class SelfTestRow:
    """One file's result: ``status`` ok, failed or skipped (``why``), ``exact`` (bit-identical to the
    reference), the worst differences over the bundle's runs, and the tolerance they were held to."""

    file: str = spec(TEXT, required=True)
    status: str = spec(one_of(*STATUSES), required=True)
    exact: bool | None = spec(optional(FLAG))
    max_abs_diff: float | None = spec(optional(NONNEG))
    label_changes: int | None = spec(optional(count(0)))
    moved_images: int | None = spec(optional(count(0)))
    tolerance: Tolerance | None = spec(Tolerance)
    reference: str | None = spec(optional(TEXT))
    why: str | None = spec(optional(TEXT))
    extra: dict = extra_field()


@dataclass
class SelfTestReport:
    """What ``verify --self-test`` found; ``to_json`` is its ``--json`` document (``mnist-edge-selftest-report/1``:
    ``folder``, ``model``, ``device`` (what really ran), ``images``, ``seconds``, ``rows``)."""

    schema: str = spec(one_of(REPORT_SCHEMA), default=REPORT_SCHEMA)
    folder: str = spec(TEXT, required=True)
    model: str = spec(TEXT, required=True)
    device: str = spec(TEXT, required=True)
    images: int = spec(count(0), required=True)
    seconds: float = spec(NONNEG, default=0.0)
    rows: list = spec(SelfTestRow, many=True, factory=list)
    extra: dict = extra_field()

    @property
    def ok(self) -> bool:
        return all(r.status in ("ok", "skipped") for r in self.rows)

    def to_json(self) -> dict:
        return dump(self)

    @classmethod
    def from_json(cls, path) -> "SelfTestReport":
        """The report in file ``path`` (the one bounded loader, every field checked; ArtifactError naming
        the file and the field otherwise)."""
        return parse(cls, load_json(path, kind="selftest_report"), Where(path))


def compare(logits: np.ndarray, reference: np.ndarray, tolerance: dict, exact: bool = False) -> dict:
    """How far ``logits`` are from ``reference`` (both [N, 10]) and whether that is within ``tolerance``.

    ``tolerance``: ``max_abs_diff`` (per logit), ``label_changes`` (images whose top label may change) and,
    for int8, ``step`` (the output's quantization step) and ``moved_images`` (how many images may have a
    logit that moved by a step). ``exact``: for int8 (whose reference is onnxruntime, not PyTorch), any
    difference at all fails: bit-identical outputs, i.e. the export machine's int8 kernels, are required.
    """
    if logits.shape != reference.shape:
        return {"max_abs_diff": None, "label_changes": None, "moved_images": None, "passed": False,
                "problem": f"output shape {logits.shape}, expected {reference.shape}"}
    if not np.isfinite(logits).all():
        return {"max_abs_diff": None, "label_changes": None, "moved_images": None, "passed": False,
                "problem": "non-finite logits"}
    diff = np.abs(logits.astype(np.float64) - reference.astype(np.float64))
    row_diff = diff.max(axis=1)
    worst = int(row_diff.argmax())
    got, want = logits.argmax(1), reference.argmax(1)
    changed = np.flatnonzero(got != want)
    moved = int((row_diff > tolerance.get("step", 0.0) / 2).sum())  # fp32: any difference; int8: a step
    max_diff = float(diff.max())
    parts = []
    exact = exact and "step" in tolerance  # bit-identity is only expected of int8 against onnxruntime
    if max_diff > tolerance["max_abs_diff"] or (exact and max_diff > 0):
        limit = 0 if exact else tolerance["max_abs_diff"]
        parts.append(f"max |Δ logits| {max_diff:.3g} (image {worst}) vs tolerance {limit:g}")
    if len(changed) > tolerance["label_changes"]:
        i = int(changed[0])
        parts.append(f"{len(changed)} label(s) changed (image {i}: {int(want[i])} -> {int(got[i])})")
    if "moved_images" in tolerance and moved > tolerance["moved_images"]:
        parts.append(f"{moved} of {len(logits)} images moved by a quantization step ({tolerance['step']:.3g}), "
                     f"at most {tolerance['moved_images']} may")
    return {"max_abs_diff": max_diff, "label_changes": int(len(changed)), "moved_images": moved,
            "passed": not parts, "problem": ", ".join(parts) or None}


@dataclass(frozen=True)
class _How:
    """How the files run: the runtime's ``device``, ``threads`` and ``strict``, whether TorchScript runs
    (None: where torch is importable), whether int8 must be bit-identical, and a test's session factory."""

    device: str
    threads: int | None
    strict: bool
    torchscript: bool | None
    exact: bool
    session_factory: object


def run_self_test(folder: str | Path, *, device: str = "cpu", threads: int | None = None,
                  torchscript: bool | None = None, exact: bool = False, strict: bool = False,
                  session_factory=None) -> SelfTestReport:
    """Run every file the bundle covers on its images; SelfTestError listing each failure, else the report.

    ONNX files go through the runtime's own session (:func:`mnist_edge.runtime.session.create_session`,
    ``device``, ``threads`` and ``strict`` as in ``load``), in each run the bundle names (batch 1 on the first
    20 images, batch 100 on all). ``torchscript``: None checks ``model.pt`` where torch is importable, False
    skips it. ``exact``: require int8 outputs bit-identical to the reference (the export machine's kernels).
    ``session_factory(data, source)`` replaces the session creation (tests use it to run other onnxruntime
    settings). One :class:`SelfTestRow` per file.
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    header, arrays, manifest = read_bundle(folder)
    images = np.ascontiguousarray(arrays["images"])
    report = SelfTestReport(folder=str(folder), model=manifest["model"], device=device, images=len(images))
    how = _How(device, threads, strict, torchscript, exact, session_factory)
    covered = header.get("files") or {}
    for name in sorted(n for n, e in manifest["files"].items() if e.get("kind") == "model" and n not in covered):
        report.rows.append(SelfTestRow(file=name, status="failed", why="listed in the manifest, but the bundle has "
                                                                        "no reference outputs for it"))
    from mnist_edge.packaged import not_shipped

    absent = not_shipped(folder, manifest)  # the wheel's copy of a model leaves out TorchScript
    used: dict[str, str] = {}
    for name, entry in sorted(covered.items()):
        if name in absent:
            try:
                tolerance = _tolerance(folder, name, entry)
            except SelfTestError:
                tolerance = None  # not run here: its tolerance is only shown
            report.rows.append(SelfTestRow(file=name, status="skipped", tolerance=tolerance,
                                           reference=_text(entry, "reference"),
                                           why="not in the installed package (torch-only)"))
            continue
        report.rows.append(_check_file(folder, name, entry, manifest, images, arrays, how, used))
    report.seconds = round(time.perf_counter() - t0, 4)
    report.device = ", ".join(sorted(set(used.values()))) or device  # what really ran ("auto" resolved)
    problems = [f"{r.file}: {r.why}" for r in report.rows if r.status == "failed"]
    if problems:
        raise SelfTestError(f"'{folder}' fails its self-test on {device} ({len(images)} images): "
                            + "; ".join(problems))
    return report


def _text(entry, key) -> str | None:
    value = entry.get(key) if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


def _tolerance(folder: Path, name: str, entry) -> Tolerance:
    """The bundle's tolerance for file ``name``, checked (SelfTestError naming the field otherwise)."""
    where = Where(folder / BUNDLE_NAME, f"files.{name}", SelfTestError)
    if not isinstance(entry, dict):
        raise where.bad(entry, "a JSON object")
    return parse(Tolerance, entry.get("tolerance"), where.at("tolerance"))


def _file_entry(folder: Path, name: str, entry, arrays: dict[str, np.ndarray]) -> tuple[BundleFile, np.ndarray]:
    """The bundle's entry for file ``name`` and its reference logits, every field checked and the tolerance
    held to the ceilings above; SelfTestError naming the field otherwise."""
    where = Where(folder / BUNDLE_NAME, f"files.{name}", SelfTestError)
    doc = parse(BundleFile, entry, where)
    n = len(arrays["images"])
    reference = arrays.get(doc.array)
    if reference is None:
        raise where.at("array").fail(f"names {doc.array[:80]!r}, which the bundle does not hold")
    if reference.dtype != DTYPES["float32"] or reference.ndim != 2 or reference.shape[0] != n or not reference.size:
        raise where.at("array").fail(f"names {doc.array[:80]!r}, {reference.dtype} {reference.shape}: expected "
                                     f"float32 [{n}, classes]")
    if not np.isfinite(reference).all():  # NaN > tolerance is False: a NaN reference would pass every check
        raise where.at("array").fail(f"names {doc.array[:80]!r}, which holds non-finite values")
    for i, run in enumerate(doc.runs):
        if run.images > n:
            raise where.at("runs").at(i).at("images").bad(run.images, f"an integer from 1 to {n}")
    _bound(doc.tolerance, reference, where.at("tolerance"))
    return doc, reference


def _bound(tol: Tolerance, reference: np.ndarray, where: Where) -> None:
    """Refuse a tolerance beyond what the export measured can justify (MAX_FLOAT_TOLERANCE and the others)."""
    if tol.label_changes != 0:
        raise where.at("label_changes").bad(tol.label_changes, "0: labels must match the reference exactly")
    if tol.step is None:
        if tol.max_abs_diff > MAX_FLOAT_TOLERANCE:
            raise where.at("max_abs_diff").fail(
                f"is {tol.max_abs_diff:g}, over the cap of {MAX_FLOAT_TOLERANCE:g} for float logits (a 1e-4 change "
                "of the weights moves them by about that)")
    else:
        if tol.step > MAX_FLOAT_TOLERANCE:  # a real int8 step: the reference logits are whole steps apart
            values = np.unique(reference.astype(np.float64))
            gap = float(np.diff(values).min()) if len(values) > 1 else 0.0
            if tol.step > gap * (1 + 1e-3):  # float32 rounding of the dequantized values
                raise where.at("step").fail(f"is {tol.step:g}, over the smallest gap between its reference logits "
                                            f"({gap:.3g}), which an int8 output step cannot be")
        cap = MAX_TOLERANCE_STEPS * tol.step
        if tol.max_abs_diff > cap:
            raise where.at("max_abs_diff").fail(f"is {tol.max_abs_diff:g}, over the cap of {MAX_TOLERANCE_STEPS:g} "
                                                f"output steps ({cap:.3g})")
    most = math.floor(MAX_MOVED_FRACTION * len(reference))
    if tol.moved_images is not None and tol.moved_images > most:
        raise where.at("moved_images").fail(f"is {tol.moved_images}, over the cap of {most} "
                                            f"({MAX_MOVED_FRACTION:.0%} of the {len(reference)} images)")


def _check_file(folder: Path, name: str, entry, manifest: dict, images, arrays, how: _How, used) -> SelfTestRow:
    """One covered file run on the bundle's images and compared with its reference outputs. Eight
    parameters: the file, the bundle's parts and the settings, each used here once."""
    row = SelfTestRow(file=name, status="ok", reference=_text(entry, "reference"))
    try:
        row.tolerance = _tolerance(folder, name, entry)
        doc, reference = _file_entry(folder, name, entry, arrays)
        listed = manifest["files"].get(name)
        if listed is None:
            raise SelfTestError("covered by the bundle but not listed in the manifest")
        if listed["sha256"] != doc.sha256:
            raise SelfTestError(f"the bundle's reference outputs are for other bytes (SHA-256 "
                                f"{doc.sha256[:12]}…, the file is {listed['sha256'][:12]}…)")
        run = _runner(folder, name, manifest, how, used)
        if run is None:
            row.status = "skipped"
            row.why = "TorchScript not asked for" if how.torchscript is False else "torch not installed"
            return row
        runs = [(r.batch_size, r.images) for r in doc.runs]
        tolerance = dump(doc.tolerance)
        results = [compare(run(images[:n], bs), reference[:n], tolerance, how.exact) for bs, n in runs]
    except (ArtifactError, SelfTestError) as e:
        row.status, row.why = "failed", str(e)
        return row
    except Exception as e:  # noqa: BLE001 - a runtime's own exception classes: reported, never a traceback
        row.status, row.why = "failed", f"{type(e).__name__}: {first_line(e)}"
        return row
    diffs = [r["max_abs_diff"] for r in results if r["max_abs_diff"] is not None]
    row.max_abs_diff = max(diffs) if diffs else None
    row.label_changes = max((r["label_changes"] or 0) for r in results)
    row.moved_images = max((r["moved_images"] or 0) for r in results)
    row.exact = row.max_abs_diff == 0 and len(diffs) == len(results)
    bad = [(bs, r) for (bs, _), r in zip(runs, results) if not r["passed"]]
    if bad:
        row.status = "failed"
        row.why = "; ".join(f"batch {bs}: {r['problem']}" for bs, r in bad)
    return row


def _runner(folder: Path, name: str, manifest: dict, how: _How, used):
    """A function (images, batch_size) -> logits for file ``name``, or None when it cannot run here;
    records the device it runs on in ``used[name]``."""
    from mnist_edge.runtime.hashcheck import read_verified

    entry = manifest["files"][name]
    if entry.get("format") == "onnx":
        data, _, _ = read_verified(folder / name, manifest)  # hash-checked bytes, parsed once
        if how.session_factory is not None:
            session, used[name] = how.session_factory(data, str(folder / name)), how.device
        else:
            from mnist_edge.runtime.session import create_session

            session, used[name], _ = create_session(data, source=str(folder / name), device=how.device,
                                                    threads=how.threads, strict=how.strict)
        return lambda x, bs: _batched(lambda b: session.run(["logits"], {"image": b})[0], x, bs)
    if entry.get("format") == "tflite":  # LiteRT, CPU only; without ai-edge-litert the file is not run here
        import importlib.util

        if importlib.util.find_spec("ai_edge_litert") is None or how.device.startswith("cuda"):
            return None
        from mnist_edge.runtime.litert import LiteRTSession

        data, _, _ = read_verified(folder / name, manifest)
        session, used[name] = LiteRTSession(data, source=str(folder / name), threads=how.threads), "cpu"
        return lambda x, bs: _batched(lambda b: session.run(["logits"], {"image": b})[0], x, bs)
    if entry.get("format") == "torchscript":
        if how.torchscript is False or (how.torchscript is None and not _torch_available()):
            return None
        from mnist_edge.torchrun import load_torchscript, torch_logits, torch_threads

        data, _, _ = read_verified(folder / name, manifest)
        module, _ = load_torchscript(data)
        used[name] = "cpu"

        def run(x, bs):
            with torch_threads(1):
                return torch_logits(module, x, bs)
        return run
    raise SelfTestError(f"format {entry.get('format')!r} cannot be self-tested")


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i:i + batch_size]), dtype=np.float32)
                           for i in range(0, len(x), batch_size)])


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
