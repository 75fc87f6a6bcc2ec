"""``verify_artifacts``: re-check an export folder against its manifest, without torch.

Order matters: every listed file's size and SHA-256 first (a flipped byte or truncated file is caught
before any parser sees it), then each ONNX file's structure (no external data, IR/opset the installed
onnxruntime loads, our metadata), its input/output contract, and its accuracy on the test set against
the manifest. TorchScript is checked the same way where torch is importable and reported as skipped
where it is not. The copy of the default model inside an installed wheel lacks the files its manifest
lists for torch (checkpoint, TorchScript): those are reported absent, everything present is checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_edge.errors import ArtifactError

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


def _read(path: Path, entry: dict) -> bytes:
    """The bytes of a listed file, bounded and regular-file only, checked against its manifest hash again."""
    from mnist_edge.io import describe_os_error, read_regular

    try:
        data = read_regular(path, entry["size"])
    except OSError as e:
        raise ArtifactError(f"cannot read it ({describe_os_error(e)})") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError("changed on disk after its hash check")
    return data


def verify_artifacts(folder: str | os.PathLike, *, data_root=None, hashes_only: bool = False,
                     tolerance_pp: float = DEFAULT_TOLERANCE_PP, torchscript: bool | None = None) -> VerifyReport:
    """Verify ``folder``; raise ArtifactError naming every failure, or return the per-file report.

    ``torchscript``: None checks it where torch is importable, False skips it, True requires torch.
    """
    from mnist_edge.manifest import read_manifest, verify_files
    from mnist_edge.packaged import not_shipped

    folder = Path(folder)
    if not hashes_only:
        from mnist_edge.data import require_splits

        require_splits(data_root, ("test",))
    manifest = read_manifest(folder)
    absent = not_shipped(folder, manifest)  # the wheel's copy leaves out checkpoint and TorchScript
    files = {name: entry for name, entry in manifest["files"].items() if name not in absent}
    verify_files(folder, list(files), manifest=manifest)  # hashes before anything is parsed
    report = VerifyReport(folder=folder, model=manifest["model"], absent=absent)
    report.rows = [{"file": name, "status": ABSENT, "accuracy": None,
                    "expected": manifest["files"][name].get("accuracy")} for name in absent]
    if hashes_only:
        report.rows += [{"file": name, "status": "hash ok", "accuracy": None,
                         "expected": entry.get("accuracy")} for name, entry in files.items()]
        return report

    from mnist_edge.data import load_mnist
    from mnist_edge.export.ort_eval import accuracy_pct, inspect_onnx, make_session, ort_logits
    from mnist_edge.runtime.checks import session_io_problems as contract_problems
    from mnist_edge.runtime.onnxfile import describe

    evaluation = manifest.get("evaluation") or {}
    n = evaluation.get("images", 10_000)
    batch = max(evaluation.get("batch_sizes") or [64])
    x, y = load_mnist("test", root=data_root)
    if not isinstance(n, int) or not 1 <= n <= len(x):
        raise ArtifactError(f"'{folder}/manifest.json' evaluates {n!r} test images; expected 1..{len(x)}")
    x, y = np.ascontiguousarray(x[:n, None]), np.asarray(y[:n]).astype(np.int64)

    problems = []
    use_torch = _torch_available() if torchscript is None else torchscript
    for name, entry in files.items():
        row = {"file": name, "status": "hash ok", "accuracy": None, "expected": entry.get("accuracy")}
        report.rows.append(row)
        if entry.get("kind") != "model":
            continue
        try:
            if entry.get("format") == "onnx":
                data = _read(folder / name, entry)  # parse exactly the bytes whose hash we check
                describe(data, name)  # the runtime's own reader: external data anywhere (sparse too) refused
                inspect_onnx(folder / name, model_name=manifest["model"], data=data)
                session = make_session(data)
                bad = contract_problems(session)
                if bad:
                    raise ArtifactError("; ".join(bad))
                row["accuracy"] = accuracy_pct(ort_logits(session, x, batch), y)
            elif entry.get("format") == "torchscript":
                if not use_torch:
                    row["status"] = "skipped (--no-torchscript)" if torchscript is False \
                        else "skipped (torch not installed)"
                    continue
                from mnist_edge.export.torchscript import load_torchscript, torch_logits, torch_threads

                data = _read(folder / name, entry)
                module, _ = load_torchscript(data)
                with torch_threads(1):  # see torch_threads: 4x faster than 2 threads on a busy 2-core machine
                    row["accuracy"] = accuracy_pct(torch_logits(module, x, batch), y)
            else:
                row["status"] = "hash ok (unknown format)"
                continue
        except ArtifactError as e:
            row["status"] = "failed"
            problems.append(f"{name}: {e}")
            continue
        except Exception as e:  # a loader's own exception types: report, never crash
            row["status"] = "failed"
            problems.append(f"{name}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            continue
        expected = entry.get("accuracy")
        if not isinstance(expected, (int, float)) or abs(row["accuracy"] - expected) > tolerance_pp:
            row["status"] = "failed"
            problems.append(f"{name}: accuracy {row['accuracy']:.2f}% on {n:,} test images, manifest says "
                            f"{expected if expected is None else f'{expected:.2f}%'} (tolerance {tolerance_pp} pp)")
        else:
            row["status"] = "ok"
    if problems:
        raise ArtifactError(f"'{folder}' fails verification: " + "; ".join(problems))
    return report
