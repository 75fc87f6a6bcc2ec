"""``verify_artifacts``: re-check an export folder against its manifest, without torch.

Order matters: every listed file's size and SHA-256 first (a flipped byte or truncated file is caught
before any parser sees it), then each ONNX file through the runtime's own load (``mnist_edge.runtime``, no
onnx package: external data refused, IR/opset the installed onnxruntime loads, our metadata and the
manifest's model name, the input/output contract, a dry run), and its accuracy on the test set against
the manifest: the one verification path, the same with or without onnx installed. TorchScript is checked the same way where torch is importable and reported as skipped
where it is not. The copy of the default model inside an installed wheel lacks the files its manifest
lists for torch (checkpoint, TorchScript): those are reported absent, everything present is checked.
"""

from __future__ import annotations

import importlib.util

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_edge.errors import ArtifactError, first_line

ABSENT = "absent (not in the wheel; torch-only)"
DEFAULT_TOLERANCE_PP = 0.1  # accuracy may move by 10 of 10,000 images across CPUs' kernels


@dataclass
class VerifyReport:
    folder: Path
    model: str
    rows: list = field(default_factory=list)  # {"file", "status": ok|skipped|hash-only, "accuracy", "expected"}
    absent: list = field(default_factory=list)  # listed files left out of the wheel's copy (not checked)

    @property
    def ok(self) -> bool:
        return all(r["status"] != "failed" for r in self.rows)


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:  # also what `sys.modules["torch"] = None` produces
        return False
    return True


def verify_artifacts(folder: str | os.PathLike, *, data_dir=None, hashes_only: bool = False,
                     tolerance_pp: float = DEFAULT_TOLERANCE_PP, torchscript: bool | None = None,
                     progress=None) -> VerifyReport:
    """Verify ``folder``; raise ArtifactError naming every failure, or return the per-file report.

    Hashes first; then (unless ``hashes_only``) each model's accuracy on the test images the export was
    gated on: MNIST's (``data_dir``: its folder), or, for a model exported on data of its own, that data
    (``data_dir``: its folder or .npz, checked against the hash the manifest records).
    ``torchscript``: None checks it where torch is importable, False skips it, True requires torch.
    ``progress(message)``: called before each model file's accuracy run (each takes 1-8 s).
    """
    from mnist_edge.manifest import load_manifest, verify_files
    from mnist_edge.packaged import not_shipped

    folder = Path(folder)
    manifest = load_manifest(folder)
    if not hashes_only and "data_sha256" not in (manifest.evaluation.extra if manifest.evaluation else {}):
        from mnist_edge.data.mnist import require_splits

        require_splits(data_dir, ("test",))
    raw = manifest.to_json()
    absent = not_shipped(folder, raw)  # the wheel's copy leaves out checkpoint and TorchScript
    files = {name: entry for name, entry in manifest.files.items() if name not in absent}
    verify_files(folder, list(files), manifest=raw)  # hashes before anything is parsed
    report = VerifyReport(folder=folder, model=manifest.model, absent=absent)
    report.rows = [{"file": name, "status": ABSENT, "accuracy": None,
                    "expected": manifest.files[name].accuracy} for name in absent]
    if hashes_only:
        report.rows += [{"file": name, "status": "hash ok", "accuracy": None,
                         "expected": entry.accuracy} for name, entry in files.items()]
        return report
    images = (*_test_images(folder, manifest, data_dir), max(manifest.evaluation.batch_sizes) if manifest.evaluation
              else 64)
    problems = []
    for name, entry in files.items():
        row = {"file": name, "status": "hash ok", "accuracy": None, "expected": entry.accuracy}
        report.rows.append(row)
        if entry.kind == "model":
            if progress is not None:
                progress(f"{name}: accuracy on {len(images[0]):,} test images")
            problems += _check_model(folder / name, entry, raw, images, row, tolerance_pp, torchscript)
    if problems:
        raise ArtifactError(f"'{folder}' fails verification: " + "; ".join(problems))
    return report


def _test_images(folder: Path, manifest, data_dir) -> tuple[np.ndarray, np.ndarray]:
    """The test images (uint8 [N, 1, 28, 28]) and labels the export was gated on, first N of them."""
    ev = manifest.evaluation
    n = ev.images if ev else 10_000
    want = ev.extra.get("data_sha256") if ev else None
    if want is None:
        from mnist_edge.data.mnist import load_mnist

        x, y = load_mnist("test", data_dir=data_dir)
    else:  # exported on data of its own: the same data, recognised by its hash
        from mnist_edge.data.sources import load_data
        from mnist_edge.training.checkpoint import digits_sha256

        if data_dir is None:
            raise ArtifactError(f"'{folder}' was gated on data of its own (SHA-256 {want[:12]}…): pass that data "
                                "with --data PATH (or --hashes-only)")
        data, _ = load_data(data_dir)
        if digits_sha256(data) != want:
            raise ArtifactError(f"--data {data_dir} is not the data '{folder}' was gated on (SHA-256 "
                                f"{digits_sha256(data)[:12]}…, the manifest records {want[:12]}…)")
        x, y = data.test.images, data.test.labels
    if not isinstance(n, int) or not 1 <= n <= len(x):
        raise ArtifactError(f"'{folder}/manifest.json' evaluates {n!r} test images; expected 1..{len(x)}")
    return np.ascontiguousarray(x[:n, None]), np.asarray(y[:n]).astype(np.int64)


def _check_model(path: Path, entry, raw: dict, images: tuple, row: dict, tolerance_pp: float,
                 torchscript) -> list[str]:
    """One model file's accuracy on ``images`` (x, y, batch size) against the manifest's; fills ``row``
    in and returns the problems found."""
    from mnist_edge.evaluate.ort_eval import accuracy_pct, ort_logits
    from mnist_edge.runtime.classifier import load

    x, y, batch = images
    try:
        if entry.format == "tflite" and importlib.util.find_spec("ai_edge_litert") is None:
            row["status"] = "skipped (ai-edge-litert not installed)"
            return []
        if entry.format in ("onnx", "tflite"):  # a .tflite through the same loader, run by LiteRT
            # The runtime's own load, the one path users run: the bytes hash-checked against this manifest
            # are the bytes parsed (no onnx package needed), external data anywhere refused, the metadata
            # contract and the model's name against the manifest's, the session's inputs and outputs, a dry
            # run. Then the accuracy on the test set with that session.
            clf = load(path, threads=1)
            row["accuracy"] = accuracy_pct(ort_logits(clf.session, x, batch), y)
        elif entry.format == "torchscript":
            if not (_torch_available() if torchscript is None else torchscript):
                row["status"] = "skipped (--no-torchscript)" if torchscript is False else "skipped (torch not installed)"
                return []
            row["accuracy"] = _torchscript_accuracy(path, raw, x, y, batch)
        else:
            row["status"] = "hash ok (unknown format)"
            return []
    except ArtifactError as e:
        row["status"] = "failed"
        return [f"{path.name}: {e}"]
    except Exception as e:  # a loader's own exception types: report, never crash
        row["status"] = "failed"
        return [f"{path.name}: {type(e).__name__}: {first_line(e)}"]
    expected = entry.accuracy
    if not isinstance(expected, (int, float)) or abs(row["accuracy"] - expected) > tolerance_pp:
        row["status"] = "failed"
        return [f"{path.name}: accuracy {row['accuracy']:.2f}% on {len(x):,} test images, manifest says "
                f"{expected if expected is None else f'{expected:.2f}%'} (tolerance {tolerance_pp} pp)"]
    row["status"] = "ok"
    return []


def _torchscript_accuracy(path: Path, raw: dict, x, y, batch: int) -> float:
    from mnist_edge.evaluate.ort_eval import accuracy_pct
    from mnist_edge.runtime.hashcheck import read_verified
    from mnist_edge.torchrun import load_torchscript, torch_logits, torch_threads

    data, _, _ = read_verified(path, raw)  # TorchScript is code: hash first
    module, _ = load_torchscript(data)
    with torch_threads(1):  # see torch_threads: 4x faster than 2 threads on a busy 2-core machine
        return accuracy_pct(torch_logits(module, x, batch), y)
