"""The artifact manifest: per-file SHA-256 and size, checks and settings; hashes are verified before parsing.

``manifest.json`` sits in an export folder beside the files it describes. It is the guard against a
truncated or tampered artifact (a truncated ``.onnx`` can still parse), so readers call
:func:`verify_files` and only then open a model. The manifest carries a ``digest``: the SHA-256 of its own
canonical JSON without that field, so an edited manifest is caught too (accident, not attack: anyone
who can rewrite the files can rewrite the digest).

Standard library only (no numpy, torch or onnx): the runtime and ``mnist-edge verify`` use it where
torch is absent.

``created`` is ``$SOURCE_DATE_EPOCH`` when set, else the time the checkpoint's training finished (its
own record), else null: never the export's wall clock, so re-exporting a checkpoint reproduces the file.

Schema (``format`` ``mnist-edge-manifest/1``)::

    {"format", "model", "created", "digest",
     "contract":   {"version", "input": {name, dtype, shape, range}, "outputs", "labels"},
     "evaluation": {"split": "test", "images", "batch_sizes"},
     "versions":   {"mnist_edge", "python", "torch", "onnx", "onnxscript", "onnxruntime", "numpy"},
     "settings":   {"opset", "quantize", "quantization": {...} | null, "thresholds": {...}},
     "pytorch":    {"accuracy"},
     "checks":     [{"artifact", "batch_size", "metric", "value", "op", "limit", "passed", "error"}],
     "files": {NAME: {"kind", "sha256", "size", ...}}}

where each entry of ``files`` adds, for model files: ``format``, ``precision``, ``reference`` (what it
was compared with), ``accuracy`` (percent, batch 64), ``agreement`` (percent top-1 agreement with the
reference, worst batch size), ``max_abs_diff`` (max |Δ logits| against the reference, worst batch size),
``label_mismatches``, ``by_batch`` (the same per batch size), and for ONNX ``opset``/``ir_version``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from mnist_edge.errors import ArtifactError
from mnist_edge.io import sha256_file, write_text_atomic

FORMAT = "mnist-edge-manifest/1"
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # ours are a few kB; refuse to parse anything huge
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # plain file names: no folders, no '..'
_HEX64 = re.compile(r"[0-9a-f]{64}")


def file_record(path: str | os.PathLike) -> dict:
    """``{"sha256", "size"}`` of one file."""
    path = Path(path)
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def _canonical(manifest: dict) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def seal(manifest: dict) -> dict:
    """A copy of ``manifest`` with ``format`` set and its ``digest`` computed."""
    out = dict(manifest, format=FORMAT)
    out["digest"] = hashlib.sha256(_canonical(out)).hexdigest()
    return out


def write_manifest(folder: str | os.PathLike, manifest: dict) -> Path:
    """Seal ``manifest`` and write it atomically as ``folder/manifest.json``."""
    _check_schema(manifest, Path(folder) / MANIFEST_NAME, sealed=False)
    path = Path(folder) / MANIFEST_NAME
    write_text_atomic(path, json.dumps(seal(manifest), indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.chmod(path, 0o644)  # the atomic temp file is created 0600; a manifest is meant to be read by anyone
    return path


def read_manifest(folder: str | os.PathLike) -> dict:
    """The parsed manifest of ``folder``: refused if missing, oversized, malformed or edited after writing."""
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        raise ArtifactError(f"artifact folder '{folder}' does not exist or is not a folder")
    if not path.is_file():
        raise ArtifactError(f"'{path}' is missing: not an exported folder (run: mnist-edge export --model NAME)")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"'{path}' is {size:,} bytes; a manifest is at most {MAX_MANIFEST_BYTES:,}")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"'{path}' is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"'{path}' is not an mnist-edge manifest: format {found!r}, expected {FORMAT!r}")
    digest = manifest.get("digest")
    if not isinstance(digest, str) or digest != hashlib.sha256(_canonical(manifest)).hexdigest():
        raise ArtifactError(f"'{path}' was modified after export: its digest does not match its content")
    _check_schema(manifest, path, sealed=True)
    return manifest


def _check_schema(manifest: dict, path: Path, sealed: bool) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"'{path}' lists no files")
    if not isinstance(manifest.get("model"), str):
        raise ArtifactError(f"'{path}' names no model")
    for name, entry in files.items():
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name == MANIFEST_NAME:
            raise ArtifactError(f"'{path}' lists file {name!r}: only plain file names inside the folder are allowed")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not _HEX64.fullmatch(entry["sha256"]) or not isinstance(entry.get("size"), int) \
                or isinstance(entry.get("size"), bool) or entry["size"] < 0:
            raise ArtifactError(f"'{path}': entry for {name!r} needs a 64-hex 'sha256' and an integer 'size'")


def verify_files(folder: str | os.PathLike, names=None, manifest: dict | None = None) -> dict:
    """Check size and SHA-256 of every listed file (or just ``names``) before anything parses them.

    Returns the manifest. Every problem is collected into one :class:`ArtifactError`.
    """
    folder = Path(folder)
    manifest = manifest if manifest is not None else read_manifest(folder)
    files = manifest["files"]
    wanted = list(files) if names is None else list(names)
    problems = []
    for name in wanted:
        if name not in files:
            problems.append(f"{name}: not listed in the manifest (listed: {', '.join(files)})")
            continue
        path = folder / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name}: missing" if not path.exists() else f"{name}: not a regular file")
            continue
        size = path.stat().st_size
        if size != files[name]["size"]:
            problems.append(f"{name}: size {size:,} bytes, manifest says {files[name]['size']:,}")
            continue
        digest = sha256_file(path)
        if digest != files[name]["sha256"]:
            problems.append(f"{name}: SHA-256 {digest[:12]}… differs from the manifest's {files[name]['sha256'][:12]}…")
    if problems:
        raise ArtifactError(f"'{folder}' fails its hash check: " + "; ".join(problems))
    return manifest


def verified_path(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` after its hash matched the manifest (what a loader should open)."""
    verify_files(folder, [name])
    return Path(folder) / name
