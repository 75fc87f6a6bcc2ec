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
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.documents import fields as F
from mnist_edge.documents import SCHEMAS, parse_json
from mnist_edge.errors import ArtifactError
from mnist_edge.files import FileTooLargeError, describe_os_error, read_regular, sha256_file, write_text_atomic

FORMAT = SCHEMAS["manifest"]
MANIFEST_NAME = A.MANIFEST
MAX_MANIFEST_BYTES = 1 << 20  # ours are a few kB; refuse to parse anything huge
_SAFE_NAME = A.SAFE_NAME  # plain file names: no folders, no '..'
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
    return path


def read_manifest(folder: str | os.PathLike) -> dict:
    """The parsed manifest of ``folder``: refused if missing, oversized, malformed or edited after writing."""
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        raise ArtifactError(f"artifact folder '{folder}' does not exist or is not a folder")
    if not path.exists():
        raise ArtifactError(f"'{path}' is missing: not an exported folder (run: mnist-edge export --model NAME)")
    try:
        data = read_regular(path, MAX_MANIFEST_BYTES)
    except FileTooLargeError:
        raise ArtifactError(f"'{path}' is over {MAX_MANIFEST_BYTES:,} bytes; a manifest is at most "
                            f"{MAX_MANIFEST_BYTES:,}") from None
    except OSError as e:
        raise ArtifactError(f"cannot read '{path}': {describe_os_error(e)}") from None
    manifest = parse_json(data, path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"'{path}' is not an mnist-edge manifest: format {found!r:.80}, expected {FORMAT!r}")
    digest = manifest.get("digest")
    if not isinstance(digest, str) or digest != hashlib.sha256(_canonical(manifest)).hexdigest():
        raise ArtifactError(f"'{path}' was modified after export: its digest does not match its content")
    _check_schema(manifest, path, sealed=True)
    return manifest


def _number(v, *, none: bool = True) -> bool:
    """A finite JSON number (not a bool), or None where ``none``."""
    if v is None:
        return none
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _strings(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# Optional sections: if present, each must be an object whose listed fields (when present) pass their test.
_SECTIONS = {
    "contract": {"version": lambda v: isinstance(v, str), "input": lambda v: isinstance(v, dict),
                 "outputs": _strings, "labels": _strings},
    "evaluation": {"split": lambda v: isinstance(v, str), "images": lambda v: _int(v, 1, 10_000_000),
                   "batch_sizes": lambda v: isinstance(v, list) and 0 < len(v) <= 64
                   and all(_int(b, 1, 1_000_000) for b in v),
                   "threads": lambda v: _int(v, 1, 4096)},
    "versions": {},
    "settings": {"opset": lambda v: _int(v, 1, 1000), "quantize": lambda v: isinstance(v, bool),
                 "quantization": lambda v: v is None or isinstance(v, dict),
                 "thresholds": lambda v: isinstance(v, dict)},
    "pytorch": {"accuracy": _number},
}
_FILE_FIELDS = {
    "kind": lambda v: isinstance(v, str), "format": lambda v: isinstance(v, str),
    "precision": lambda v: isinstance(v, str), "reference": lambda v: v is None or isinstance(v, str),
    "accuracy": _number, "agreement": _number, "max_abs_diff": _number, "accuracy_drop_pp": _number,
    "test_accuracy": _number, "label_mismatches": lambda v: v is None or _int(v, 0, 10**9),
    "opset": lambda v: _int(v, 1, 1000), "ir_version": lambda v: _int(v, 1, 1000),
    "by_batch": lambda v: isinstance(v, dict), "quantization": lambda v: v is None or isinstance(v, dict),
}


def _check_schema(manifest: dict, path: Path, sealed: bool) -> None:
    """Every field a reader uses has the type it expects, so a resealed manifest with ``"evaluation": true``
    or ``batch_sizes: [-1]`` is refused here rather than met later as a TypeError or a wrong number."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"'{path}' lists no files")
    if not isinstance(manifest.get("model"), str) or not _SAFE_NAME.fullmatch(manifest["model"]):
        raise ArtifactError(f"'{path}' names no model (a plain name such as 'bn_cnn'), found "
                            f"{manifest.get('model')!r:.80}")
    if manifest.get("created") is not None and not isinstance(manifest["created"], str):
        raise ArtifactError(f"'{path}': 'created' must be a string, found {manifest['created']!r:.80}")
    for section, fields in _SECTIONS.items():
        value = manifest.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ArtifactError(f"'{path}': {section!r} must be a JSON object, found {value!r:.80}")
        for key, ok in fields.items():
            if key in value and not ok(value[key]):
                raise ArtifactError(f"'{path}': {section}.{key} has a bad value {value[key]!r:.80}")
    checks = manifest.get("checks")
    if checks is not None and not (isinstance(checks, list) and all(isinstance(c, dict) for c in checks)):
        raise ArtifactError(f"'{path}': 'checks' must be a list of objects")
    for name, entry in files.items():
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name == MANIFEST_NAME:
            raise ArtifactError(f"'{path}' lists file {name!r:.80}: only plain file names inside the folder are "
                                "allowed")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not _HEX64.fullmatch(entry["sha256"]) or not _int(entry.get("size"), 0, 1 << 50):
            raise ArtifactError(f"'{path}': entry for {name!r} needs a 64-hex 'sha256' and an integer 'size'")
        for key, ok in _FILE_FIELDS.items():
            if key in entry and not ok(entry[key]):
                raise ArtifactError(f"'{path}': files.{name}.{key} has a bad value {entry[key]!r:.80}")


class FolderChangedError(ArtifactError):
    """The folder was replaced while it was being read (an export swapped a new one in between the manifest
    and a file): not tampering; reading it again gives one consistent version."""


def changed_since(folder: str | os.PathLike, manifest: dict) -> bool:
    """Whether ``folder``'s manifest on disk is no longer ``manifest`` (gone, or another version's)."""
    try:
        return read_manifest(folder).get("digest") != manifest.get("digest")
    except ArtifactError:
        return True


def changed_error(folder: str | os.PathLike, detail: str) -> FolderChangedError:
    return FolderChangedError(f"'{folder}' changed while reading (another export replaced it: {detail}); "
                              "read it again once that export has finished")


def verify_files(folder: str | os.PathLike, names=None, manifest: dict | None = None) -> dict:
    """Check size and SHA-256 of every listed file (or just ``names``) before anything parses them.

    Returns the manifest. Every problem is collected into one :class:`ArtifactError`; when ``manifest``
    was read earlier and the one on disk is now another, a :class:`FolderChangedError` instead (a swap
    between the two reads, not a damaged file).
    """
    folder = Path(folder)
    given = manifest is not None
    manifest = manifest if given else read_manifest(folder)
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
        try:
            size = path.stat().st_size
            if size != files[name]["size"]:
                problems.append(f"{name}: size {size:,} bytes, manifest says {files[name]['size']:,}")
                continue
            digest = sha256_file(path)
        except OSError as e:
            problems.append(f"{name}: cannot read it ({describe_os_error(e)})")
            continue
        if digest != files[name]["sha256"]:
            problems.append(f"{name}: SHA-256 {digest[:12]}… differs from the manifest's {files[name]['sha256'][:12]}…")
    if problems:
        if given and changed_since(folder, manifest):
            raise changed_error(folder, "; ".join(problems))
        raise ArtifactError(f"'{folder}' fails its hash check: " + "; ".join(problems))
    return manifest


def verified_path(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` after its hash matched the manifest (what a loader should open)."""
    verify_files(folder, [name])
    return Path(folder) / name


# --- the typed view: what readers use -------------------------------------------------------------------
# read_manifest (above) checks the bytes (size cap, strict JSON, digest, schema); Manifest.from_json turns
# the checked object into attributes, so a consumer reads ``m.files["model.onnx"].sha256``, not string keys.

_HEX = F.Check(lambda v: isinstance(v, str) and bool(_HEX64.fullmatch(v)), "64 lowercase hex digits")
_OPT_TEXT, _OPT_NUM, _OPT_COUNT = F.optional(F.TEXT), F.optional(F.FINITE), F.optional(F.count(0))


@dataclass(frozen=True)
class FileEntry:
    """One file of the folder: its hash and size, and for model files what the gates measured."""

    sha256: str = F.spec(_HEX, required=True)
    size: int = F.spec(F.count(0), required=True)
    kind: str | None = F.spec(_OPT_TEXT, omit_none=True)
    format: str | None = F.spec(_OPT_TEXT, omit_none=True)
    precision: str | None = F.spec(_OPT_TEXT, omit_none=True)
    accuracy: float | None = F.spec(_OPT_NUM, omit_none=True)
    test_accuracy: float | None = F.spec(_OPT_NUM, omit_none=True)
    extra: dict = F.extra_field()  # reference, agreement, by_batch, quantization, tolerances, ...


@dataclass(frozen=True)
class Evaluation:
    split: str = F.spec(F.TEXT, default="test")
    images: int = F.spec(F.count(1), required=True)
    batch_sizes: list = F.spec(F.list_of(F.count(1)), required=True)
    threads: int | None = F.spec(F.optional(F.count(1)), omit_none=True)
    extra: dict = F.extra_field()


@dataclass(frozen=True)
class Manifest:
    """A sealed manifest, typed. ``files``: name -> :class:`FileEntry`; the other sections stay records."""

    model: str = F.spec(F.TEXT, required=True)
    created: str | None = F.spec(_OPT_TEXT)
    files: dict = F.spec(F.Check(lambda v: isinstance(v, dict), "an object of file entries"), required=True)
    evaluation: Evaluation | None = F.spec(Evaluation, omit_none=True)
    recommended: str | None = F.spec(_OPT_TEXT, omit_none=True)
    extra: dict = F.extra_field()  # format, digest, contract, versions, settings, pytorch, checks, ...

    @classmethod
    def from_json(cls, obj: dict, source) -> "Manifest":
        where = F.Where(source)
        doc = F.parse(cls, obj, where)
        files = {name: F.parse(FileEntry, entry, where.at("files").at(name)) for name, entry in doc.files.items()}
        return cls(doc.model, doc.created, files, doc.evaluation, doc.recommended, doc.extra)

    def to_json(self) -> dict:
        out = F.dump(self)
        out["files"] = {name: F.dump(e) for name, e in self.files.items()}
        return out

    def section(self, name: str) -> dict:
        """One of the record sections (contract, versions, settings, pytorch, temperature, int8_recipe), or {}."""
        value = self.extra.get(name)
        return value if isinstance(value, dict) else {}


def load_manifest(folder: str | os.PathLike) -> Manifest:
    """The typed manifest of ``folder`` (every check of :func:`read_manifest` first)."""
    path = Path(folder) / MANIFEST_NAME
    return Manifest.from_json(read_manifest(folder), path)
