"""Check model bytes against the artifact manifest beside them (mnist_edge.manifest), before any parsing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mnist_edge import manifest as mf
from mnist_edge.artifacts import ONNX_FILES, RUNTIME_FILES
from mnist_edge.errors import ArtifactError
from mnist_edge.files import FileTooLargeError, describe_os_error, read_regular

MAX_MODEL_BYTES = 128 * 1024 * 1024  # our models are well under 10 MB; refuse to read anything huge


def pick_file(folder: Path, precision: str | None, by_precision: dict = ONNX_FILES) -> tuple[Path, dict]:
    """The model file of artifact ``folder`` and its manifest (read and validated, required).

    ``precision`` "int8" or "fp32" names the file of ``by_precision`` (a runtime's files, default ONNX); None
    takes int8 when the manifest lists it, else fp32. The manifest decides, not what happens to be on disk: a
    listed file that is missing is an error.
    """
    manifest = mf.read_manifest(folder)
    files = manifest["files"]
    if precision is None:
        precision = "int8" if by_precision["int8"] in files else "fp32"
    name = by_precision[precision]
    if name not in files:
        listed = [n for n in files if n in RUNTIME_FILES]
        raise ArtifactError(f"artifact folder {folder} has no {name}: its manifest lists "
                            f"{', '.join(listed) or 'no model files'}")
    return folder / name, manifest


def read_verified(file: Path, manifest: dict | None) -> tuple[bytes, str, dict | None]:
    """(bytes of ``file``, their SHA-256, the manifest that vouched for them or None); ArtifactError on
    any mismatch.

    ``manifest`` given (a folder load): ``file`` must be listed and match. None (a file load): the
    manifest beside the file, if there is one, is read (a broken one is an error) and checked when it
    lists this file; a file with no manifest loads unverified (``Classifier.verified`` is False).
    The manifest's check runs before we read (it names missing or resized files); then the bytes we
    will parse are hashed and compared too, so a file replaced in between cannot slip through.

    A folder that an export swapped between our reading its manifest and its model is read once more,
    against the manifest now there; swapped again meanwhile, it is a :class:`~mnist_edge.manifest.
    FolderChangedError` ("changed while reading"), not a failed hash check.
    """
    try:
        return _read_verified(file, manifest)
    except mf.FolderChangedError:
        pass
    try:
        fresh = None if manifest is None else mf.read_manifest(file.parent)
        if fresh is not None and file.name not in fresh["files"]:
            raise mf.changed_error(file.parent, f"its new manifest does not list {file.name}")
        return _read_verified(file, fresh)
    except mf.FolderChangedError:
        raise mf.changed_error(file.parent, "again while it was read a second time") from None


def _read_verified(file: Path, manifest: dict | None) -> tuple[bytes, str, dict | None]:
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
        if mf.changed_since(folder, manifest):
            raise mf.changed_error(folder, f"{file.name} is another version's")
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
