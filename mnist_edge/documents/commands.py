"""The `export --json` and `verify --json` documents (schemas in :data:`mnist_edge.documents.SCHEMAS`).

Both carry ``ok``: false with an ``error`` line when the command failed (and the files they would have
described are unchanged or absent). Sizes in bytes, accuracies and agreements in percent.

- export: ``created_utc``, ``model``, ``out`` (the folder), ``seconds``, ``ok``, ``error``; when ok also
  ``files`` {name: {size, sha256, accuracy, agreement, max_abs_diff, reference}} and ``pytorch``,
  ``settings``, ``evaluation`` (copied from the manifest), and ``checks`` [{artifact, batch_size, metric,
  value, op, limit, passed}].
- verify: ``created_utc``, ``folder``, ``model``, ``ok``, ``error``, ``files`` [{file, status, accuracy,
  expected}] (``status``: "ok", "hash ok", "skipped (...)" or "failed").
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from mnist_edge.documents import EXPORT_SCHEMA, VERIFY_SCHEMA

FILE_KEYS = ("size", "sha256", "accuracy", "agreement", "max_abs_diff", "reference")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def export_document(result=None, *, model: str | None = None, out=None, error: str | None = None) -> dict:
    """The export document of an ExportResult, or of a failure (``error``) for ``model`` into ``out``."""
    if result is None:
        return {"schema": EXPORT_SCHEMA, "created_utc": _now(), "model": model, "out": str(out) if out else None,
                "seconds": None, "ok": False, "error": error}
    m = result.manifest
    checks = []
    for c in result.checks:
        d = c.to_dict()
        checks.append({k: d.get(k) for k in ("artifact", "batch_size", "metric", "value", "op", "limit")}
                      | {"passed": c.passed})
    return {"schema": EXPORT_SCHEMA, "created_utc": _now(), "model": result.model, "out": str(result.out),
            "seconds": round(result.seconds, 3), "ok": True, "error": None,
            "files": {name: {k: e.get(k) for k in FILE_KEYS} for name, e in m["files"].items()},
            "pytorch": m.get("pytorch"), "settings": m.get("settings"), "evaluation": m.get("evaluation"),
            "temperature": m.get("temperature"), "checks": checks}


def verify_document(report=None, *, folder=None, error: str | None = None) -> dict:
    """The verify document of a VerifyReport, or of a failure (``error``) for ``folder``."""
    if report is None:
        return {"schema": VERIFY_SCHEMA, "created_utc": _now(), "folder": str(folder), "model": None,
                "ok": False, "error": error, "files": []}
    return {"schema": VERIFY_SCHEMA, "created_utc": _now(), "folder": str(report.folder), "model": report.model,
            "ok": report.ok, "error": None,
            "files": [{k: r.get(k) for k in ("file", "status", "accuracy", "expected")} for r in report.rows]}


def write_document(doc: dict, path) -> None:
    """Write ``doc`` to ``path`` atomically, or to stdout when ``path`` is "-"."""
    text = json.dumps(doc, indent=2) + "\n"
    if str(path) == "-":
        print(text, end="")
        return
    from mnist_edge.files import write_text_atomic

    write_text_atomic(Path(path), text)
