"""Check model bytes against the artifact manifest beside them (mnist_edge.manifest), before any parsing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mnist_edge import manifest as mf
from mnist_edge.artifacts import ONNX_FILES
from mnist_edge.errors import ArtifactError
from mnist_edge.files import FileTooLargeError, describe_os_error, read_regular

MAX_MODEL_BYTES = 128 * 1024 * 1024  # our models are well under 10 MB; refuse to read anything huge


def pick_file(folder: Path, precision: str | None) -> tuple[Path, dict]:
    """The model file of artifact ``folder`` and its manifest (read and validated, required).

    ``precision`` "int8" or "fp32" names the file; None takes int8 when the manifest lists it, else fp32.
    The manifest decides, not what happens to be on disk: a listed file that is missing is an error.
    """
    manifest = mf.read_manifest(folder)
    files = manifest["files"]
    if precision is None:
        precision = "int8" if ONNX_FILES["int8"] in files else "fp32"
    name = ONNX_FILES[precision]
    if name not in files:
        onnx_files = [n for n in files if n.endswith(".onnx")]
        raise ArtifactError(f"artifact folder {folder} has no {precision} model: its manifest lists "
                            f"{', '.join(onnx_files) or 'no ONNX files'}")
    return folder / name, manifest


def read_verified(file: Path, manifest: dict | None) -> tuple[bytes, str, dict | None]:
    """(bytes of ``file``, their SHA-256, the manifest that vouched for them or None); ArtifactError on
    any mismatch.

    ``manifest`` given (a folder load): ``file`` must be listed and match. None (a file load): the
    manifest beside the file, if there is one, is read (a broken one is an error) and checked when it
    lists this file; a file with no manifest loads unverified (``Classifier.verified`` is False).
    The manifest's check runs before we read (it names missing or resized files); then the bytes we
    will parse are hashed and compared too, so a file replaced in between cannot slip through.
    """
    folder = file.parent
    if manifest is None and (folder / mf.MANIFEST_NAME).exists():
        manifest = mf.read_manifest(folder)
        if file.name not in manifest["files"]:
            manifest = None
    if manifest is not None:
        mf.verify_files(folder, [file.name], manifest=manifest)
    data = _read_bytes(file)
    digest = hashlib.sha256(data).hexdigest()
    if manifest is not None and digest != manifest["files"][file.name]["sha256"]:
        raise ArtifactError(f"'{folder}' fails its hash check: {file.name} changed while it was being read "
                            f"(SHA-256 {digest[:12]}… now)")
    return data, digest, manifest


def _read_bytes(path: Path) -> bytes:
    """At most MAX_MODEL_BYTES of a regular file (a FIFO or /dev/zero is refused, never read)."""
    try:
        return read_regular(path, MAX_MODEL_BYTES)
    except FileTooLargeError:
        raise ArtifactError(f"model {path} is over the {MAX_MODEL_BYTES:,}-byte limit for our models") from None
    except OSError as e:
        raise ArtifactError(f"cannot read model {path}: {describe_os_error(e)}") from None
